"""Decode Pub/Sub push requests and Pub/Sub CloudEvents into ``BusMessage`` (no client).

Two shapes reach a function:

- a raw push request body: ``{"message": {"data", "attributes", "messageId", "orderingKey",
  "publishTime"}, "subscription": "projects/P/subscriptions/S", "deliveryAttempt": n}``;
- a CloudEvent (Eventarc, or functions-framework converting a raw push) whose data is
  ``{"message": {...}, "subscription": ...}`` and whose source is
  ``//pubsub.googleapis.com/projects/P/topics/T``.

functions-framework's conversion of a raw push keeps only data, attributes, messageId and
publishTime: the ordering key, the delivery attempt and the subscription are lost, and the
topic survives only if the push endpoint's URL path contains ``projects/P/topics/T``.

Malformed input raises ``BadEnvelope`` (a ``ValueError``): answer it with a 400, because a
redelivery cannot repair it.

Subscription ids encode their topic (``<prefix><topic>.<subscription>``, see
``subscription_id``), so a push body names its topic through its subscription.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from cloudevents.abstract import CloudEvent

from prometheus_trader.ports import BusMessage

SUBSCRIPTION_SEPARATOR = "."
_SUBSCRIPTION_PATH = re.compile(r"^projects/[^/]+/subscriptions/([^/]+)$")
_TOPIC_IN_SOURCE = re.compile(r"(?:^|/)projects/[^/]+/topics/([^/?]+)$")


class BadEnvelope(ValueError):
    """A push request or CloudEvent that is not a well-formed bus message."""


# ------------------------------------------------------------------------- names
def subscription_id(topic: str, subscription: str, prefix: str = "") -> str:
    """The Pub/Sub subscription id of our ``(topic, subscription)`` pair."""
    if not topic or not subscription:
        raise ValueError("topic and subscription must not be empty")
    if SUBSCRIPTION_SEPARATOR in topic:
        raise ValueError(f"topic {topic!r} must not contain {SUBSCRIPTION_SEPARATOR!r}")
    return f"{prefix}{topic}{SUBSCRIPTION_SEPARATOR}{subscription}"


def split_subscription_id(sub_id: str, prefix: str = "") -> tuple[str, str]:
    """``(topic, subscription)`` from a subscription id or full subscription path."""
    match = _SUBSCRIPTION_PATH.match(sub_id)
    name = match.group(1) if match else sub_id
    if prefix:
        if not name.startswith(prefix):
            raise BadEnvelope(f"subscription {name!r} lacks the prefix {prefix!r}")
        name = name[len(prefix) :]
    topic, sep, subscription = name.partition(SUBSCRIPTION_SEPARATOR)
    if not sep or not topic or not subscription:
        raise BadEnvelope(f"subscription {sub_id!r} does not name a topic (<topic>.<name>)")
    return topic, subscription


def topic_from_source(source: str, prefix: str = "") -> str | None:
    """Our topic from a CloudEvent source (``//pubsub.googleapis.com/projects/P/topics/T``)."""
    match = _TOPIC_IN_SOURCE.search(source)
    if not match:
        return None
    name = match.group(1)
    if prefix:
        if not name.startswith(prefix):
            raise BadEnvelope(f"topic {name!r} lacks the prefix {prefix!r}")
        name = name[len(prefix) :]
    return name or None


# ---------------------------------------------------------------------- decoding
def message_from_push(
    body: Mapping[str, Any], *, topic: str | None = None, prefix: str = ""
) -> BusMessage:
    """Decode a Pub/Sub push request body.

    The topic comes from ``topic`` if given, else from the subscription id.
    """
    if not isinstance(body, Mapping):
        raise BadEnvelope("push body must be a JSON object")
    message = _mapping(body.get("message"), "message")
    if topic is None:
        subscription = body.get("subscription")
        if not isinstance(subscription, str) or not subscription:
            raise BadEnvelope("push body has no subscription to derive the topic from")
        topic, _ = split_subscription_id(subscription, prefix)
    return _decode(message, topic, body.get("deliveryAttempt"), fallback_id=None)


def message_from_cloud_event(
    event: CloudEvent | Mapping[str, Any] | object, *, topic: str | None = None, prefix: str = ""
) -> BusMessage:
    """Decode a Pub/Sub CloudEvent (a ``cloudevents`` event or its structured JSON form;
    anything else is a ``BadEnvelope``).

    The topic comes from ``topic`` if given, else from the event source, else from the
    subscription in the event data.
    """
    attributes, data = _split_event(event)
    payload = _mapping(data, "CloudEvent data")
    message = _mapping(payload.get("message"), "message")
    if topic is None:
        source = attributes.get("source")
        topic = topic_from_source(source, prefix) if isinstance(source, str) else None
    if topic is None:
        subscription = payload.get("subscription")
        if not isinstance(subscription, str) or not subscription:
            raise BadEnvelope("CloudEvent names no topic (source) and no subscription")
        topic, _ = split_subscription_id(subscription, prefix)
    event_id = attributes.get("id")
    fallback = event_id if isinstance(event_id, str) and event_id else None
    return _decode(message, topic, payload.get("deliveryAttempt"), fallback_id=fallback)


def _split_event(event: object) -> tuple[Mapping[str, Any], Any]:
    if isinstance(event, CloudEvent):
        return event.get_attributes(), event.get_data()
    if not isinstance(event, Mapping):
        raise BadEnvelope("a CloudEvent must be an event object or a JSON object")
    nested = event.get("attributes")
    if "specversion" not in event and isinstance(nested, Mapping):
        return nested, event.get("data")
    return event, event.get("data")


def _decode(
    message: Mapping[str, Any], topic: str, attempt: Any, fallback_id: str | None
) -> BusMessage:
    message_id = message.get("messageId", message.get("message_id", fallback_id))
    if not isinstance(message_id, str) or not message_id:
        raise BadEnvelope("message has no messageId")
    ordering_key = message.get("orderingKey", message.get("ordering_key", ""))
    if not isinstance(ordering_key, str):
        raise BadEnvelope("orderingKey must be a string")
    return BusMessage(
        topic=topic,
        message_id=message_id,
        data=_json_object(message.get("data")),
        attributes=_attributes(message.get("attributes")),
        ordering_key=ordering_key,
        delivery_attempt=_attempt(attempt),
    )


def _json_object(encoded: Any) -> dict[str, Any]:
    if not isinstance(encoded, str) or not encoded:
        raise BadEnvelope("message data must be a non-empty base64 string")
    try:
        raw = base64.b64decode(encoded, validate=True)
        decoded = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEnvelope(f"message data is not base64-encoded JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise BadEnvelope("message data must be a JSON object")
    return decoded


def _attributes(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    attributes = _mapping(value, "attributes")
    for name, item in attributes.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise BadEnvelope(f"attribute {name!r} must map a string to a string")
    return dict(attributes)


def _attempt(value: Any) -> int:
    # Pub/Sub sends deliveryAttempt only when the subscription has a dead-letter policy.
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadEnvelope(f"deliveryAttempt must be a positive integer, got {value!r}")
    return value


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadEnvelope(f"{what} must be a JSON object")
    return value
