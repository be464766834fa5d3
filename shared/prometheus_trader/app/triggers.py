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


# -------------------------------------------------------------------- scheduler
def request_body(request: HttpRequest) -> dict[str, Any]:
    """The JSON object body, ``{}`` when empty; BadRequest otherwise."""
    raw = request.get_data()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def scheduled(
    request: HttpRequest, job: Callable[[dict[str, Any]], object], *, stage: str
) -> JsonResponse:
    """Run a scheduled job with the request's optional JSON body; 400 on a bad body."""
    with traced(request):
        return _scheduled(request, job, stage=stage)


def _scheduled(
    request: HttpRequest, job: Callable[[dict[str, Any]], object], *, stage: str
) -> JsonResponse:
    try:
        body = request_body(request)
        result = job(body)
    except BadRequest as exc:
        return {"error": str(exc)}, 400
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
    "report_day",
    "request_body",
    "scheduled",
    "to_json",
]
