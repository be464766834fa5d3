"""Per-user watchlist entries (expire after a duration unless renewed)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.market import MarketType


class WatchlistEntry(BaseModel):
    """One symbol a user wants signals for."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    exchange: str
    market_type: MarketType
    symbol: str
    priority: int = Field(default=0, ge=0, le=10)
    added_at: datetime
    expires_at: datetime

    def is_active(self, now: datetime) -> bool:
        """True until the entry expires."""
        return now < self.expires_at
