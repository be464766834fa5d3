"""Per-user running statistics the risk gate needs (breakers, drawdown)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from prometheus_trader.ports import Document, Filter, StateStore
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


@dataclass(frozen=True)
class Tally:
    """Closed trades and wins of one group (a symbol, a strategy...)."""

    trades: int = 0
    wins: int = 0

    @property
    def win_rate(self) -> float:
        """Wins ÷ trades (0 when there is no trade)."""
        return self.wins / self.trades if self.trades else 0.0


def journal_since(state: StateStore, since: datetime) -> list[Document]:
    """Journal entries (one per closed trade) closed at or after ``since``."""
    # the journal stores closed_at as ISO-8601 UTC text, which sorts like the instant
    bound = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return state.query(Collections.JOURNAL, [Filter("closed_at", ">=", bound)])


def tally_by(entries: Iterable[Mapping[str, object]], field: str) -> dict[str, Tally]:
    """Trades and wins per value of ``field`` (``symbol``, ``strategy``...), from journal
    entries: aggregates are derived from per-trade facts, never kept in a shared counter."""
    counts: dict[str, list[int]] = {}
    for entry in entries:
        pnl = entry.get("pnl_pct")
        bucket = counts.setdefault(str(entry[field]), [0, 0])
        bucket[0] += 1
        bucket[1] += int(isinstance(pnl, int | float) and pnl > 0)
    return {key: Tally(trades=t, wins=w) for key, (t, w) in sorted(counts.items())}


def symbol_success_rates(state: StateStore, now: datetime, lookback: timedelta) -> dict[str, float]:
    """Win rate per symbol over the journal's last ``lookback`` (the ranker's 20 % input)."""
    return {
        symbol: tally.win_rate
        for symbol, tally in tally_by(journal_since(state, now - lookback), "symbol").items()
    }
