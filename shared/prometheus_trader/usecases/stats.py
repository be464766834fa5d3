"""Per-user running statistics the risk gate needs (breakers, drawdown)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from prometheus_trader.ports import StateStore
from prometheus_trader.usecases.names import Collections


class UserStats(BaseModel):
    """Running per-user numbers, all in percent or counts. Updated by the evaluator."""

    model_config = ConfigDict(extra="ignore")

    kind: str = "user"
    user_id: str
    trades: int = 0
    wins: int = 0
    losses: int = 0
    consecutive_losses: int = 0
    peak_equity: float = 0.0
    day: str = ""
    day_start_equity: float = 0.0
    realized_pnl_today_pct: float = 0.0

    def rolled_to(self, now: datetime, equity: float) -> UserStats:
        """The same stats seen from ``now``: a new UTC day resets the daily figures."""
        today = now.strftime("%Y-%m-%d")
        if self.day == today:
            return self
        return self.model_copy(
            update={
                "day": today,
                "day_start_equity": equity,
                "realized_pnl_today_pct": 0.0,
                "peak_equity": max(self.peak_equity, equity),
            }
        )


def user_stats_id(user_id: str) -> str:
    """Document id of a user's statistics."""
    return f"user-{user_id}"


def load_user_stats(state: StateStore, user_id: str, now: datetime, equity: float) -> UserStats:
    """Current stats for ``user_id`` as of ``now`` (fresh ones for a new user)."""
    doc = state.get(Collections.STATS, user_stats_id(user_id))
    stats = UserStats.model_validate(doc) if doc else UserStats(user_id=user_id)
    return stats.rolled_to(now, equity)
