"""Contract suite for the ``Bus`` port: at-least-once, ordering keys, dead letters.

Pub/Sub delivers on its own threads: its harness waits (with a deadline) until every
message published through the bus has been settled on every subscription that existed
when it was published: handled, or dead-lettered and then handled on each subscription
of the dead-letter topic.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from prometheus_trader.adapters.embedded.memory_bus import AnyHandler, InMemoryBus
from prometheus_trader.ports import Bus, BusMessage

pytestmark = pytest.mark.contract

# Pub/Sub accepts 5..100 delivery attempts (the emulator rejects fewer than 5).
MAX_ATTEMPTS = 5
DEAD_LETTER_SUFFIX = "-dead-letter"
DELIVERY_DEADLINE_S = 60.0


@dataclass
class BusHarness:
    """A bus plus a way to wait until everything published has been handled."""

    bus: Bus
    deliver: Callable[[], object]
    close: Callable[[], object] = lambda: None


def _in_memory(request: pytest.FixtureRequest) -> BusHarness:
    bus = InMemoryBus(max_delivery_attempts=MAX_ATTEMPTS, dead_letter_suffix=DEAD_LETTER_SUFFIX)
    return BusHarness(bus, bus.drain)


def _pubsub(request: pytest.FixtureRequest) -> BusHarness:
    from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus

    class SettlingPubSubBus(PubSubBus):
        """PubSubBus that records what it still owes its subscriptions."""

        def __init__(self, project: str, **options: Any) -> None:
            super().__init__(project, **options)
            self._settled = threading.Condition()
            self._topic_subs: dict[str, list[str]] = {}
            self._expected: set[tuple[str, str, str]] = set()  # (topic, subscription, key)
            self._done: set[tuple[str, str, str]] = set()

        def publish(
            self,
            topic: str,
            data: Mapping[str, Any],
            *,
            dedupe_key: str,
            ordering_key: str = "",
            attributes: Mapping[str, str] | None = None,
        ) -> str:
            with self._settled:
                subs = list(self._topic_subs.get(topic, []))
            message_id = super().publish(
                topic, data, dedupe_key=dedupe_key, ordering_key=ordering_key, attributes=attributes
            )
            with self._settled:
                self._expected.update((topic, sub, message_id) for sub in subs)
            return message_id

        def subscribe(self, topic: str, subscription: str, handler: AnyHandler) -> None:
            def settle(message: BusMessage) -> None:
                # A dead-lettered copy is owed per source message, not per its own id.
                source = message.attributes.get("dead_letter_source_message_id")
                key = (
                    f"dead:{message.attributes['dead_letter_source_subscription']}:{source}"
                    if source
                    else message.message_id
                )
                try:
                    handler(message)
                except Exception:
                    if message.delivery_attempt >= MAX_ATTEMPTS:
                        with self._settled:
                            dead_topic = topic + DEAD_LETTER_SUFFIX
                            dead_key = f"dead:{subscription}:{message.message_id}"
                            self._expected.update(
                                (dead_topic, sub, dead_key)
                                for sub in self._topic_subs.get(dead_topic, [])
                            )
                            self._done.add((topic, subscription, key))
                            self._settled.notify_all()
                    raise
                with self._settled:
                    self._done.add((topic, subscription, key))
                    self._settled.notify_all()

            super().subscribe(topic, subscription, settle)
            with self._settled:
                self._topic_subs.setdefault(topic, []).append(subscription)

        def wait_settled(self, timeout: float = DELIVERY_DEADLINE_S) -> None:
            deadline = time.monotonic() + timeout
            with self._settled:
                while not self._expected <= self._done:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        missing = sorted(self._expected - self._done)
                        raise AssertionError(f"not delivered within {timeout:.0f} s: {missing}")
                    self._settled.wait(left)

    emulators = request.getfixturevalue("emulators")
    bus = SettlingPubSubBus(
        emulators.project,
        topic_prefix=f"c{uuid.uuid4().hex[:12]}-",
        max_delivery_attempts=MAX_ATTEMPTS,
        dead_letter_suffix=DEAD_LETTER_SUFFIX,
        ack_deadline_s=10,
        min_backoff_s=0.1,
        max_backoff_s=1.0,
    )
    return BusHarness(bus, bus.wait_settled, bus.close)


FACTORIES: list[tuple[str, Callable[[pytest.FixtureRequest], BusHarness]]] = [
    ("in-memory", _in_memory),
    ("pubsub-emulator", _pubsub),
]


@pytest.fixture(params=[f for _, f in FACTORIES], ids=[i for i, _ in FACTORIES])
def harness(request: pytest.FixtureRequest) -> Iterator[BusHarness]:
    factory: Callable[[pytest.FixtureRequest], BusHarness] = request.param
    built = factory(request)
    try:
        yield built
    finally:
        built.close()


class Recorder:
    """A handler that records deliveries and fails chosen (dedupe_key, attempt) pairs."""

    def __init__(self, fail: Callable[[BusMessage], bool] = lambda m: False) -> None:
        self.received: list[BusMessage] = []
        self.fail = fail

    def __call__(self, message: BusMessage) -> None:
        self.received.append(message)
        if self.fail(message):
            raise RuntimeError(f"handler failed on {message.dedupe_key}")

    def succeeded(self) -> list[str]:
        return [m.dedupe_key for m in self.received if not self.fail(m)]


def test_implements_port(harness: BusHarness) -> None:
    assert isinstance(harness.bus, Bus)


def test_delivers_data_attributes_and_dedupe_key(harness: BusHarness) -> None:
    rec = Recorder()
    harness.bus.subscribe("signals", "dispatcher", rec)
    message_id = harness.bus.publish(
        "signals",
        {"symbol": "BTC/USDT", "score": 0.75, "tags": ["a"]},
        dedupe_key="sig-1",
        ordering_key="u1",
        attributes={"kind": "signal"},
    )
    harness.deliver()
    assert len(rec.received) == 1
    msg = rec.received[0]
    assert isinstance(message_id, str) and message_id
    assert msg.message_id == message_id
    assert msg.topic == "signals"
    assert msg.data == {"symbol": "BTC/USDT", "score": 0.75, "tags": ["a"]}
    assert msg.dedupe_key == "sig-1"
    assert msg.attributes["dedupe_key"] == "sig-1"
    assert msg.attributes["kind"] == "signal"
    assert msg.ordering_key == "u1"
    assert msg.delivery_attempt == 1


def test_only_messages_published_after_subscribing(harness: BusHarness) -> None:
    harness.bus.publish("t", {"n": 0}, dedupe_key="early")
    rec = Recorder()
    harness.bus.subscribe("t", "s", rec)
    harness.bus.publish("t", {"n": 1}, dedupe_key="late")
    harness.deliver()
    assert [m.dedupe_key for m in rec.received] == ["late"]


def test_each_subscription_gets_its_own_copy(harness: BusHarness) -> None:
    def mutate(message: BusMessage) -> None:
        message.data["n"] = -1

    first, second = Recorder(), Recorder()
    harness.bus.subscribe("t", "mutator", mutate)
    harness.bus.subscribe("t", "first", first)
    harness.bus.subscribe("t", "second", second)
    harness.bus.subscribe("other", "third", third := Recorder())
    harness.bus.publish("t", {"n": 1}, dedupe_key="k1")
    harness.deliver()
    assert [m.data for m in first.received] == [{"n": 1}]
    assert [m.data for m in second.received] == [{"n": 1}]
    assert third.received == []


def test_redelivers_after_handler_raises(harness: BusHarness) -> None:
    rec = Recorder(fail=lambda m: m.delivery_attempt == 1)
    harness.bus.subscribe("t", "s", rec)
    harness.bus.publish("t", {"n": 1}, dedupe_key="k1")
    harness.deliver()
    assert [m.delivery_attempt for m in rec.received] == [1, 2]
    assert {m.message_id for m in rec.received} == {rec.received[0].message_id}
    assert [m.data for m in rec.received] == [{"n": 1}, {"n": 1}]
    assert [m.dedupe_key for m in rec.received] == ["k1", "k1"]


def test_failure_on_one_subscription_does_not_redeliver_to_another(harness: BusHarness) -> None:
    flaky = Recorder(fail=lambda m: m.delivery_attempt == 1)
    steady = Recorder()
    harness.bus.subscribe("t", "flaky", flaky)
    harness.bus.subscribe("t", "steady", steady)
    harness.bus.publish("t", {"n": 1}, dedupe_key="k1")
    harness.deliver()
    assert len(flaky.received) == 2
    assert len(steady.received) == 1


def test_dead_letter_after_max_attempts(harness: BusHarness) -> None:
    always = Recorder(fail=lambda m: True)
    dead = Recorder()
    harness.bus.subscribe("t", "s", always)
    harness.bus.subscribe("t" + DEAD_LETTER_SUFFIX, "dead", dead)
    harness.bus.publish("t", {"n": 1}, dedupe_key="k1", attributes={"kind": "x"})
    harness.deliver()
    assert [m.delivery_attempt for m in always.received] == list(range(1, MAX_ATTEMPTS + 1))
    assert len(dead.received) == 1
    assert dead.received[0].data == {"n": 1}
    assert dead.received[0].dedupe_key == "k1"
    assert dead.received[0].attributes["kind"] == "x"


def test_ordering_key_order_survives_a_failure(harness: BusHarness) -> None:
    # m1 fails twice, so m2 and m3 (same key) must wait; the other key is not blocked.
    rec = Recorder(fail=lambda m: m.dedupe_key == "a1" and m.delivery_attempt < 3)
    harness.bus.subscribe("t", "s", rec)
    for key, dedupe in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3"), ("b", "b2")]:
        harness.bus.publish("t", {"d": dedupe}, dedupe_key=dedupe, ordering_key=key)
    harness.deliver()
    done = rec.succeeded()
    assert [d for d in done if d.startswith("a")] == ["a1", "a2", "a3"]
    assert [d for d in done if d.startswith("b")] == ["b1", "b2"]
    # a2 was never delivered before a1 succeeded
    first_a1_success = next(i for i, m in enumerate(rec.received) if m.delivery_attempt == 3)
    first_a2 = next(i for i, m in enumerate(rec.received) if m.dedupe_key == "a2")
    assert first_a2 > first_a1_success


def test_ordering_key_continues_after_dead_letter(harness: BusHarness) -> None:
    rec = Recorder(fail=lambda m: m.dedupe_key == "a1")
    harness.bus.subscribe("t", "s", rec)
    harness.bus.publish("t", {}, dedupe_key="a1", ordering_key="a")
    harness.bus.publish("t", {}, dedupe_key="a2", ordering_key="a")
    harness.deliver()
    assert [m.dedupe_key for m in rec.received] == ["a1"] * MAX_ATTEMPTS + ["a2"]


def test_messages_published_by_handlers_are_delivered(harness: BusHarness) -> None:
    downstream = Recorder()

    def forward(message: BusMessage) -> None:
        harness.bus.publish(
            "out", {"from": message.dedupe_key}, dedupe_key="out-" + message.dedupe_key
        )

    harness.bus.subscribe("in", "fwd", forward)
    harness.bus.subscribe("out", "sink", downstream)
    harness.bus.publish("in", {}, dedupe_key="x")
    harness.deliver()
    assert [m.data for m in downstream.received] == [{"from": "x"}]
    assert downstream.received[0].dedupe_key == "out-x"


def test_publisher_retry_keeps_dedupe_key(harness: BusHarness) -> None:
    rec = Recorder()
    harness.bus.subscribe("t", "s", rec)
    first = harness.bus.publish("t", {"n": 1}, dedupe_key="same")
    second = harness.bus.publish("t", {"n": 1}, dedupe_key="same")
    harness.deliver()
    assert first != second
    assert [m.dedupe_key for m in rec.received] == ["same", "same"]
