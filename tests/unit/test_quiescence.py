"""CountingBus: a driver waits until every subscriber has handled what was published."""

from __future__ import annotations

import threading

import pytest

from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.app.quiescence import CountingBus
from prometheus_trader.ports import BusMessage

pytestmark = pytest.mark.unit


def test_backlog_until_every_subscription_handled_every_key() -> None:
    inner = InMemoryBus(max_delivery_attempts=3)
    bus = CountingBus(inner)
    seen: list[str] = []
    failures = {"n": 0}

    def flaky(message: BusMessage) -> None:
        if message.dedupe_key == "b" and failures["n"] < 1:
            failures["n"] += 1
            raise RuntimeError("transient")
        seen.append(message.dedupe_key)

    bus.subscribe("t", "s1", flaky)
    bus.subscribe("t", "s2", lambda m: None)
    bus.publish("t", {"x": 1}, dedupe_key="a")
    bus.publish("t", {"x": 2}, dedupe_key="b")
    assert bus.backlog() == {"s1": 2, "s2": 2}
    with pytest.raises(TimeoutError, match="s1"):
        bus.wait_idle(timeout=0.05)
    inner.drain()
    bus.wait_idle(timeout=1)
    assert bus.backlog() == {}
    assert sorted(seen) == ["a", "b"] and failures["n"] == 1


def test_a_duplicate_success_does_not_hide_a_pending_message() -> None:
    bus = CountingBus(InMemoryBus())
    bus.track("t", "s")
    bus.publish("t", {}, dedupe_key="a")
    bus.publish("t", {}, dedupe_key="b")
    bus.mark_handled("s", "a")
    bus.mark_handled("s", "a")  # at-least-once: delivered twice
    assert bus.backlog() == {"s": 1}


def test_wait_idle_wakes_when_another_thread_finishes() -> None:
    bus = CountingBus(InMemoryBus())
    bus.track("t", "s")
    bus.publish("t", {}, dedupe_key="k")
    worker = threading.Timer(0.05, bus.mark_handled, args=("s", "k"))
    worker.start()
    bus.wait_idle(timeout=5)
    worker.join()
    assert bus.backlog() == {}
