"""What every HTTP channel shares: retries with backoff, a persisted dead letter and a
per-destination rate limit that holds across function instances.

Error text recorded anywhere is built from status codes and exception *type names* only:
an httpx error message carries the request URL, and a Telegram URL carries the bot token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from prometheus_trader.adapters.embedded.console_notifier import notification_to_dict
from prometheus_trader.ports import Clock, Notification, StateStore, StateTransaction
from prometheus_trader.usecases.names import labels
from prometheus_trader.usecases.notify import NotifyCollections

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one delivery is attempted."""

    max_attempts: int = 5
    backoff_seconds: float = 1.0  # 1, 2, 4, 8 … between attempts
    max_backoff_seconds: float = 60.0
    max_retry_after_seconds: float = 120.0  # a server's Retry-After is honoured up to this


class RetryableStatus(Exception):
    """The server answered 408/425/429/5xx: try again (after ``retry_after`` if given)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class TransientError(Exception):
    """A transport failure outside httpx (e.g. urllib under the sendgrid client)."""


class MissingCredential(Exception):
    """The channel's API key or token is not in the SecretStore: retrying cannot help."""


class PermanentStatus(Exception):
    """Any other non-2xx answer: retrying cannot help."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after_header(response: httpx.Response, now: datetime) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None if absent/invalid."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def check_status(response: httpx.Response, retry_after: float | None) -> None:
    """Raise RetryableStatus / PermanentStatus for a non-2xx response."""
    if 200 <= response.status_code < 300:
        return
    if response.status_code in RETRYABLE or response.status_code >= 500:
        raise RetryableStatus(response.status_code, retry_after)
    raise PermanentStatus(response.status_code)


def describe(exc: BaseException) -> str:
    """A loggable failure reason: status or exception type, never a message or a URL."""
    if isinstance(exc, RetryableStatus | PermanentStatus):
        return f"HTTP {exc.status}"
    if isinstance(exc, MissingCredential):
        return "missing credential"
    if isinstance(exc, TransientError):
        return str(exc)  # built by our adapters from an exception type name
    return type(exc).__name__


class DeliveryFailed(Exception):
    """Every attempt failed; ``attempts`` were made, ``reason`` is safe to record."""

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


def call_with_retries(
    attempt: Callable[[], None], policy: RetryPolicy, sleep: Sleep = time.sleep
) -> int:
    """Run ``attempt`` until it returns; retry transport errors and retryable statuses with
    exponential backoff (a server's Retry-After wins, capped). Returns the attempts made;
    raises DeliveryFailed after the last one or at once on a permanent status."""
    exponential = wait_exponential(
        multiplier=policy.backoff_seconds, max=policy.max_backoff_seconds
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
            return min(exc.retry_after, policy.max_retry_after_seconds)
        return float(exponential(state))

    retrying = Retrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=retry_if_exception_type((httpx.TransportError, RetryableStatus, TransientError)),
        sleep=sleep,
        reraise=True,
    )
    attempts = 0

    def counted() -> None:
        nonlocal attempts
        attempts += 1
        attempt()

    try:
        retrying(counted)
    except (
        httpx.HTTPError,
        RetryableStatus,
        PermanentStatus,
        TransientError,
        MissingCredential,
    ) as exc:
        raise DeliveryFailed(describe(exc), attempts) from None
    return attempts


def notification_from_dict(data: dict[str, Any]) -> Notification:
    """The inverse of ``notification_to_dict``."""
    return Notification(
        event_type=data["event_type"],
        severity=data["severity"],
        title=data["title"],
        body=data["body"],
        user_id=data["user_id"],
    )


def short_hash(*parts: str) -> str:
    """A stable 24-hex id for a destination or a delivery."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def delivery_id(notification: Notification) -> str:
    """The event id when the notification carries one, else a hash of its content."""
    event_id = notification.body.get("event_id")
    if isinstance(event_id, str) and event_id:
        return event_id
    canonical = json.dumps(notification_to_dict(notification), sort_keys=True, default=str)
    return short_hash(canonical)


class DeadLetters:
    """Failed deliveries, persisted in the StateStore (collection ``notify_dead_letters``).

    One document per (channel, destination, delivery): recording the same failure again
    overwrites it, so a redelivered event adds no duplicate. Nothing in a record is secret:
    the destination is a webhook URL or a chat id, the reason a status or an error type.
    """

    def __init__(self, state: StateStore, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def add(
        self,
        channel: str,
        destination: str,
        notification: Notification,
        *,
        attempts: int,
        reason: str,
    ) -> str:
        """Record one failed delivery; returns its document id."""
        doc_id = f"{channel}-{short_hash(destination)}-{short_hash(delivery_id(notification))}"
        self._state.set(
            NotifyCollections.DEAD_LETTERS,
            doc_id,
            {
                "id": doc_id,
                "channel": channel,
                "destination": destination,
                "delivery_id": delivery_id(notification),
                "user_id": notification.user_id,
                "notification": notification_to_dict(notification),
                "attempts": attempts,
                "reason": reason,
                "failed_at": self._clock.now().isoformat(),
            },
        )
        log.warning(
            "%s delivery dead-lettered after %d attempts: %s",
            channel,
            attempts,
            reason,
            extra=labels(stage="notify", channel=channel, user=notification.user_id),
        )
        return doc_id

    def remove(self, doc_id: str) -> None:
        """Delete one record (before a replay)."""
        self._state.delete(NotifyCollections.DEAD_LETTERS, doc_id)

    def restore(self, doc: dict[str, Any]) -> None:
        """Put a removed record back unchanged."""
        self._state.set(NotifyCollections.DEAD_LETTERS, str(doc["id"]), doc)

    def exists(self, doc_id: str) -> bool:
        """True if the record is there."""
        return self._state.get(NotifyCollections.DEAD_LETTERS, doc_id) is not None

    def list(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Every dead letter (of one channel), sorted by id."""
        docs = self._state.query(NotifyCollections.DEAD_LETTERS)
        return [d for d in docs if channel is None or d["channel"] == channel]


class RateLimiter:
    """At most ``per_minute`` deliveries per destination per clock minute.

    The counter is a StateStore document updated in a transaction, so every function
    instance shares it (an in-memory bucket would let N instances send N times the limit).
    A caller over the limit waits for the next window, at most ``max_wait_seconds``.
    """

    def __init__(
        self,
        state: StateStore,
        clock: Clock,
        per_minute: int,
        *,
        sleep: Sleep = time.sleep,
        max_wait_seconds: float = 60.0,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._state = state
        self._clock = clock
        self.per_minute = per_minute
        self._sleep = sleep
        self._max_wait = max_wait_seconds

    def acquire(self, key: str) -> bool:
        """Take one slot for ``key``; False if none frees up within ``max_wait_seconds``."""
        waited = 0.0
        doc_id = short_hash(key)
        while True:
            now_ms = self._clock.now_ms()
            window = now_ms // 60_000

            def take(tx: StateTransaction, window: int = window) -> bool:
                doc = tx.get(NotifyCollections.RATE_LIMITS, doc_id)
                if doc is None or doc.get("window") != window:
                    tx.set(NotifyCollections.RATE_LIMITS, doc_id, {"window": window, "count": 1})
                    return True
                if int(doc["count"]) < self.per_minute:
                    tx.update(NotifyCollections.RATE_LIMITS, doc_id, {"count": doc["count"] + 1})
                    return True
                return False

            if self._state.transaction(take):
                return True
            wait = ((window + 1) * 60_000 - now_ms) / 1000
            if waited + wait > self._max_wait:
                return False
            self._sleep(wait)
            waited += wait
