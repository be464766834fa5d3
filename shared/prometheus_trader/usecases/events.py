"""Publishing domain events (and keeping them as documents for reads and audit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_trader.domain.events import Event, EventType, Severity
from prometheus_trader.domain.ids import stable_id
from prometheus_trader.ports import Bus, StateStore
from prometheus_trader.usecases.names import Collections, Topics


def publish_event(
    bus: Bus,
    state: StateStore,
    event_type: EventType,
    *,
    key: str,
    now: datetime,
    user_id: str | None = None,
    severity: Severity = Severity.INFO,
    payload: dict[str, Any] | None = None,
) -> Event:
    """Store and publish one event. ``key`` makes its id deterministic, so a retried
    handler re-publishes the same event id and consumers dedupe on it."""
    event = Event(
        id=stable_id("event", event_type, key),
        type=event_type,
        created_at=now,
        user_id=user_id,
        severity=severity,
        payload=payload or {},
    )
    doc = event.model_dump(mode="json")
    state.create(Collections.EVENTS, event.id, doc)
    attributes = {"type": event_type.value}
    if user_id:
        attributes["user_id"] = user_id
    bus.publish(
        Topics.EVENTS,
        doc,
        dedupe_key=event.id,
        ordering_key=user_id or "",
        attributes=attributes,
    )
    return event
