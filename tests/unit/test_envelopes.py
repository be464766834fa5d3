"""Decoding Pub/Sub push bodies and CloudEvents into BusMessage (no client, no emulator)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from prometheus_trader.adapters.gcp.envelopes import (
    BadEnvelope,
    message_from_cloud_event,
    message_from_push,
    split_subscription_id,
    subscription_id,
    topic_from_source,
)

pytestmark = pytest.mark.unit

DATA = {"signal_id": "sig-1", "user_id": "u1", "score": 0.75, "tags": ["breakout"]}


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def push_body(**overrides: Any) -> dict[str, Any]:
    """A push request body as Pub/Sub sends it (both spellings of the ids, like the service)."""
    message: dict[str, Any] = {
        "data": b64(DATA),
        "attributes": {"dedupe_key": "sig-1:u1", "kind": "execution"},
        "messageId": "4103718394627482",
        "message_id": "4103718394627482",
        "orderingKey": "u1",
        "publishTime": "2025-05-20T10:00:00.123Z",
        "publish_time": "2025-05-20T10:00:00.123Z",
    }
    message.update(overrides.pop("message", {}))
    body: dict[str, Any] = {
        "message": message,
        "subscription": "projects/demo-prometheus/subscriptions/executions.executor",
        "deliveryAttempt": 3,
    }
    body.update(overrides)
    return body


def eventarc_event(**data_overrides: Any) -> CloudEvent:
    """A CloudEvent as Eventarc delivers a Pub/Sub message."""
    data = push_body(**data_overrides)
    data.pop("deliveryAttempt")
    return CloudEvent(
        {
            "id": "4103718394627482",
            "source": "//pubsub.googleapis.com/projects/demo-prometheus/topics/executions",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "specversion": "1.0",
            "time": "2025-05-20T10:00:00.123Z",
        },
        data,
    )


# ------------------------------------------------------------------------- push
def test_push_body_decodes_every_field() -> None:
    msg = message_from_push(push_body())
    assert msg.topic == "executions"
    assert msg.message_id == "4103718394627482"
    assert msg.data == DATA
    assert msg.attributes == {"dedupe_key": "sig-1:u1", "kind": "execution"}
    assert msg.dedupe_key == "sig-1:u1"
    assert msg.ordering_key == "u1"
    assert msg.delivery_attempt == 3


def test_push_body_defaults_without_optional_fields() -> None:
    body = push_body()
    del body["deliveryAttempt"]  # only sent when the subscription has a dead-letter policy
    for key in ("attributes", "orderingKey"):
        del body["message"][key]
    msg = message_from_push(body)
    assert msg.delivery_attempt == 1
    assert msg.ordering_key == ""
    assert msg.attributes == {}
    assert msg.dedupe_key == msg.message_id


def test_push_topic_strips_prefix_and_explicit_topic_wins() -> None:
    body = push_body(subscription="projects/p/subscriptions/dev-signals.dispatcher")
    assert message_from_push(body, prefix="dev-").topic == "signals"
    assert message_from_push(body, topic="override").topic == "override"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "message"),
        ({"message": "x", "subscription": "projects/p/subscriptions/t.s"}, "message"),
        (push_body(message={"data": "%%not base64%%"}), "base64"),
        (push_body(message={"data": b64(b"\xff\xfe")}), "base64"),
        (push_body(message={"data": b64(b"not json")}), "base64"),
        (push_body(message={"data": b64([1, 2])}), "JSON object"),
        (push_body(message={"data": ""}), "non-empty"),
        (push_body(message={"attributes": {"n": 1}}), "attribute"),
        (push_body(message={"messageId": None, "message_id": None}), "messageId"),
        (push_body(deliveryAttempt=0), "deliveryAttempt"),
        (push_body(deliveryAttempt="2"), "deliveryAttempt"),
        (push_body(subscription="projects/p/subscriptions/no-topic"), "topic"),
        (push_body(subscription=None), "subscription"),
    ],
)
def test_malformed_push_bodies_are_bad_envelopes(body: Any, reason: str) -> None:
    with pytest.raises(BadEnvelope, match=reason):
        message_from_push(body)


def test_bad_envelope_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        message_from_push({"message": None})


# ------------------------------------------------------------------ CloudEvents
def test_eventarc_cloud_event_decodes_with_topic_from_source() -> None:
    msg = message_from_cloud_event(eventarc_event())
    assert msg.topic == "executions"
    assert msg.message_id == "4103718394627482"
    assert msg.data == DATA
    assert msg.dedupe_key == "sig-1:u1"
    assert msg.ordering_key == "u1"
    assert msg.delivery_attempt == 1


def test_structured_json_cloud_event_and_attributes_data_mapping() -> None:
    event = eventarc_event()
    structured = {**event.get_attributes(), "data": event.get_data()}
    nested = {"attributes": dict(event.get_attributes()), "data": event.get_data()}
    for form in (structured, nested):
        msg = message_from_cloud_event(form)
        assert (msg.topic, msg.message_id, msg.data) == ("executions", "4103718394627482", DATA)


def test_functions_framework_conversion_of_a_raw_push() -> None:
    # What functions-framework builds from a raw push whose URL path names no topic:
    # no subscription, ordering key or delivery attempt survive.
    event = CloudEvent(
        {
            "id": "17",
            "source": "//pubsub.googleapis.com/",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "specversion": "1.0",
        },
        {
            "message": {
                "@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
                "data": b64(DATA),
                "attributes": {"dedupe_key": "d1"},
                "messageId": "17",
                "publishTime": "2025-05-20T10:00:00Z",
            }
        },
    )
    with pytest.raises(BadEnvelope, match="topic"):
        message_from_cloud_event(event)
    msg = message_from_cloud_event(event, topic="signals")
    assert (msg.topic, msg.message_id, msg.dedupe_key, msg.ordering_key) == (
        "signals",
        "17",
        "d1",
        "",
    )


def test_cloud_event_topic_from_push_url_path_and_from_subscription() -> None:
    event = eventarc_event()
    attributes = dict(event.get_attributes())
    attributes["source"] = "//pubsub.googleapis.com/projects/p/topics/dev-events"
    assert message_from_cloud_event(
        CloudEvent(attributes, event.get_data()), prefix="dev-"
    ).topic == ("events")
    attributes["source"] = "//pubsub.googleapis.com/"
    data = {**event.get_data(), "subscription": "projects/p/subscriptions/events.notifier"}
    assert message_from_cloud_event(CloudEvent(attributes, data)).topic == "events"


def test_cloud_event_without_message_id_uses_event_id() -> None:
    event = eventarc_event(message={"messageId": None, "message_id": None})
    event_id_only = {**event.get_attributes(), "data": event.get_data()}
    event_id_only["data"]["message"] = {
        k: v for k, v in event_id_only["data"]["message"].items() if v is not None
    }
    assert message_from_cloud_event(event_id_only).message_id == "4103718394627482"


@pytest.mark.parametrize(
    "event",
    [
        "not an event",
        {"specversion": "1.0", "id": "1", "source": "//pubsub.googleapis.com/x", "data": None},
        {"specversion": "1.0", "id": "1", "source": "s", "data": {"message": []}},
    ],
)
def test_malformed_cloud_events_are_bad_envelopes(event: Any) -> None:
    with pytest.raises(BadEnvelope):
        message_from_cloud_event(event, topic="t")


# ------------------------------------------------------------------------ names
def test_subscription_ids_round_trip() -> None:
    sub_id = subscription_id("signals", "dispatcher", prefix="dev-")
    assert sub_id == "dev-signals.dispatcher"
    assert split_subscription_id(sub_id, prefix="dev-") == ("signals", "dispatcher")
    assert split_subscription_id(f"projects/p/subscriptions/{sub_id}", "dev-") == (
        "signals",
        "dispatcher",
    )
    with pytest.raises(ValueError):
        subscription_id("a.b", "s")
    with pytest.raises(BadEnvelope, match="prefix"):
        split_subscription_id("prod-signals.dispatcher", prefix="dev-")


def test_topic_from_source() -> None:
    assert topic_from_source("//pubsub.googleapis.com/projects/p/topics/events") == "events"
    assert topic_from_source("//pubsub.googleapis.com/") is None
    assert topic_from_source("//storage.googleapis.com/projects/_/buckets/b") is None
