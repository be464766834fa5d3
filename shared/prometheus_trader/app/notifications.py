"""Builds the routed notifier from settings (``notifier="routed"``; docs/notifications.md).

Credentials are SecretStore names in the settings and are read when first needed, so a
runtime that never sends an email never reads the SendGrid key.
"""

from __future__ import annotations

from prometheus_trader.adapters.notify.delivery import DeadLetters, RateLimiter, RetryPolicy
from prometheus_trader.adapters.notify.routing import RoutingNotifier
from prometheus_trader.adapters.notify.sendgrid_email import SendGridNotifier
from prometheus_trader.adapters.notify.telegram import TelegramNotifier
from prometheus_trader.adapters.notify.webhook import WebhookNotifier
from prometheus_trader.app.settings import Settings
from prometheus_trader.ports import BlobStore, Clock, Notifier, SecretStore, StateStore


def routed_notifier(
    settings: Settings,
    *,
    state: StateStore,
    secrets: SecretStore,
    clock: Clock,
    blobs: BlobStore | None,
    always: Notifier | None,
) -> RoutingNotifier:
    """Webhook, SendGrid and Telegram behind the router; ``always`` also gets everything."""
    dead = DeadLetters(state, clock)
    policy = RetryPolicy(max_attempts=settings.webhook_max_attempts)
    limiter = RateLimiter(state, clock, settings.webhook_rate_per_minute)
    return RoutingNotifier(
        state,
        # the router passes each endpoint; these adapters have no fixed destination
        webhook=WebhookNotifier(
            lambda _n: None,
            secrets=secrets,
            dead_letters=dead,
            clock=clock,
            limiter=limiter,
            policy=policy,
            allow_private_hosts=settings.webhook_allow_private_hosts,
        ),
        email=SendGridNotifier(
            api_key=lambda: secrets.get_secret(settings.sendgrid_api_key_secret),
            recipient=lambda _n: None,
            from_email=settings.notify_from_email,
            state=state,
            clock=clock,
            dead_letters=dead,
            host=settings.sendgrid_host,
            blobs=blobs,
            policy=policy,
        ),
        telegram=TelegramNotifier(
            token=lambda: secrets.get_secret(settings.telegram_bot_token_secret),
            chat=lambda _n: None,
            dead_letters=dead,
            clock=clock,
            api_base=settings.telegram_api_base,
            limiter=limiter,
            policy=policy,
        ),
        always=always,
    )
