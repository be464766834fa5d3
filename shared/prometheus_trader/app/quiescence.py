"""Waiting until asynchronous deliveries are done (the emulated stack's deterministic
replay needs every message of one step handled before the next step begins)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_trader.ports import Bus, BusMessage, Handler


class CountingBus:
    """A Bus decorator that records the dedupe keys published per topic and handled per
    subscription, so a driver can wait until every subscriber has caught up.

    Keys, not counts: at-least-once delivery may hand a message over twice, and a second
    success must not hide another message still pending. A message is handled when its
    handler returned (acked) or the driver marks it dead-lettered; a handler that raises
    is not (the message will come again).
    """

    def __init__(self, inner: Bus) -> None:
        self._inner = inner
        self._lock = threading.Condition()
        self._published: dict[str, set[str]] = {}
        self._handled: dict[str, set[str]] = {}
        self._subscriptions: dict[str, list[str]] = {}

    # ----------------------------------------------------------------- the port
    def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        dedupe_key: str,
        ordering_key: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Publish through the wrapped bus and count it."""
        with self._lock:
            self._published.setdefault(topic, set()).add(dedupe_key)
        return self._inner.publish(
            topic, data, dedupe_key=dedupe_key, ordering_key=ordering_key, attributes=attributes
        )

    def subscribe(self, topic: str, subscription: str, handler: Handler) -> None:
        """Subscribe through the wrapped bus with a counting handler."""
        self.track(topic, subscription)
        self._inner.subscribe(topic, subscription, self.counted(subscription, handler))

    # ---------------------------------------------------------------- tracking
    def track(self, topic: str, subscription: str) -> None:
        """Expect ``subscription`` to receive every message of ``topic``."""
        with self._lock:
            self._subscriptions.setdefault(topic, []).append(subscription)

    def counted(self, subscription: str, handler: Callable[[BusMessage], object]) -> Handler:
        """Wrap a handler so that each successful return counts as handled."""

        def run(message: BusMessage) -> None:
            handler(message)
            self.mark_handled(subscription, message.dedupe_key)

        return run

    def mark_handled(self, subscription: str, dedupe_key: str) -> None:
        """Record one message of ``subscription`` as done (acked or dead-lettered)."""
        with self._lock:
            self._handled.setdefault(subscription, set()).add(dedupe_key)
            self._lock.notify_all()

    def backlog(self) -> dict[str, int]:
        """Messages published but not yet handled, per subscription."""
        with self._lock:
            return self._lagging()

    def _lagging(self) -> dict[str, int]:
        return {
            sub: len(keys - self._handled.get(sub, set()))
            for topic, subs in self._subscriptions.items()
            for sub in subs
            if (keys := self._published.get(topic, set())) - self._handled.get(sub, set())
        }

    def wait_idle(self, timeout: float = 120.0, settle: float = 0.0) -> None:
        """Block until every tracked subscription has handled everything published.

        Raises TimeoutError naming the lagging subscriptions.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                lagging = self._lagging()
                if not lagging:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"deliveries still pending: {lagging}")
                self._lock.wait(timeout=min(remaining, 0.5))
        if settle:
            time.sleep(settle)
