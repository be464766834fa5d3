"""Embedded ``Bus``: in-process topics with Pub/Sub-like delivery, run by ``drain()``.

Delivery is synchronous and deterministic. Pending deliveries wait in one priority queue
ordered by publish sequence, so different ordering keys (and unkeyed messages) are
delivered in publish order. A redelivery goes to the back of the queue, like a Pub/Sub
redelivery after the ack deadline. Per subscription, only the oldest undelivered message
of an ordering key is eligible; later messages of that key wait until it succeeds or is
dead-lettered.

Message data crosses the bus as JSON text (as with Pub/Sub), so every delivery gets its
own fresh copy and non-JSON data fails at publish time.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_trader.ports import BusMessage, publish_attributes

log = logging.getLogger("prometheus_trader.bus")

# Wider than the port's ``Handler``: a handler's return value is ignored.
AnyHandler = Callable[[BusMessage], object]


@dataclass(frozen=True)
class DeadLetter:
    """A message that exhausted its delivery attempts on one subscription."""

    topic: str
    subscription: str
    message: BusMessage
    error: str


@dataclass(frozen=True)
class _Envelope:
    """One published message, stored once and decoded per delivery."""

    topic: str
    message_id: str
    payload: str
    attributes: dict[str, str]
    ordering_key: str

    def to_message(self, attempt: int) -> BusMessage:
        return BusMessage(
            topic=self.topic,
            message_id=self.message_id,
            data=json.loads(self.payload),
            attributes=dict(self.attributes),
            ordering_key=self.ordering_key,
            delivery_attempt=attempt,
        )


@dataclass
class _Subscription:
    index: int
    topic: str
    name: str
    handler: AnyHandler
    # per ordering key: messages waiting behind the one in flight, as (publish_seq, envelope)
    waiting: dict[str, deque[tuple[int, _Envelope]]] = field(default_factory=dict)


class InMemoryBus:
    """``Bus`` for one process: call ``drain()`` to deliver everything pending."""

    def __init__(
        self, max_delivery_attempts: int = 5, dead_letter_suffix: str = "-dead-letter"
    ) -> None:
        if max_delivery_attempts < 1:
            raise ValueError("max_delivery_attempts must be >= 1")
        self.max_delivery_attempts = max_delivery_attempts
        self.dead_letter_suffix = dead_letter_suffix
        self.dead_letters: list[DeadLetter] = []
        self._subscriptions: dict[tuple[str, str], _Subscription] = {}
        self._by_topic: dict[str, list[_Subscription]] = {}
        # heap of (order, subscription index, attempt, envelope); (order, index) is unique
        self._queue: list[tuple[int, int, int, _Envelope]] = []
        self._seq = 0
        self._message_count = 0
        self._lock = threading.RLock()
        self._draining = False

    def __repr__(self) -> str:
        return (
            f"InMemoryBus(subscriptions={len(self._subscriptions)}, pending={self.pending()}, "
            f"dead_letters={len(self.dead_letters)})"
        )

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # ------------------------------------------------------------------ the port
    def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        dedupe_key: str,
        ordering_key: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Publish to every current subscription of ``topic``; returns the message id."""
        attrs = publish_attributes(topic, dedupe_key, attributes)
        payload = json.dumps(dict(data), allow_nan=False)
        with self._lock:
            self._message_count += 1
            envelope = _Envelope(topic, str(self._message_count), payload, attrs, ordering_key)
            seq = self._next_seq()
            for sub in self._by_topic.get(topic, []):
                if ordering_key and ordering_key in sub.waiting:
                    sub.waiting[ordering_key].append((seq, envelope))
                    continue
                if ordering_key:
                    sub.waiting[ordering_key] = deque()
                heapq.heappush(self._queue, (seq, sub.index, 1, envelope))
            return envelope.message_id

    def subscribe(self, topic: str, subscription: str, handler: AnyHandler) -> None:
        """Attach ``handler``; the subscription receives messages published from now on.

        Subscribing again with the same names replaces the handler and keeps the backlog.
        """
        if not topic or not subscription:
            raise ValueError("topic and subscription must not be empty")
        with self._lock:
            existing = self._subscriptions.get((topic, subscription))
            if existing is not None:
                existing.handler = handler
                return
            sub = _Subscription(len(self._subscriptions), topic, subscription, handler)
            self._subscriptions[(topic, subscription)] = sub
            self._by_topic.setdefault(topic, []).append(sub)

    # ------------------------------------------------------------------ delivery
    def drain_all(self) -> None:
        """``drain`` without the count (a settle hook)."""
        self.drain()

    def pending(self) -> int:
        """Deliveries not yet done (queued, retrying or waiting behind an ordering key)."""
        with self._lock:
            waiting = sum(
                len(q) for sub in self._subscriptions.values() for q in sub.waiting.values()
            )
            return len(self._queue) + waiting

    def drain(self) -> int:
        """Deliver until nothing is pending (including messages published meanwhile).

        Returns the number of successful deliveries. A nested call from a handler returns 0
        at once; the outer call delivers everything.
        """
        with self._lock:
            if self._draining:
                return 0
            self._draining = True
        delivered = 0
        subs = list(self._subscriptions.values())
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        return delivered
                    _, index, attempt, envelope = heapq.heappop(self._queue)
                    if index >= len(subs):
                        subs = list(self._subscriptions.values())
                    sub = subs[index]
                    handler = sub.handler
                message = envelope.to_message(attempt)
                try:
                    handler(message)
                except Exception as exc:
                    self._failed(sub, envelope, message, exc)
                else:
                    delivered += 1
                    self._finished(sub, envelope)
        finally:
            with self._lock:
                self._draining = False

    def _finished(self, sub: _Subscription, envelope: _Envelope) -> None:
        """Release the next message of the same ordering key, at its publish position."""
        key = envelope.ordering_key
        if not key:
            return
        with self._lock:
            waiting = sub.waiting[key]
            if waiting:
                seq, successor = waiting.popleft()
                heapq.heappush(self._queue, (seq, sub.index, 1, successor))
            else:
                del sub.waiting[key]

    def _failed(
        self, sub: _Subscription, envelope: _Envelope, message: BusMessage, exc: Exception
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        attempt = message.delivery_attempt
        if attempt < self.max_delivery_attempts:
            log.warning(
                "redelivering message %s on %s/%s (attempt %d of %d failed): %s",
                envelope.message_id,
                sub.topic,
                sub.name,
                attempt,
                self.max_delivery_attempts,
                error,
            )
            with self._lock:
                heapq.heappush(self._queue, (self._next_seq(), sub.index, attempt + 1, envelope))
            return
        dead_topic = sub.topic + self.dead_letter_suffix
        log.error(
            "dead-lettering message %s on %s/%s to %s after %d attempts: %s",
            envelope.message_id,
            sub.topic,
            sub.name,
            dead_topic,
            attempt,
            error,
        )
        with self._lock:
            self.dead_letters.append(DeadLetter(sub.topic, sub.name, message, error))
        attributes = {
            **envelope.attributes,
            "dead_letter_source_topic": sub.topic,
            "dead_letter_source_subscription": sub.name,
            "dead_letter_delivery_attempts": str(attempt),
        }
        self.publish(
            dead_topic,
            json.loads(envelope.payload),
            dedupe_key=envelope.attributes["dedupe_key"],
            ordering_key=envelope.ordering_key,
            attributes=attributes,
        )
        self._finished(sub, envelope)
