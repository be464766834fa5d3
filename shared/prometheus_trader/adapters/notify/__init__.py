"""Notification channels behind the one ``Notifier`` port: signed webhooks, SendGrid email,
Telegram, and the routing notifier that picks a user's channels (docs/notifications.md)."""
