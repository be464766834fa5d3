"""Account-level circuit breakers over time (SPEC §5.2): trip, cool down, resume.

:func:`observe_account` is the one place the running account numbers move forward: it is
called with the user's current equity whenever the system looks at the account (every
executor decision, every monitor cycle) and returns the new state plus every breaker
transition (trip or reset) with the numbers behind it.

Rules:

* **daily loss**: realized PnL today ≤ −``daily_loss_limit_pct`` trips it; it resets at
  the next UTC day (never by hand: it is the hard daily stop).
* **consecutive losses**: ``max_consecutive_losses`` losing trades in a row trip it; it
  resets by itself ``consecutive_loss_cooldown_minutes`` after the last loss (the count
  goes back to 0), or when the user asks to resume (``User.breakers_resume_requested_at``).
* **max drawdown**: equity ≥ ``max_drawdown_pct`` below the *true* peak equity (the
  highest equity ever observed, persisted) trips it; it resets only when the user asks
  to resume, which restarts the peak at the equity of that moment.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.trusted import copied
from prometheus_trader.domain.users import RiskLimits


class Breaker(StrEnum):
    """The account-level breakers."""

    DAILY_LOSS = "daily_loss"
    CONSECUTIVE_LOSSES = "consecutive_losses"
    MAX_DRAWDOWN = "max_drawdown"


class BreakerTransition(BaseModel):
    """One breaker tripped or reset, why, and the numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    breaker: Breaker
    action: str = Field(pattern="^(tripped|reset)$")
    reason: str
    at: datetime
    values: dict[str, float] = Field(default_factory=dict)


class AccountState(BaseModel):
    """The running numbers the breakers need (percent, counts; equity in quote)."""

    model_config = ConfigDict(extra="ignore")

    consecutive_losses: int = 0
    last_loss_at: datetime | None = None
    peak_equity: float = 0.0
    day: str = ""
    day_start_equity: float = 0.0
    realized_pnl_today_pct: float = 0.0
    tripped: dict[str, str] = Field(
        default_factory=dict, description="breaker -> ISO time it tripped (absent: not tripped)"
    )
    resumed_at: datetime | None = Field(None, description="last manual resume honoured")

    def drawdown_pct(self, equity: float) -> float:
        """Equity below the true peak, in % of the peak."""
        if self.peak_equity <= 0:
            return 0.0
        return max(0.0, (self.peak_equity - equity) / self.peak_equity * 100)

    def day_change_pct(self, equity: float) -> float:
        """Equity change since the start of the UTC day, in % (0 when unknown)."""
        if self.day_start_equity <= 0:
            return 0.0
        return (equity - self.day_start_equity) / self.day_start_equity * 100


def consecutive_resume_at(state: AccountState, limits: RiskLimits) -> datetime | None:
    """When the consecutive-loss breaker resumes by itself (None: not tripped)."""
    if state.consecutive_losses < limits.max_consecutive_losses or state.last_loss_at is None:
        return None
    return state.last_loss_at + timedelta(minutes=limits.consecutive_loss_cooldown_minutes)


def tripped_now(state: AccountState, limits: RiskLimits, equity: float) -> dict[Breaker, bool]:
    """Which breakers are tripped for this state and equity.

    A trip holds until its own reset rule, not merely until the numbers recover: the daily
    loss until the UTC day changes (the day roll clears it), the drawdown until the user
    resumes (which clears it), the streak while the count stays at the limit.
    """
    held = state.tripped
    return {
        Breaker.DAILY_LOSS: state.realized_pnl_today_pct <= -limits.daily_loss_limit_pct
        or held.get(Breaker.DAILY_LOSS.value, "")[:10] == state.day,
        Breaker.CONSECUTIVE_LOSSES: state.consecutive_losses >= limits.max_consecutive_losses,
        Breaker.MAX_DRAWDOWN: state.drawdown_pct(equity) >= limits.max_drawdown_pct
        or Breaker.MAX_DRAWDOWN.value in held,
    }


def observe_account(
    state: AccountState,
    limits: RiskLimits,
    now: datetime,
    equity: float,
    *,
    resume_requested_at: datetime | None = None,
) -> tuple[AccountState, list[BreakerTransition]]:
    """Move ``state`` forward to ``now`` at ``equity``; return it and the transitions."""
    today = utc_day(now)
    updates: dict[str, object] = {}
    held = dict(state.tripped)
    if state.day != today:
        updates.update(day=today, day_start_equity=equity, realized_pnl_today_pct=0.0)
        held.pop(Breaker.DAILY_LOSS.value, None)
    elif state.day_start_equity <= 0 < equity:
        updates["day_start_equity"] = equity  # the day was opened without an equity reading
    if equity > state.peak_equity:
        updates["peak_equity"] = equity
    reasons: dict[Breaker, str] = {}
    if resume_requested_at is not None and (
        state.resumed_at is None or resume_requested_at > state.resumed_at
    ):
        updates.update(resumed_at=resume_requested_at, consecutive_losses=0, peak_equity=equity)
        held.pop(Breaker.MAX_DRAWDOWN.value, None)
        reasons[Breaker.CONSECUTIVE_LOSSES] = "resumed by the user"
        reasons[Breaker.MAX_DRAWDOWN] = "resumed by the user (peak restarts at current equity)"
    # the sticky trips cleared by their reset rules above are judged afresh below
    new = copied(state, {**updates, "tripped": held})
    resume_at = consecutive_resume_at(new, limits)
    if resume_at is not None and now >= resume_at:
        new = copied(new, {"consecutive_losses": 0})
        reasons.setdefault(
            Breaker.CONSECUTIVE_LOSSES,
            f"cool-down of {limits.consecutive_loss_cooldown_minutes} min after the last loss",
        )
    reasons.setdefault(Breaker.DAILY_LOSS, "new UTC day")
    observed = new  # the numbers of every transition (built only when there is one)

    def values() -> dict[str, float]:
        return {
            "equity": equity,
            "peak_equity": observed.peak_equity,
            "drawdown_pct": observed.drawdown_pct(equity),
            "max_drawdown_pct": limits.max_drawdown_pct,
            "realized_today_pct": observed.realized_pnl_today_pct,
            "daily_loss_limit_pct": limits.daily_loss_limit_pct,
            "consecutive_losses": float(state.consecutive_losses),
            "max_consecutive_losses": float(limits.max_consecutive_losses),
            "day_start_equity": observed.day_start_equity,
        }

    transitions: list[BreakerTransition] = []
    tripped = dict(new.tripped)
    for breaker, on in tripped_now(new, limits, equity).items():
        was = breaker.value in state.tripped
        if on and not was:
            tripped[breaker.value] = now.isoformat()
            transitions.append(
                BreakerTransition(
                    breaker=breaker,
                    action="tripped",
                    reason=_trip_reason(breaker, new, limits, equity),
                    at=now,
                    values=values(),
                )
            )
        elif on:
            tripped.setdefault(breaker.value, state.tripped[breaker.value])
        elif was:
            tripped.pop(breaker.value, None)
            transitions.append(
                BreakerTransition(
                    breaker=breaker,
                    action="reset",
                    reason=reasons.get(breaker, ""),
                    at=now,
                    values=values(),
                )
            )
    if tripped != new.tripped:
        new = copied(new, {"tripped": tripped})
    return new, transitions


# (the instant, its day) last asked: one fan-out asks for one instant; one tuple, swapped
# whole, so a concurrent reader never pairs an instant with another's day
_last_day: list[tuple[datetime | None, str]] = [(None, "")]


def utc_day(now: datetime) -> str:
    """``now.strftime("%Y-%m-%d")`` (the day of ``now`` in its own timezone, UTC for ours),
    remembered for the last instant asked (the same object for every user of a fan-out)."""
    last = _last_day[0]
    if now is last[0]:
        return last[1]
    day = now.strftime("%Y-%m-%d")
    _last_day[0] = (now, day)
    return day


def record_trade(state: AccountState, closed_at: datetime, equity_pnl_pct: float) -> AccountState:
    """The state after one closed trade (its PnL in % of equity at entry)."""
    day = closed_at.strftime("%Y-%m-%d")
    base = state
    if state.day != day:
        # the first event of the day: the equity reading comes with the next observation
        base = state.model_copy(
            update={"day": day, "day_start_equity": 0.0, "realized_pnl_today_pct": 0.0}
        )
    won = equity_pnl_pct > 0
    return base.model_copy(
        update={
            "consecutive_losses": 0 if won else base.consecutive_losses + 1,
            "last_loss_at": base.last_loss_at if won else closed_at,
            "realized_pnl_today_pct": base.realized_pnl_today_pct + equity_pnl_pct,
        }
    )


def _trip_reason(breaker: Breaker, state: AccountState, limits: RiskLimits, equity: float) -> str:
    if breaker is Breaker.DAILY_LOSS:
        return (
            f"realized today {state.realized_pnl_today_pct:.2f}% <= "
            f"-{limits.daily_loss_limit_pct:.2f}%: paused until the next UTC day"
        )
    if breaker is Breaker.CONSECUTIVE_LOSSES:
        resume = consecutive_resume_at(state, limits)
        return (
            f"{state.consecutive_losses} consecutive losses (max "
            f"{limits.max_consecutive_losses}): paused until "
            f"{resume.isoformat() if resume else 'resumed'} or resumed by the user"
        )
    return (
        f"drawdown {state.drawdown_pct(equity):.2f}% from peak {state.peak_equity:.2f} >= "
        f"{limits.max_drawdown_pct:.2f}%: paused until resumed by the user"
    )
