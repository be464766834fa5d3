"""Pub/Sub ``Bus``: publish, streaming-pull subscribe, topology with dead letters.

Names: topic ``T`` is the Pub/Sub topic ``<prefix>T``; subscription ``S`` of ``T`` is
``<prefix>T.S`` (``envelopes.subscription_id``), so a push body names its topic. Every
subscription gets message ordering, an ack deadline, a retry policy and a dead-letter
policy to ``<prefix>T<suffix>``, which in turn gets ``<prefix>T<suffix>-keep`` so dead
letters are kept (a topic without subscriptions drops what it receives).

Two things are done in the client because Pub/Sub (or its emulator) does not do them:

- Ordering. When a message is nacked, the client library hands the next message of the
  same ordering key to the callback at once. This adapter holds later messages of a key
  (lease extended, not acked) until the failed one succeeds or is dead-lettered, so a
  handler never sees a key out of order.
- Dead letters. On the final attempt a failing message is published to the dead-letter
  topic by this adapter and then acked: the emulator never dead-letters on a subscription
  with message ordering. The server's dead-letter policy stays as the backstop (a
  crashed consumer, an expired lease).

Dead-lettered copies carry the original attributes plus ``dead_letter_source_topic``,
``dead_letter_source_subscription``, ``dead_letter_source_message_id`` and
``dead_letter_delivery_attempts`` (the server's backstop adds ``CloudPubSubDeadLetter*``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc

# google.cloud.pubsub_v1 ships no type information (google.pubsub_v1 does).
from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]
from google.cloud.pubsub_v1.publisher._batch.base import (  # type: ignore[import-untyped, unused-ignore]
    BatchCancellationReason,
)
from google.cloud.pubsub_v1.publisher.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    PublishToPausedOrderingKeyException,
)
from google.cloud.pubsub_v1.subscriber.message import (  # type: ignore[import-untyped, unused-ignore]
    Message,
)

from prometheus_trader.adapters import ClosesOnExit
from prometheus_trader.adapters.gcp.envelopes import subscription_id
from prometheus_trader.ports import BusMessage, publish_attributes

log = logging.getLogger("prometheus_trader.bus")

AnyHandler = Callable[[BusMessage], object]

KEEP_SUFFIX = "-keep"
PUBLISH_TIMEOUT_S = 60.0
# A held message is ours until the failed message before it is settled; if we crash,
# Pub/Sub redelivers it after this long.
HOLD_DEADLINE_S = 300
# If the failed message's redelivery has not come back by then (another consumer took it),
# stop waiting: hand the held messages back to Pub/Sub before their leases run out.
BLOCK_LIMIT_S = HOLD_DEADLINE_S - 30
# Keyword names of PublisherClient.publish that an attribute must not shadow.
_PRIOR_ORDERED_FAILED = str(BatchCancellationReason.PRIOR_ORDERED_MESSAGE_FAILED.value)
_RESERVED_ATTRIBUTES = frozenset({"topic", "data", "ordering_key", "retry", "timeout"})


class _QuietAfterHolding(logging.Filter):
    """Drop the client library's warnings about ordering keys we released ourselves.

    Acking a held message (already dropped from the client's lease management) makes the
    library look for that key's queue, which it may have cleaned up: harmless noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            message.startswith("No message queue exists for message ordering key")
            or message.startswith("Tried to clean up ordering key")
        )


logging.getLogger("google.cloud.pubsub_v1.subscriber._protocol.messages_on_hold").addFilter(
    _QuietAfterHolding()
)


@dataclass
class _KeyState:
    """Delivery state of one ordering key on one subscription."""

    busy: bool = False  # a message of the key is in the handler
    blocker: str | None = None  # failed message id, awaiting its redelivery
    held: list[Message] = field(default_factory=list)  # later messages, arrival order
    timer: threading.Timer | None = None  # gives up on the blocker after BLOCK_LIMIT_S

    def idle(self) -> bool:
        return not self.busy and self.blocker is None and not self.held


class _Consumer:
    """One streaming pull: decodes, runs the handler, acks, nacks or dead-letters."""

    def __init__(self, bus: PubSubBus, topic: str, subscription: str, handler: AnyHandler):
        self.bus = bus
        self.topic = topic
        self.subscription = subscription
        self.handler = handler
        self.future: pubsub_v1.subscriber.futures.StreamingPullFuture | None = None
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}

    # The client library calls this on its own threads.
    def on_message(self, message: Message) -> None:
        try:
            self._on_message(message)
        except Exception:  # a bug here must not kill the stream; redeliver instead
            log.exception("bus consumer %s failed on message %s", self.name, message.message_id)
            message.nack()

    @property
    def name(self) -> str:
        return f"{self.topic}/{self.subscription}"

    def _on_message(self, message: Message) -> None:
        key = message.ordering_key
        if not key:
            if self._deliver(message):
                message.nack()
            return
        with self._lock:
            state = self._keys.setdefault(key, _KeyState())
            if state.busy or state.blocker not in (None, message.message_id):
                self._hold(state, message)
                return
            state.busy, state.blocker = True, None
            _cancel(state)
        current = message
        while True:
            retry = self._deliver(current)
            with self._lock:
                if retry:
                    # Record the blocker before nacking: its redelivery may come at once.
                    state.busy, state.blocker = False, current.message_id
                    state.timer = threading.Timer(
                        self.bus.block_limit_s, self._give_up, (key, current.message_id)
                    )
                    state.timer.daemon = True
                    state.timer.start()
                    current.nack()
                    return
                if not state.held:
                    state.busy = False
                    if state.idle():
                        del self._keys[key]
                    return
                current = state.held.pop(0)

    def _give_up(self, key: str, blocker: str) -> None:
        with self._lock:
            state = self._keys.get(key)
            if state is None or state.blocker != blocker:
                return
            held, state.held, state.blocker, state.timer = state.held, [], None, None
            if state.idle():
                del self._keys[key]
        log.warning(
            "message %s on %s did not come back within %.0f s: releasing %d held message(s)",
            blocker,
            self.name,
            self.bus.block_limit_s,
            len(held),
        )
        for message in held:
            message.nack()

    def _hold(self, state: _KeyState, message: Message) -> None:
        for i, held in enumerate(state.held):
            if held.message_id == message.message_id:
                state.held[i] = message  # a redelivery: keep its place, use the new ack id
                break
        else:
            state.held.append(message)
        message.modify_ack_deadline(HOLD_DEADLINE_S)
        # Out of the library's lease management, so it passes on the key's next message
        # (possibly the failed one's redelivery, which we are waiting for).
        message.drop()

    def _deliver(self, message: Message) -> bool:
        """Run the handler; ack or dead-letter. True if the message must be nacked."""
        attempt = message.delivery_attempt or 1
        try:
            bus_message = BusMessage(
                topic=self.topic,
                message_id=message.message_id,
                data=_decode_data(message.data),
                attributes=dict(message.attributes),
                ordering_key=message.ordering_key,
                delivery_attempt=attempt,
            )
            self.handler(bus_message)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            final = (
                message.delivery_attempt is not None and attempt >= self.bus.max_delivery_attempts
            )
            if not final:
                log.warning(
                    "redelivering message %s on %s (attempt %d of %d failed): %s",
                    message.message_id,
                    self.name,
                    attempt,
                    self.bus.max_delivery_attempts,
                    error,
                )
                return True
            return not self._dead_letter(message, attempt, error)
        message.ack()
        return False

    def _dead_letter(self, message: Message, attempt: int, error: str) -> bool:
        """Publish to the dead-letter topic and ack; False (nack) if that publish failed."""
        dead_topic = self.topic + self.bus.dead_letter_suffix
        log.error(
            "dead-lettering message %s on %s to %s after %d attempts: %s",
            message.message_id,
            self.name,
            dead_topic,
            attempt,
            error,
        )
        attributes = {
            **message.attributes,
            "dead_letter_source_topic": self.topic,
            "dead_letter_source_subscription": self.subscription,
            "dead_letter_source_message_id": message.message_id,
            "dead_letter_delivery_attempts": str(attempt),
        }
        try:
            self.bus._publish_bytes(dead_topic, message.data, message.ordering_key, attributes)
        except Exception:
            log.exception("could not dead-letter message %s on %s", message.message_id, self.name)
            return False
        message.ack()
        return True

    def stop(self, timeout: float) -> None:
        """Stop pulling and hand back held messages for prompt redelivery."""
        if self.future is not None:
            self.future.cancel()
            try:
                self.future.result(timeout=timeout)
            except (FutureTimeout, Exception):  # stopping: the stream's end state is moot
                log.debug("streaming pull %s ended", self.name, exc_info=True)
        with self._lock:
            held = [m for state in self._keys.values() for m in state.held]
            for state in self._keys.values():
                _cancel(state)
            self._keys.clear()
        for message in held:
            message.nack()


def _cancel(state: _KeyState) -> None:
    if state.timer is not None:
        state.timer.cancel()
        state.timer = None


def _decode_data(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("message data is not a JSON object")
    return data


def _duration(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)  # proto-plus turns it into a protobuf Duration


class PubSubBus(ClosesOnExit):
    """``Bus`` on Google Cloud Pub/Sub (or its emulator, via ``PUBSUB_EMULATOR_HOST``)."""

    def __init__(
        self,
        project: str,
        *,
        publisher: pubsub_v1.PublisherClient | None = None,
        subscriber: pubsub_v1.SubscriberClient | None = None,
        topic_prefix: str = "",
        max_delivery_attempts: int = 5,
        ack_deadline_s: int = 30,
        dead_letter_suffix: str = "-dead-letter",
        min_backoff_s: float = 10.0,
        max_backoff_s: float = 600.0,
    ) -> None:
        if not project:
            raise ValueError("project must not be empty")
        # Pub/Sub's own limits: fail here rather than at the first subscription.
        if not 5 <= max_delivery_attempts <= 100:
            raise ValueError("max_delivery_attempts must be within 5..100 (Pub/Sub limit)")
        if not 10 <= ack_deadline_s <= 600:
            raise ValueError("ack_deadline_s must be within 10..600 (Pub/Sub limit)")
        if not 0 <= min_backoff_s <= max_backoff_s <= 600:
            raise ValueError("backoff must satisfy 0 <= min_backoff_s <= max_backoff_s <= 600")
        if not dead_letter_suffix:
            raise ValueError("dead_letter_suffix must not be empty")
        self.project = project
        self.topic_prefix = topic_prefix
        self.max_delivery_attempts = max_delivery_attempts
        self.ack_deadline_s = ack_deadline_s
        self.dead_letter_suffix = dead_letter_suffix
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.block_limit_s: float = BLOCK_LIMIT_S
        self._owns_publisher = publisher is None
        self._owns_subscriber = subscriber is None
        self.publisher = publisher or pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        )
        self.subscriber = subscriber or pubsub_v1.SubscriberClient()
        self._lock = threading.Lock()
        self._known_topics: set[str] = set()
        self._known_subscriptions: set[str] = set()
        self._consumers: dict[tuple[str, str], _Consumer] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"PubSubBus(project={self.project!r}, topic_prefix={self.topic_prefix!r}, "
            f"consumers={len(self._consumers)})"
        )

    # ------------------------------------------------------------------- names
    def topic_path(self, topic: str) -> str:
        """``projects/P/topics/<prefix><topic>``."""
        if not topic:
            raise ValueError("topic must not be empty")
        return f"projects/{self.project}/topics/{self.topic_prefix}{topic}"

    def subscription_path(self, topic: str, subscription: str) -> str:
        """``projects/P/subscriptions/<prefix><topic>.<subscription>``."""
        sub_id = subscription_id(topic, subscription, self.topic_prefix)
        return f"projects/{self.project}/subscriptions/{sub_id}"

    def dead_letter_keep_path(self, topic: str) -> str:
        """The subscription that keeps ``topic``'s dead letters."""
        name = f"{self.topic_prefix}{topic}{self.dead_letter_suffix}{KEEP_SUFFIX}"
        return f"projects/{self.project}/subscriptions/{name}"

    # ---------------------------------------------------------------- the port
    def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        dedupe_key: str,
        ordering_key: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Publish JSON ``data``; waits for Pub/Sub and returns its message id."""
        attrs = publish_attributes(topic, dedupe_key, attributes)
        payload = json.dumps(dict(data), allow_nan=False, separators=(",", ":"))
        return self._publish_bytes(topic, payload.encode("utf-8"), ordering_key, attrs)

    def _publish_bytes(
        self, topic: str, payload: bytes, ordering_key: str, attributes: Mapping[str, str]
    ) -> str:
        reserved = _RESERVED_ATTRIBUTES.intersection(attributes)
        if reserved:
            raise ValueError(f"attribute names reserved by the client: {sorted(reserved)}")
        path = self.topic_path(topic)
        for attempt in range(3):
            try:
                return self._publish_once(path, payload, ordering_key, attributes)
            except gexc.NotFound:
                # First publish to a topic nobody has provisioned (local runs only: in
                # the cloud Terraform creates every topic).
                self.ensure_topic(topic)
            except PublishToPausedOrderingKeyException:
                # another publish on this key failed at the same moment and paused it;
                # it has been resumed (see _publish_once): try again
                if attempt == 2:
                    raise
            except RuntimeError as exc:
                # the same, for a message already batched behind the one that failed: the
                # client cancels its batch instead (the key was resumed): try again
                if str(exc) != _PRIOR_ORDERED_FAILED or attempt == 2:
                    raise
        return self._publish_once(path, payload, ordering_key, attributes)

    def _publish_once(
        self, path: str, payload: bytes, ordering_key: str, attributes: Mapping[str, str]
    ) -> str:
        try:
            future = self.publisher.publish(
                path, payload, ordering_key=ordering_key, **dict(attributes)
            )
            return str(future.result(timeout=PUBLISH_TIMEOUT_S))
        except Exception:
            if ordering_key:
                # A failed publish pauses its ordering key until resumed. Concurrent
                # publishers on the same key all fail together; only the first resume
                # finds the key paused, the others' "not paused" is the same outcome.
                with contextlib.suppress(RuntimeError):
                    self.publisher.resume_publish(path, ordering_key)
            raise

    def subscribe(self, topic: str, subscription: str, handler: AnyHandler) -> None:
        """Provision the subscription and start a streaming pull into ``handler``.

        Subscribing again with the same names replaces the handler (the stream stays).
        """
        if self._closed:
            raise RuntimeError("bus is closed")
        path = self.ensure_subscription(topic, subscription)
        with self._lock:
            existing = self._consumers.get((topic, subscription))
            if existing is not None:
                existing.handler = handler
                return
            consumer = _Consumer(self, topic, subscription, handler)
            self._consumers[(topic, subscription)] = consumer
        consumer.future = self.subscriber.subscribe(path, callback=consumer.on_message)

    # ---------------------------------------------------------------- topology
    def ensure_topic(self, topic: str) -> str:
        """Create ``topic`` if missing; returns its path."""
        path = self.topic_path(topic)
        if path in self._known_topics:
            return path
        try:
            self.publisher.get_topic(topic=path)
        except gexc.NotFound:
            # AlreadyExists: created meanwhile by another process
            with contextlib.suppress(gexc.AlreadyExists):
                self.publisher.create_topic(name=path)
        with self._lock:
            self._known_topics.add(path)
        return path

    def ensure_subscription(
        self,
        topic: str,
        subscription: str,
        push_endpoint: str | None = None,
        *,
        ordered: bool = True,
    ) -> str:
        """Create the subscription (and its topic and dead-letter topic) if missing.

        ``push_endpoint`` makes it a push subscription (an existing one is re-pointed).
        Raises ValueError if the subscription exists on another topic.
        """
        path = self.subscription_path(topic, subscription)
        topic_path = self.ensure_topic(topic)
        dead_topic_path = self._ensure_dead_letter(topic)
        if path in self._known_subscriptions and push_endpoint is None:
            return path
        try:
            existing = self.subscriber.get_subscription(subscription=path)
        except gexc.NotFound:
            request: dict[str, Any] = {
                "name": path,
                "topic": topic_path,
                "ack_deadline_seconds": self.ack_deadline_s,
                "enable_message_ordering": ordered,
                "dead_letter_policy": {
                    "dead_letter_topic": dead_topic_path,
                    "max_delivery_attempts": self.max_delivery_attempts,
                },
                "retry_policy": {
                    "minimum_backoff": _duration(self.min_backoff_s),
                    "maximum_backoff": _duration(self.max_backoff_s),
                },
            }
            if push_endpoint is not None:
                request["push_config"] = {"push_endpoint": push_endpoint}
            # AlreadyExists: created meanwhile by another process
            with contextlib.suppress(gexc.AlreadyExists):
                self.subscriber.create_subscription(request=request)
        else:
            if existing.topic != topic_path:
                raise ValueError(f"subscription {path} exists on {existing.topic}, not {topic}")
            current = existing.push_config.push_endpoint or None
            if push_endpoint is not None and current != push_endpoint:
                self.subscriber.modify_push_config(
                    request={"subscription": path, "push_config": {"push_endpoint": push_endpoint}}
                )
        with self._lock:
            self._known_subscriptions.add(path)
        return path

    def _ensure_dead_letter(self, topic: str) -> str:
        dead_topic_path = self.ensure_topic(topic + self.dead_letter_suffix)
        keep_path = self.dead_letter_keep_path(topic)
        if keep_path in self._known_subscriptions:
            return dead_topic_path
        try:
            self.subscriber.get_subscription(subscription=keep_path)
        except gexc.NotFound:
            # AlreadyExists: created meanwhile by another process
            with contextlib.suppress(gexc.AlreadyExists):
                self.subscriber.create_subscription(
                    request={
                        "name": keep_path,
                        "topic": dead_topic_path,
                        "ack_deadline_seconds": self.ack_deadline_s,
                        # the longest Pub/Sub keeps unacked messages: time to inspect them
                        "message_retention_duration": _duration(7 * 24 * 3600),
                    }
                )
        with self._lock:
            self._known_subscriptions.add(keep_path)
        return dead_topic_path

    def ensure_topology(
        self, topics: Iterable[str], subscriptions: Iterable[tuple[str, str]]
    ) -> None:
        """Create topics and ``(topic, subscription)`` pull subscriptions if missing."""
        for topic in topics:
            self.ensure_topic(topic)
        for topic, subscription in subscriptions:
            self.ensure_subscription(topic, subscription)

    # --------------------------------------------------------------- lifecycle
    def close(self, timeout: float = 10.0) -> None:
        """Stop every streaming pull and close the clients this bus created."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            consumers = list(self._consumers.values())
        for consumer in consumers:
            consumer.stop(timeout)
        if self._owns_subscriber:
            self.subscriber.close()
        if self._owns_publisher:
            self.publisher.stop()
