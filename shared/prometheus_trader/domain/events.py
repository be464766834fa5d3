"""Events published on the ``events`` topic."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventType(StrEnum):
    """Event types (SPEC §8)."""

    SIGNAL_PUBLISHED = "signal_published"
    TRADE_EXECUTED = "trade_executed"
    POSITION_OPENED = "position_opened"
    POSITION_CLOSED = "position_closed"
    RISK_BREACH = "risk_breach"
    CIRCUIT_BREAKER = "circuit_breaker"
    WATCHLIST_EXPIRING = "watchlist_expiring"
    SYSTEM_ERROR = "system_error"
    DAILY_SUMMARY = "daily_summary"


class Severity(StrEnum):
    """critical events are sent at once; info may go to digests."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Event(BaseModel):
    """Something that happened, for the journal, notifications and audit."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: EventType
    created_at: datetime
    user_id: str | None = None
    severity: Severity = Severity.INFO
    payload: dict[str, Any] = Field(default_factory=dict)
