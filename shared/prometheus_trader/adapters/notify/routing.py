"""The routing notifier: each notification to the user's configured channels.

Preferences are ``notify_preferences/<user_id>`` documents (``_operator`` for notifications
without a user); a user without one falls back to the ``notify_webhook`` / ``notify_email``
fields of their user document. Every channel is tried: one failing channel dead-letters its
copy and does not stop the others.
"""

from __future__ import annotations

import logging

from prometheus_trader.adapters.notify.delivery import DeadLetters, notification_from_dict
from prometheus_trader.adapters.notify.sendgrid_email import SendGridNotifier
from prometheus_trader.adapters.notify.telegram import TelegramNotifier
from prometheus_trader.adapters.notify.webhook import (
    WebhookEndpoint,
    WebhookNotifier,
    webhook_secret_name,
)
from prometheus_trader.domain.notifications import OPERATOR, Channel, NotificationPreferences
from prometheus_trader.ports import Notification, Notifier, StateStore
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.notify import NotifyCollections

log = logging.getLogger(__name__)


def load_preferences(state: StateStore, user_id: str | None) -> NotificationPreferences | None:
    """A user's (or the operator's) preferences, from their document or the user fields."""
    key = user_id or OPERATOR
    doc = state.get(NotifyCollections.PREFERENCES, key)
    if doc is not None:
        return NotificationPreferences.model_validate(doc)
    if user_id is None:
        return None
    user = state.get(Collections.USERS, user_id)
    if user is None or not (user.get("notify_webhook") or user.get("notify_email")):
        return None
    return NotificationPreferences(
        user_id=user_id, webhook_url=user.get("notify_webhook"), email=user.get("notify_email")
    )


class RoutingNotifier:
    """``Notifier`` that routes by user, event type and severity to the channel adapters.

    ``always`` (e.g. the console/outbox notifier) also receives every notification: the
    operator's local record. A channel without an adapter is skipped (logged).
    """

    def __init__(
        self,
        state: StateStore,
        *,
        webhook: WebhookNotifier | None = None,
        email: SendGridNotifier | None = None,
        telegram: TelegramNotifier | None = None,
        always: Notifier | None = None,
    ) -> None:
        self._state = state
        self._webhook = webhook
        self._email = email
        self._telegram = telegram
        self._always = always

    def __repr__(self) -> str:
        return "RoutingNotifier()"

    def send(self, notification: Notification) -> None:
        """Deliver to every matching channel."""
        if self._always is not None:
            self._always.send(notification)
        prefs = load_preferences(self._state, notification.user_id)
        if prefs is None:
            return
        targets = prefs.destinations(notification.event_type, notification.severity)
        for channel, target in targets.items():
            if channel is Channel.WEBHOOK and self._webhook is not None:
                endpoint = WebhookEndpoint(str(target), webhook_secret_name(notification.user_id))
                self._webhook.send_to(endpoint, notification)
            elif channel is Channel.EMAIL and self._email is not None:
                self._email.send_to(str(target), notification)
            elif channel is Channel.TELEGRAM and self._telegram is not None:
                self._telegram.send_to(int(target), notification)
            else:
                log.warning(
                    "no %s adapter configured; notification not sent there",
                    channel.value,
                    extra=labels(stage="notify", channel=channel.value),
                )

    def replay_dead_letters(self, dead_letters: DeadLetters) -> tuple[int, int]:
        """Resend every dead letter to its recorded destination: (delivered, still failing).

        Each record is removed before its resend; a resend that fails again is recorded
        again by the channel (same id), so nothing is lost either way.
        """
        delivered = failing = 0
        for doc in dead_letters.list():
            notification = notification_from_dict(doc["notification"])
            dead_letters.remove(str(doc["id"]))
            channel, target = doc["channel"], str(doc["destination"])
            if channel == Channel.WEBHOOK.value and self._webhook is not None:
                secret = webhook_secret_name(notification.user_id)
                self._webhook.send_to(WebhookEndpoint(target, secret), notification)
            elif channel == Channel.EMAIL.value and self._email is not None:
                self._email.send_to(target, notification)
            elif channel == Channel.TELEGRAM.value and self._telegram is not None:
                self._telegram.send_to(int(target), notification)
            else:
                dead_letters.restore(doc)
            if dead_letters.exists(str(doc["id"])):
                failing += 1
            else:
                delivered += 1
        return delivered, failing

    def flush_digests(self) -> int:
        """Flush the email digests (the housekeeping schedule calls this)."""
        return self._email.flush_digests() if self._email is not None else 0
