"""Trigger plumbing shared by the Cloud Functions' ``main.py`` files.

Each function is: parse the trigger, call one use-case, return. What parsing means, what
a poison message is and how a report becomes JSON lives here, once, so the ``main.py``
files stay a few lines and hold no logic.

* Pub/Sub (``deliver``): a message that cannot be decoded (``BadEnvelope``) or validated
  (pydantic ``ValidationError``) is logged and acknowledged: redelivering it cannot help
  and would loop until the dead-letter topic. Any other error propagates: the framework
  answers 500, Pub/Sub redelivers (transient failures: Firestore contention, a timeout).
* Scheduler (``scheduled``): an optional JSON object body; a bad body is a 400.
* API: the FastAPI app in ``app.api`` (served by ``app.api.function``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any, Protocol

from cloudevents.abstract import CloudEvent
from pydantic import BaseModel, ValidationError

from prometheus_trader.app.inbound import (
    HttpError,
    json_object,
    neutralize_bodyless,
    read_body,
)
from prometheus_trader.app.logging import request_trace
from prometheus_trader.ports import BusMessage
from prometheus_trader.usecases.names import Topics, labels

log = logging.getLogger(__name__)

JsonResponse = tuple[dict[str, Any], int]
# the topic each Pub/Sub-triggered function consumes
TOPIC_OF = {
    "dispatcher": Topics.SIGNALS,
    "executor": Topics.EXECUTIONS,
    "evaluator": Topics.EVENTS,
    "notifier": Topics.EVENTS,
}


class HttpRequest(Protocol):
    """The part of a Flask request the HTTP functions read."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def args(self) -> Mapping[str, str]: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def get_data(self) -> bytes: ...


def traced(request: HttpRequest) -> contextlib.AbstractContextManager[None]:
    """Log lines inside carry the request's Cloud Trace (``X-Cloud-Trace-Context``)."""
    project = os.environ.get("PROMETHEUS_GCP_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    return request_trace(request.headers.get("X-Cloud-Trace-Context"), project)


class BadRequest(ValueError):
    """The request body or query is invalid (→ 400)."""


def to_json(value: object) -> Any:
    """A use-case's report as JSON-ready data (dataclasses, models, lists, dates)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, sort_keys=True, default=str))


# ---------------------------------------------------------------------- Pub/Sub
def deliver(
    event: CloudEvent | Mapping[str, Any],
    handler: Callable[[BusMessage], object],
    *,
    stage: str,
) -> bool:
    """Decode a CloudEvent (Eventarc or our push subscription) and run ``handler``.

    The topic is the function's own (``TOPIC_OF[stage]``): functions-framework's
    conversion of a raw push body drops the subscription, so the event cannot always name
    it. Returns True when the handler ran, False when the message was poison and is acked.
    """
    from prometheus_trader.adapters.gcp.envelopes import BadEnvelope, message_from_cloud_event

    try:
        message = message_from_cloud_event(event, topic=TOPIC_OF[stage])
    except (BadEnvelope, ValidationError) as exc:
        log.error("undecodable message acknowledged: %s", exc, extra=labels(stage=stage))
        return False
    try:
        handler(message)
    except ValidationError as exc:
        log.error(
            "invalid message %s acknowledged: %s",
            message.message_id,
            exc,
            extra=labels(stage=stage, dedupe_key=message.dedupe_key),
        )
        return False
    return True


# ------------------------------------------------------------ Pub/Sub over HTTP
PUSH_MAX_BODY_BYTES = 16 * 1024 * 1024  # a 10 MB Pub/Sub message, base64, in its envelope
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
DEAD_LETTER_SUFFIX = "-dead-letter"  # the Pub/Sub adapter's and Terraform's naming
DeadLetter = Callable[[BusMessage, str], None]


def push(
    request: HttpRequest,
    handler: Callable[[BusMessage], object],
    *,
    stage: str,
    dead_letter: DeadLetter | None = None,
) -> JsonResponse:
    """A Pub/Sub push (raw push body, or a CloudEvent in binary or structured mode).

    Not a push at all (wrong method, too large, not JSON, not an object, no message):
    a 4xx at once. A push whose message cannot be decoded or validated: logged and
    acknowledged (200; a redelivery cannot repair it). A message with a
    ``schema_version`` this code does not know: published to the topic's dead letter
    and acknowledged, to be replayed by a consumer that knows it. Other errors
    propagate (500: Pub/Sub redelivers).
    """
    with traced(request):
        if request.method != "POST":
            neutralize_bodyless(request)
            return {"error": f"method {request.method} not allowed: Pub/Sub pushes POST"}, 405
        try:
            body = json_object(read_body(request, PUSH_MAX_BODY_BYTES), "push body")
            event = _event_of(request, body)
        except HttpError as exc:
            return {"error": str(exc)}, exc.status
        version = _schema_version(event)
        if version is not None and version not in SUPPORTED_SCHEMA_VERSIONS:
            return _dead_letter(event, version, stage, dead_letter)
        ran = deliver(event, handler, stage=stage)
        return {"stage": stage, "handled": ran}, 200


def _event_of(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    """The push as the event shape ``deliver`` decodes; HttpError 400 if it is none."""
    headers = request.headers
    if headers.get("ce-specversion"):  # binary CloudEvent (Eventarc)
        attributes = {k.lower()[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
        event: dict[str, Any] = {"attributes": attributes, "data": body}
        payload: Any = body
    elif "specversion" in body:  # structured CloudEvent
        event, payload = body, body.get("data")
    else:  # a raw push request body
        event, payload = {"attributes": {}, "data": body}, body
    if not isinstance(payload, dict) or not isinstance(payload.get("message"), dict):
        raise HttpError(400, "not a Pub/Sub push: no message object")
    return event


def _schema_version(event: Mapping[str, Any]) -> object | None:
    """The ``schema_version`` inside the message data, if the data decodes and has one."""
    from prometheus_trader.adapters.gcp.envelopes import BadEnvelope, message_from_cloud_event

    try:
        data = message_from_cloud_event(event, topic="-").data
    except (BadEnvelope, ValidationError):
        return None  # deliver() acks it as poison
    return data.get("schema_version")


def _dead_letter(
    event: Mapping[str, Any], version: object, stage: str, dead_letter: DeadLetter | None
) -> JsonResponse:
    from prometheus_trader.adapters.gcp.envelopes import message_from_cloud_event

    message = message_from_cloud_event(event, topic=TOPIC_OF[stage])
    reason = (
        f"unknown schema_version {version!r} (this code knows {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
    )
    (dead_letter or bus_dead_letter(stage))(message, reason)
    log.error(
        "message %s dead-lettered: %s",
        message.message_id,
        reason,
        extra=labels(stage=stage, dedupe_key=message.dedupe_key),
    )
    return {"stage": stage, "handled": False, "dead_lettered": reason}, 200


def bus_dead_letter(stage: str) -> DeadLetter:
    """Publish to ``<topic>-dead-letter`` on this process's bus (kept by its ``-keep``
    subscription), with the original attributes and why."""

    def send(message: BusMessage, reason: str) -> None:
        from prometheus_trader.app.cloud import get_runtime

        attributes = {
            **message.attributes,
            "dead_letter_source_topic": message.topic,
            "dead_letter_source_subscription": stage,
            "dead_letter_source_message_id": message.message_id,
            "dead_letter_reason": reason[:500],
        }
        get_runtime().bus.publish(
            message.topic + DEAD_LETTER_SUFFIX,
            message.data,
            dedupe_key=message.dedupe_key,
            ordering_key=message.ordering_key,
            attributes=attributes,
        )

    return send


# -------------------------------------------------------------------- scheduler
SCHEDULED_MAX_BODY_BYTES = 64 * 1024


def request_body(request: HttpRequest) -> dict[str, Any]:
    """The JSON object body, ``{}`` when empty; BadRequest (or a 413 HttpError) otherwise."""
    try:
        raw = read_body(request, SCHEDULED_MAX_BODY_BYTES)
        if not raw.strip():
            return {}
        return json_object(raw)
    except HttpError as exc:
        if exc.status == 400:
            raise BadRequest(str(exc)) from None
        raise


def scheduled(
    request: HttpRequest, job: Callable[[dict[str, Any]], object], *, stage: str
) -> JsonResponse:
    """Run a scheduled job with the request's optional JSON body; 400 on a bad body."""
    with traced(request):
        return _scheduled(request, job, stage=stage)


def _scheduled(
    request: HttpRequest, job: Callable[[dict[str, Any]], object], *, stage: str
) -> JsonResponse:
    if request.method != "POST":  # Cloud Scheduler POSTs; a stray GET must not run a job
        neutralize_bodyless(request)
        return {"error": f"method {request.method} not allowed: POST runs the job"}, 405
    try:
        body = request_body(request)
        result = job(body)
    except BadRequest as exc:
        return {"error": str(exc)}, 400
    except HttpError as exc:
        return {"error": str(exc)}, exc.status
    log.info("%s done", stage, extra=labels(stage=stage))
    return {"stage": stage, "report": to_json(result)}, 200


def report_day(body: Mapping[str, Any], today: date) -> date:
    """``{"day": "YYYY-MM-DD"}`` or, by default, the UTC day before ``today``."""
    value = body.get("day")
    if value is None:
        return today - timedelta(days=1)
    if not isinstance(value, str):
        raise BadRequest("day must be a YYYY-MM-DD string")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"day is not YYYY-MM-DD: {value!r}") from None


def no_body(body: Mapping[str, Any]) -> None:
    """Jobs that take no parameters refuse unknown ones (a typo must not pass silently)."""
    if body:
        raise BadRequest(f"unexpected fields: {', '.join(sorted(body))}")


__all__ = [
    "BadRequest",
    "CloudEvent",
    "HttpRequest",
    "JsonResponse",
    "deliver",
    "no_body",
    "push",
    "report_day",
    "request_body",
    "scheduled",
    "to_json",
]
