"""PubSubBus topology on the emulator: what ``ensure_*`` provisions, push re-pointing,
and the checks that fail before any network call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus
from prometheus_trader.app.emulators import EmulatorStack

pytestmark = pytest.mark.integration


def make_bus(project: str, prefix: str) -> PubSubBus:
    return PubSubBus(
        project,
        topic_prefix=prefix,
        max_delivery_attempts=7,
        ack_deadline_s=42,
        min_backoff_s=1.5,
        max_backoff_s=30.0,
    )


@pytest.fixture
def prefix() -> str:
    return f"tp{uuid.uuid4().hex[:12]}-"


@pytest.fixture
def bus(emulators: EmulatorStack, prefix: str) -> Iterator[PubSubBus]:
    with make_bus(emulators.project, prefix) as bus:
        yield bus


def test_ensure_topology_provisions_dead_letters_and_is_idempotent(
    bus: PubSubBus, emulators: EmulatorStack, prefix: str
) -> None:
    bus.ensure_topology(["signals", "executions"], [("signals", "dispatcher")])
    project = emulators.project
    topics = {t.name for t in bus.publisher.list_topics(project=f"projects/{project}")}
    for name in ("signals", "executions", "signals-dead-letter"):
        assert f"projects/{project}/topics/{prefix}{name}" in topics

    sub = bus.subscriber.get_subscription(
        subscription=bus.subscription_path("signals", "dispatcher")
    )
    assert sub.name.endswith(f"/{prefix}signals.dispatcher")
    assert sub.topic == bus.topic_path("signals")
    assert sub.enable_message_ordering
    assert sub.ack_deadline_seconds == 42
    assert sub.dead_letter_policy.dead_letter_topic == bus.topic_path("signals-dead-letter")
    assert sub.dead_letter_policy.max_delivery_attempts == 7
    assert sub.retry_policy.minimum_backoff == timedelta(seconds=1.5)
    assert sub.retry_policy.maximum_backoff == timedelta(seconds=30)

    keep = bus.subscriber.get_subscription(subscription=bus.dead_letter_keep_path("signals"))
    assert keep.name.endswith(f"/{prefix}signals-dead-letter-keep")
    assert keep.topic == bus.topic_path("signals-dead-letter")

    # A second process provisioning the same topology finds everything in place.
    with make_bus(emulators.project, prefix) as again:
        again.ensure_topology(["signals"], [("signals", "dispatcher")])


def test_push_subscription_is_created_and_re_pointed(bus: PubSubBus) -> None:
    first = "http://127.0.0.1:9/projects/p/topics/events"
    path = bus.ensure_subscription("events", "notifier", push_endpoint=first)
    assert bus.subscriber.get_subscription(subscription=path).push_config.push_endpoint == first
    second = "http://127.0.0.1:10/projects/p/topics/events"
    bus.ensure_subscription("events", "notifier", push_endpoint=second)
    assert bus.subscriber.get_subscription(subscription=path).push_config.push_endpoint == second


def test_subscription_on_another_topic_is_refused(bus: PubSubBus) -> None:
    other_topic = bus.ensure_topic("other")
    bus.subscriber.create_subscription(
        request={"name": bus.subscription_path("mine", "s"), "topic": other_topic}
    )
    with pytest.raises(ValueError, match="exists on"):
        bus.ensure_subscription("mine", "s")


def test_publish_creates_a_missing_topic_and_returns_distinct_ids(bus: PubSubBus) -> None:
    first = bus.publish("fresh", {"n": 1}, dedupe_key="k", ordering_key="u1")
    second = bus.publish("fresh", {"n": 1}, dedupe_key="k", ordering_key="u1")
    assert first and second and first != second
    assert bus.publisher.get_topic(topic=bus.topic_path("fresh")).name == bus.topic_path("fresh")


def test_bad_publishes_fail_before_reaching_pubsub(bus: PubSubBus) -> None:
    with pytest.raises(ValueError, match="reserved"):
        bus.publish("t", {}, dedupe_key="k", attributes={"timeout": "1"})
    with pytest.raises(ValueError):
        bus.publish("t", {"x": float("nan")}, dedupe_key="k")
    with pytest.raises(TypeError):
        bus.publish("t", {}, dedupe_key="k", attributes={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        bus.publish("t", {}, dedupe_key="")


@pytest.mark.parametrize(
    "options",
    [
        {"max_delivery_attempts": 3},
        {"max_delivery_attempts": 101},
        {"ack_deadline_s": 5},
        {"min_backoff_s": 20.0, "max_backoff_s": 10.0},
        {"dead_letter_suffix": ""},
    ],
)
def test_settings_outside_pubsub_limits_are_refused(options: dict[str, object]) -> None:
    # Checked before any client is built: no emulator needed.
    with pytest.raises(ValueError):
        PubSubBus("demo-prometheus", **options)  # type: ignore[arg-type]


def test_concurrent_first_publishes_on_one_ordering_key_all_succeed(bus: PubSubBus) -> None:
    """8 publishers, one ordering key, a topic nobody created yet: every first publish
    fails and pauses the key together; each must recover, none may surface an error."""
    import threading

    barrier = threading.Barrier(8)
    ids: list[str] = []
    errors: list[BaseException] = []

    def publish(n: int) -> None:
        barrier.wait()
        try:
            ids.append(bus.publish("racing", {"n": n}, dedupe_key=f"k{n}", ordering_key="user-1"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(set(ids)) == 8


def test_a_publish_cancelled_behind_a_failed_ordered_message_is_retried(
    bus: PubSubBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other face of a paused key: a message already batched behind the one that
    failed comes back as the client's "batch cancelled" RuntimeError (seen with 8 racing
    executors on a loaded machine); the key is resumed, so publishing again succeeds."""
    from google.cloud.pubsub_v1.publisher._batch.base import BatchCancellationReason

    real = bus._publish_once
    calls: list[str] = []

    def cancelled_once(path: str, payload: bytes, key: str, attributes: dict[str, str]) -> str:
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError(BatchCancellationReason.PRIOR_ORDERED_MESSAGE_FAILED.value)
        return real(path, payload, key, attributes)

    monkeypatch.setattr(bus, "_publish_once", cancelled_once)
    message_id = bus.publish("cancelled", {"n": 1}, dedupe_key="k1", ordering_key="user-1")
    assert message_id and len(calls) >= 2
    monkeypatch.setattr(bus, "_publish_once", lambda *a: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError, match="x"):  # any other RuntimeError still surfaces
        bus.publish("cancelled", {"n": 2}, dedupe_key="k2", ordering_key="user-1")
