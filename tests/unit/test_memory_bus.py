"""Embedded-bus specifics beyond the contract: determinism, drain(), logging."""

from __future__ import annotations

import logging

import pytest

from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.ports import BusMessage

pytestmark = pytest.mark.unit


def test_message_ids_are_sequential_and_deterministic() -> None:
    bus = InMemoryBus()
    assert [bus.publish("t", {}, dedupe_key=str(n)) for n in range(3)] == ["1", "2", "3"]


def test_drain_counts_successes_and_pending_tracks_backlog() -> None:
    bus = InMemoryBus(max_delivery_attempts=2)
    seen: list[int] = []

    def handler(message: BusMessage) -> None:
        seen.append(message.delivery_attempt)
        if message.dedupe_key == "bad":
            raise ValueError("nope")

    bus.subscribe("t", "s", handler)
    bus.publish("t", {}, dedupe_key="ok", ordering_key="k")
    bus.publish("t", {}, dedupe_key="blocked", ordering_key="k")
    bus.publish("t", {}, dedupe_key="bad")
    assert bus.pending() == 3
    assert bus.drain() == 2
    assert bus.pending() == 0
    assert bus.drain() == 0
    assert seen == [1, 1, 1, 2]


def test_dead_letters_are_recorded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    bus = InMemoryBus(max_delivery_attempts=2, dead_letter_suffix="-dlq")

    def handler(message: BusMessage) -> None:
        raise RuntimeError("exchange down")

    dlq: list[BusMessage] = []
    bus.subscribe("t", "s", handler)
    bus.subscribe("t-dlq", "d", dlq.append)
    bus.publish("t", {"n": 1}, dedupe_key="k")
    with caplog.at_level(logging.WARNING, logger="prometheus_trader.bus"):
        bus.drain()
    assert len(bus.dead_letters) == 1
    dead = bus.dead_letters[0]
    assert (dead.topic, dead.subscription, dead.message.delivery_attempt) == ("t", "s", 2)
    assert "exchange down" in dead.error
    assert [m.attributes["dead_letter_source_subscription"] for m in dlq] == ["s"]
    records = [r for r in caplog.records if r.name == "prometheus_trader.bus"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.ERROR]
    assert all("exchange down" in r.getMessage() for r in records)


def test_fifo_across_keys_after_unblocking() -> None:
    # a2 is published before b1, so it is delivered before b1 once a1 is done.
    bus = InMemoryBus()
    order: list[str] = []
    bus.subscribe("t", "s", lambda m: order.append(m.dedupe_key))
    bus.publish("t", {}, dedupe_key="a1", ordering_key="a")
    bus.publish("t", {}, dedupe_key="a2", ordering_key="a")
    bus.publish("t", {}, dedupe_key="b1", ordering_key="b")
    bus.publish("t", {}, dedupe_key="u1")
    bus.drain()
    assert order == ["a1", "a2", "b1", "u1"]


def test_nested_drain_is_a_no_op() -> None:
    bus = InMemoryBus()
    nested: list[int] = []
    bus.subscribe("t", "s", lambda m: nested.append(bus.drain()))
    bus.publish("t", {}, dedupe_key="x")
    assert bus.drain() == 1
    assert nested == [0]


def test_publish_rejects_non_json_data_and_non_string_attributes() -> None:
    bus = InMemoryBus()
    with pytest.raises(TypeError):
        bus.publish("t", {"x": object()}, dedupe_key="k")
    with pytest.raises(TypeError):
        bus.publish("t", {}, dedupe_key="k", attributes={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        bus.publish("t", {}, dedupe_key="")


def test_resubscribe_replaces_handler_and_keeps_backlog() -> None:
    bus = InMemoryBus()
    old: list[str] = []
    new: list[str] = []
    bus.subscribe("t", "s", lambda m: old.append(m.dedupe_key))
    bus.publish("t", {}, dedupe_key="x")
    bus.subscribe("t", "s", lambda m: new.append(m.dedupe_key))
    bus.drain()
    assert (old, new) == ([], ["x"])


def test_same_run_gives_same_delivery_sequence() -> None:
    def run() -> list[tuple[str, str, int]]:
        bus = InMemoryBus(max_delivery_attempts=3)
        log: list[tuple[str, str, int]] = []

        def handler(message: BusMessage) -> None:
            log.append((message.message_id, message.dedupe_key, message.delivery_attempt))
            if int(message.data["n"]) % 3 == 0 and message.delivery_attempt < 2:
                raise RuntimeError("retry")

        bus.subscribe("t", "a", handler)
        bus.subscribe("t", "b", handler)
        for n in range(9):
            bus.publish("t", {"n": n}, dedupe_key=f"m{n}", ordering_key=f"k{n % 2}")
        bus.drain()
        return log

    first = run()
    assert len(first) == 9 * 2 + 3 * 2
    assert first == run()
