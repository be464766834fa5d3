"""Journal entries written by the evaluator after a position closes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import ExitReason


class TradeCategory(StrEnum):
    """Post-trade classification."""

    PERFECT = "perfect"
    ACCEPTABLE_LOSS = "acceptable_loss"
    BAD_PLAN = "bad_plan"
    COULD_BE_BETTER = "could_be_better"


class JournalEntry(BaseModel):
    """What happened in one trade and what to learn from it."""

    model_config = ConfigDict(extra="forbid")

    position_id: str
    user_id: str
    signal_id: str
    symbol: str
    strategy: str
    direction: Direction
    entry_price: float
    exit_price: float
    opened_at: datetime
    closed_at: datetime
    duration_s: float
    pnl_pct: float = Field(description="return on entry notional, after fees, %")
    equity_pnl_pct: float = Field(description="return on the user's equity at entry, %")
    mfe_pct: float
    mae_pct: float
    exit_reason: ExitReason
    analysts_right: list[str]
    analysts_wrong: list[str]
    category: TradeCategory
    rating: int = Field(ge=1, le=5)
    lessons: list[str]
