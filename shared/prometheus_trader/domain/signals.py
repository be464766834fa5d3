"""Analyst views and opportunity signals (versioned schema)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prometheus_trader.domain.market import MarketType


class Direction(StrEnum):
    """Trade direction."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        """+1 for long, -1 for short."""
        return 1 if self is Direction.LONG else -1

    @property
    def opposite(self) -> Direction:
        """The other direction."""
        return Direction.SHORT if self is Direction.LONG else Direction.LONG


class AnalystView(BaseModel):
    """One analyst's independent opinion. ``direction`` None means it abstains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    analyst: str
    direction: Direction | None
    strength: float = Field(ge=0.0, le=1.0)
    reasons: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)

    @property
    def abstains(self) -> bool:
        """True when the analyst has no opinion (missing data or nothing to say)."""
        return self.direction is None


class SignalStatus(StrEnum):
    """Global lifecycle of a signal; per-user outcomes live on executions."""

    PENDING = "pending"
    EXPIRED = "expired"


class TakeProfitLevel(BaseModel):
    """A take-profit target; ``pct`` is the distance from entry in percent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    price: float = Field(gt=0)
    pct: float = Field(gt=0)
    size_fraction: float = Field(gt=0, le=1)


class OpportunitySignal(BaseModel):
    """A published trading opportunity. Prices are also given in % of entry."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    id: str
    symbol: str
    exchange: str
    market_type: MarketType
    direction: Direction
    entry_price: float = Field(gt=0, description="reference entry (last price at analysis)")
    entry_low: float = Field(gt=0)
    entry_high: float = Field(gt=0)
    stop_loss: float | None = Field(gt=0, description="None only in malformed input; gated")
    stop_loss_pct: float | None = Field(default=None, ge=0)
    take_profits: list[TakeProfitLevel] = Field(min_length=1, max_length=3)
    reward_risk: float = Field(ge=0)
    confidence: float = Field(ge=0, le=1)
    created_at: datetime
    expires_at: datetime
    strategy: str
    analysts: list[AnalystView] = Field(default_factory=list)
    rank_score: float = 0.0
    features: dict[str, float] = Field(default_factory=dict)
    status: SignalStatus = SignalStatus.PENDING

    @model_validator(mode="after")
    def _check_ranges(self) -> OpportunitySignal:
        if self.entry_low > self.entry_high:
            raise ValueError("entry_low must not exceed entry_high")
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        return self

    def is_expired(self, now: datetime) -> bool:
        """True once the TTL has run out."""
        return now >= self.expires_at
