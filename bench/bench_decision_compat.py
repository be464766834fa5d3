"""bench/decision.py on a checkout from before the pure account API (session 16): the same
computation through the old functions, so the bench measures both back to back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from prometheus_trader.domain.breakers import (
    AccountState,
    BreakerTransition,
    consecutive_resume_at,
    observe_account,
)
from prometheus_trader.domain.planner import JournalEdge, journal_edge
from prometheus_trader.domain.portfolio import ladder_blocks_entries
from prometheus_trader.domain.users import User
from prometheus_trader.usecases.stats import UserStats


class AccountReading(NamedTuple):
    """As usecases.stats.AccountReading."""

    fields: dict[str, object]
    transitions: list[BreakerTransition]
    new_doc: dict[str, Any] | None
    stats: UserStats


def edge_from_journal(docs: Iterable[Mapping[str, Any]]) -> JournalEdge:
    """As usecases.portfolio.user_edge computes it."""
    return journal_edge([float(d["equity_pnl_pct"]) for d in docs])


def account_fields(
    doc: dict[str, Any] | None, user: User, now: datetime, equity: float
) -> AccountReading:
    """As usecases.stats.observe_user + risk_account_fields computed it."""
    stats = UserStats.model_validate(doc) if doc else UserStats(user_id=user.user_id)
    account, transitions = observe_account(
        stats, user.limits, now, equity, resume_requested_at=user.breakers_resume_requested_at
    )
    new = stats.model_copy(update=account.model_dump(include=set(AccountState.model_fields)))
    changed = doc is None or new != stats or bool(transitions)
    daily_drawdown = max(0.0, -new.day_change_pct(equity))
    fields = {
        "day_start_equity": new.day_start_equity,
        "peak_equity": max(new.peak_equity, equity),
        "realized_pnl_today_pct": new.realized_pnl_today_pct,
        "consecutive_losses": new.consecutive_losses,
        "consecutive_loss_resume_at": consecutive_resume_at(new, user.limits),
        "entries_blocked": ladder_blocks_entries(new.ladder_step_today(now), daily_drawdown),
        "daily_drawdown_pct": daily_drawdown,
        "breakers_tripped": sorted(new.tripped),
    }
    return AccountReading(
        fields, transitions, new.model_dump(mode="json") if changed else None, new
    )
