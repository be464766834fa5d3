"""Dead letters on the Pub/Sub emulator: a poison message ends up kept on the dead-letter
topic's ``-keep`` subscription, and good messages on the same subscription still flow."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus
from prometheus_trader.app.emulators import EmulatorStack
from prometheus_trader.ports import BusMessage

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 5
DEADLINE_S = 60.0


@pytest.fixture
def bus(emulators: EmulatorStack) -> Iterator[PubSubBus]:
    with PubSubBus(
        emulators.project,
        topic_prefix=f"dl{uuid.uuid4().hex[:12]}-",
        max_delivery_attempts=MAX_ATTEMPTS,
        ack_deadline_s=10,
        min_backoff_s=0.1,
        max_backoff_s=1.0,
    ) as bus:
        yield bus


def pull_kept(bus: PubSubBus, topic: str, count: int) -> list[Any]:
    """Pull (and ack) ``count`` messages from the topic's dead-letter keep subscription."""
    path = bus.dead_letter_keep_path(topic)
    kept: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(kept) < count and time.monotonic() < deadline:
        response = bus.subscriber.pull(
            request={"subscription": path, "max_messages": 10}, timeout=10
        )
        received = list(response.received_messages)
        if received:
            kept.extend(r.message for r in received)
            bus.subscriber.acknowledge(
                request={"subscription": path, "ack_ids": [r.ack_id for r in received]}
            )
    return kept


def test_poison_message_is_dead_lettered_and_kept_while_good_ones_flow(bus: PubSubBus) -> None:
    attempts: list[int] = []
    good: list[str] = []
    all_good = threading.Event()

    def handler(message: BusMessage) -> None:
        if message.dedupe_key == "poison":
            attempts.append(message.delivery_attempt)
            raise RuntimeError("cannot handle this one")
        good.append(message.dedupe_key)
        if len(good) == 2:
            all_good.set()

    bus.subscribe("orders", "worker", handler)
    bus.publish("orders", {"n": 0}, dedupe_key="poison", ordering_key="u1", attributes={"k": "v"})
    # same ordering key: it must wait for the poison message, then still be delivered
    bus.publish("orders", {"n": 1}, dedupe_key="good-keyed", ordering_key="u1")
    bus.publish("orders", {"n": 2}, dedupe_key="good-unkeyed")

    assert all_good.wait(DEADLINE_S), f"good messages not delivered: {good}"
    assert sorted(good) == ["good-keyed", "good-unkeyed"]
    assert attempts == list(range(1, MAX_ATTEMPTS + 1))

    kept = pull_kept(bus, "orders", 1)
    assert len(kept) == 1
    dead = kept[0]
    assert json.loads(dead.data) == {"n": 0}
    assert dead.ordering_key == "u1"
    attributes = dict(dead.attributes)
    assert attributes["dedupe_key"] == "poison"
    assert attributes["k"] == "v"
    assert attributes["dead_letter_source_topic"] == "orders"
    assert attributes["dead_letter_source_subscription"] == "worker"
    assert attributes["dead_letter_delivery_attempts"] == str(MAX_ATTEMPTS)


def test_server_dead_letter_policy_is_the_backstop(bus: PubSubBus) -> None:
    """A consumer that is not this adapter (it only nacks) still gets its poison message
    dead-lettered by Pub/Sub itself, into the same keep subscription.

    The emulator dead-letters only on subscriptions without message ordering, hence
    ``ordered=False`` here.
    """
    path = bus.ensure_subscription("jobs", "raw", ordered=False)
    seen: list[int] = []
    stream = bus.subscriber.subscribe(
        path, callback=lambda m: (seen.append(m.delivery_attempt), m.nack())
    )
    try:
        bus.publish("jobs", {"n": 7}, dedupe_key="raw-poison")
        kept = pull_kept(bus, "jobs", 1)
    finally:
        stream.cancel()
        stream.result(timeout=10)
    assert len(kept) == 1
    assert json.loads(kept[0].data) == {"n": 7}
    assert kept[0].attributes["dedupe_key"] == "raw-poison"
    assert kept[0].attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == str(MAX_ATTEMPTS)
    assert seen == list(range(1, MAX_ATTEMPTS + 1))
