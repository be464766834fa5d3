"""Trigger plumbing shared by the Cloud Functions' ``main.py`` files.

Each function is: parse the trigger, call one use-case, return. What parsing means, what
a poison message is and how a report becomes JSON lives here, once, so the ``main.py``
files stay a few lines and hold no logic.

* Pub/Sub (``deliver``): a message that cannot be decoded (``BadEnvelope``) or validated
  (pydantic ``ValidationError``) is logged and acknowledged: redelivering it cannot help
  and would loop until the dead-letter topic. Any other error propagates: the framework
  answers 500, Pub/Sub redelivers (transient failures: Firestore contention, a timeout).
* Scheduler (``scheduled``): an optional JSON object body; a bad body is a 400.
* API (``api``): a minimal, read-only surface (health, a user's positions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any, Protocol

from cloudevents.abstract import CloudEvent
from pydantic import BaseModel, ValidationError

from prometheus_trader.app.logging import request_trace
from prometheus_trader.ports import BusMessage, Filter, StateStore
from prometheus_trader.usecases.names import Collections, Topics, labels

log = logging.getLogger(__name__)

JsonResponse = tuple[dict[str, Any], int]
# the topic each Pub/Sub-triggered function consumes
TOPIC_OF = {
    "dispatcher": Topics.SIGNALS,
    "executor": Topics.EXECUTIONS,
    "evaluator": Topics.EVENTS,
    "notifier": Topics.EVENTS,
}
USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the User.user_id pattern
POSITION_STATUSES = ("open", "closed")


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


# -------------------------------------------------------------------------- API
def api(
    request: HttpRequest, state: Callable[[], StateStore], info: Callable[[], dict[str, Any]]
) -> JsonResponse:
    """The minimal read-only API (the full API is a later issue).

    ``GET /api/v1/health`` → 200; ``GET /api/v1/positions?user_id=U[&status=open|closed]``
    → the user's positions sorted by id; 400 on bad input, 404 for other paths, 405 for
    other methods on these paths. ``state`` is called only when the store is needed.
    """
    with traced(request):
        return _api(request, state, info)


def _api(
    request: HttpRequest, state: Callable[[], StateStore], info: Callable[[], dict[str, Any]]
) -> JsonResponse:
    routes = {"/api/v1/health", "/api/v1/positions"}
    path = request.path.rstrip("/") or "/"
    if path not in routes:
        return {"error": f"not found: {request.path}"}, 404
    if request.method != "GET":
        return {"error": f"method {request.method} not allowed"}, 405
    if path == "/api/v1/health":
        return {"status": "ok", **info()}, 200
    user_id = request.args.get("user_id", "")
    if not USER_ID.fullmatch(user_id):
        return {"error": "user_id is required: 1-64 of A-Z a-z 0-9 _ -"}, 400
    filters = [Filter("user_id", "==", user_id)]
    status = request.args.get("status")
    if status is not None:
        if status not in POSITION_STATUSES:
            return {"error": f"status must be one of {', '.join(POSITION_STATUSES)}"}, 400
        filters.append(Filter("status", "==", status))
    docs = state().query(Collections.POSITIONS, filters)
    positions = sorted(docs, key=lambda d: str(d["id"]))
    return {"user_id": user_id, "positions": to_json(positions)}, 200


__all__ = [
    "BadRequest",
    "CloudEvent",
    "HttpRequest",
    "JsonResponse",
    "api",
    "deliver",
    "no_body",
    "report_day",
    "request_body",
    "scheduled",
    "to_json",
]
