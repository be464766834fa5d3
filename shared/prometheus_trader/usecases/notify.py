"""Notifier: turn events into user notifications (critical at once)."""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from prometheus_trader.domain.events import Event, EventType
from prometheus_trader.ports import BusMessage, Notification, Notifier, StateStore
from prometheus_trader.usecases.names import Collections


class NotifyCollections:
    """State-store collections of the notification channels (docs/notifications.md)."""

    PREFERENCES: Final = "notify_preferences"  # per user: endpoints and routes
    DEAD_LETTERS: Final = "notify_dead_letters"  # deliveries that failed every attempt
    RATE_LIMITS: Final = "notify_rate_limits"  # per-destination counters, shared
    DIGEST_QUEUE: Final = "notify_digest_queue"  # email waiting for the next digest
    TELEGRAM_LINKS: Final = "telegram_links"  # chat id → user id


@runtime_checkable
class DigestNotifier(Protocol):
    """A notifier that holds some notifications back for a periodic digest."""

    def flush_digests(self) -> int:
        """Send every queued digest; returns how many messages went out."""
        ...


class FlushDigests:
    """Scheduled (housekeeping): send the queued digests of a notifier that keeps them."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def run(self) -> int:
        """Digests sent (0 when the notifier keeps none)."""
        if isinstance(self._notifier, DigestNotifier):
            return self._notifier.flush_digests()
        return 0


USER_FACING = {
    EventType.SIGNAL_PUBLISHED,
    EventType.TRADE_EXECUTED,
    EventType.POSITION_CLOSED,
    EventType.RISK_BREACH,
    EventType.CIRCUIT_BREAKER,
    EventType.WATCHLIST_EXPIRING,
    EventType.SYSTEM_ERROR,
    EventType.DAILY_SUMMARY,
}


class NotifyEvent:
    """Sends a notification for each user-facing event, once.

    A delivery record is created before sending and marked sent after; a redelivered
    event whose record says ``sent`` is not sent again. A crash between send and mark
    may send twice: receivers dedupe on ``event_id``, which every notification carries.
    """

    def __init__(self, notifier: Notifier, state: StateStore) -> None:
        self._notifier = notifier
        self._state = state

    def handle(self, message: BusMessage) -> Notification | None:
        """Notify about one event (others are ignored)."""
        event = Event.model_validate(message.data)
        if event.type not in USER_FACING:
            return None
        notification = Notification(
            event_type=event.type.value,
            severity=event.severity.value,
            title=_title(event),
            body={
                "event_id": event.id,
                "created_at": event.created_at.isoformat(),
                **event.payload,
            },
            user_id=event.user_id,
        )
        record = self._state.get(Collections.NOTIFICATIONS, event.id)
        if record is not None and record.get("status") == "sent":
            return None
        if record is None:
            self._state.create(
                Collections.NOTIFICATIONS, event.id, {"event_id": event.id, "status": "sending"}
            )
        self._notifier.send(notification)
        self._state.update(Collections.NOTIFICATIONS, event.id, {"status": "sent"})
        return notification


def _title(event: Event) -> str:
    symbol = event.payload.get("symbol", "")
    return f"{event.type.value.replace('_', ' ')} {symbol}".strip()
