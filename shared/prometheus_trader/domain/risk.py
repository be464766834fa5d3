"""Risk gate (SPEC §5.2): the only producer of an approved :class:`RiskDecision`.

:func:`evaluate_risk` runs *every* check, in a fixed order, and records each verdict with
its numbers, so a rejection always lists all of its reason codes. ``approved`` is True
only when every check passed.

Non-bypass contract: strategies and executors never construct ``RiskDecision`` themselves;
the executor takes the plan to execute only from ``evaluate_risk(...).plan``, which is
``None`` unless approved. (``RiskDecision`` is a plain model in ``domain.trading`` for
storage; an import-linter rule keeping strategy code from importing it would make this
mechanical.) :func:`assert_approved` lets an executor re-verify a decision it received
from elsewhere (e.g. a stored execution record) before placing any order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from math import copysign, isfinite

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.market import Instrument
from prometheus_trader.domain.planner import resize_plan
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.trading import (
    Position,
    PositionStatus,
    RiskCheck,
    RiskCode,
    RiskDecision,
    TradePlan,
)
from prometheus_trader.domain.trusted import trusted
from prometheus_trader.domain.users import RiskLimits, User

# Rule order; evaluate_risk records one RiskCheck per code in exactly this order.
CHECK_ORDER: tuple[RiskCode, ...] = (
    RiskCode.SIGNAL_EXPIRED,
    RiskCode.KILL_SWITCH,
    RiskCode.USER_PAUSED,
    RiskCode.SYMBOL_EXCLUDED,
    RiskCode.STALE_DATA,
    RiskCode.NO_STOP_LOSS,
    RiskCode.REWARD_RISK_TOO_LOW,
    RiskCode.ALREADY_IN_SYMBOL,
    RiskCode.MAX_OPEN_POSITIONS,
    RiskCode.DAILY_LOSS_BREAKER,
    RiskCode.CONSECUTIVE_LOSS_BREAKER,
    RiskCode.MAX_DRAWDOWN,
    RiskCode.BELOW_MIN_SIZE,
    RiskCode.POSITION_TOO_LARGE,
    RiskCode.EXPOSURE_CAP,
    RiskCode.INSUFFICIENT_MARGIN,
)

_HUGE = 1e18

# Size checks that shrink-to-fit can cure by reducing the amount.
_SIZE_CODES = (RiskCode.POSITION_TOO_LARGE, RiskCode.EXPOSURE_CAP, RiskCode.INSUFFICIENT_MARGIN)


class RiskContext(BaseModel):
    """The user's account state the gate judges a plan against (money in quote currency)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    now: datetime
    equity: float
    open_positions: list[Position] = Field(default_factory=list)
    day_start_equity: float
    peak_equity: float
    realized_pnl_today_pct: float = Field(0.0, description="realized PnL today, % of equity")
    consecutive_losses: int = Field(0, ge=0)
    data_quality_ok: bool = True
    data_age_s: float = Field(0.0, ge=0, description="age of the newest market data")
    max_data_age_s: float = Field(120.0, gt=0)
    free_margin: float
    consecutive_loss_resume_at: datetime | None = Field(
        None, description="when the consecutive-loss breaker resumes by itself"
    )
    entries_blocked: str | None = Field(
        None, description="why the daily drawdown ladder blocks new entries today, if it does"
    )
    daily_drawdown_pct: float = Field(0.0, description="equity below the day's start, %")
    breakers_tripped: list[str] = Field(
        default_factory=list, description="breakers still tripped (domain.breakers state)"
    )


class BreakerState(BaseModel):
    """Which account-level circuit breakers are tripped, with their numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    daily_loss: bool
    consecutive_losses: bool
    max_drawdown: bool
    realized_today_pct: float
    equity_change_today_pct: float
    drawdown_pct: float

    @property
    def any(self) -> bool:
        """True when any breaker is tripped."""
        return self.daily_loss or self.consecutive_losses or self.max_drawdown


def breaker_state(ctx: RiskContext, limits: RiskLimits) -> BreakerState:
    """Daily-loss (realized today), consecutive-loss and max-drawdown breakers."""
    drawdown = _pct_drop(ctx.peak_equity, ctx.equity)
    change_today = (
        (ctx.equity - ctx.day_start_equity) / ctx.day_start_equity * 100
        if ctx.day_start_equity > 0
        else 0.0
    )
    sticky = ctx.breakers_tripped  # a trip holds until its own reset rule
    # built without re-validation: booleans and floats of their types (validated inputs)
    return trusted(
        BreakerState,
        {
            "daily_loss": ctx.realized_pnl_today_pct <= -limits.daily_loss_limit_pct
            or "daily_loss" in sticky,
            "consecutive_losses": ctx.consecutive_losses >= limits.max_consecutive_losses,
            "max_drawdown": drawdown >= limits.max_drawdown_pct or "max_drawdown" in sticky,
            "realized_today_pct": float(ctx.realized_pnl_today_pct),
            "equity_change_today_pct": float(change_today),
            "drawdown_pct": float(drawdown),
        },
    )


def evaluate_risk(
    signal: OpportunitySignal,
    plan: TradePlan,
    user: User,
    ctx: RiskContext,
    instrument: Instrument,
    *,
    min_reward_risk: float | None = None,
) -> RiskDecision:
    """Judge ``plan`` (sized from ``signal`` for ``user``) against every rule.

    ``min_reward_risk`` is a per-strategy floor; the effective floor is the stricter of it
    and the user's. If a size check fails and ``user.limits.shrink_to_fit`` is set, the
    plan is shrunk to the largest size all size caps allow and *every* check re-runs on
    it (``shrunk=True``). The returned ``plan`` is None unless approved.
    """
    if (plan.signal_id, plan.user_id, plan.symbol) != (signal.id, user.user_id, signal.symbol):
        raise ValueError("plan does not belong to this signal and user")
    floor = user.limits.min_reward_risk
    if min_reward_risk is not None:
        floor = max(floor, min_reward_risk)
    checks = _run_checks(signal, plan, user, ctx, instrument, floor)
    failed = {c.code for c in checks if not c.passed}
    if failed and user.limits.shrink_to_fit and failed <= set(_SIZE_CODES):
        target_pct = _max_allowed_position_pct(plan, user.limits, ctx, instrument)
        if 0 < target_pct < plan.position_pct:
            shrunk = resize_plan(plan, instrument, target_pct)
            rechecked = _run_checks(signal, shrunk, user, ctx, instrument, floor)
            annotated = [_annotate_shrink(c, plan, shrunk, failed) for c in rechecked]
            approved = all(c.passed for c in annotated)
            return trusted(
                RiskDecision,
                {
                    "approved": approved,
                    "checks": annotated,
                    "plan": shrunk if approved else None,
                    "shrunk": True,
                },
            )
    approved = not failed
    # as RiskDecision(approved=..., checks=..., plan=...) would build it (shrunk unset)
    return trusted(
        RiskDecision,
        {
            "approved": approved,
            "checks": checks,
            "plan": plan if approved else None,
            "shrunk": False,
        },
        {"approved", "checks", "plan"},
    )


def assert_approved(
    decision: RiskDecision,
    signal: OpportunitySignal,
    user: User,
    ctx: RiskContext,
    instrument: Instrument,
) -> TradePlan:
    """Return the decision's plan only if the gate approves that exact plan now; else raise."""
    if not decision.approved or decision.plan is None:
        raise PermissionError("risk decision is not approved")
    fresh = evaluate_risk(signal, decision.plan, user, ctx, instrument)
    if not fresh.approved or fresh.shrunk:
        raise PermissionError(f"plan no longer passes the risk gate: {fresh.reasons}")
    return decision.plan


def _run_checks(
    signal: OpportunitySignal,
    plan: TradePlan,
    user: User,
    ctx: RiskContext,
    instrument: Instrument,
    min_rr: float,
) -> list[RiskCheck]:
    limits = user.limits
    sign = plan.direction.sign
    checks: list[RiskCheck] = []

    def add(code: RiskCode, passed: bool, detail: str, **values: float) -> None:
        checks.append(_check(code, passed, detail, values))

    # Checks whose every input is in their key are built once per key and shared (they
    # are immutable): every user of a fan-out judges one signal at one instant.
    checks.append(
        _memo(
            (RiskCode.SIGNAL_EXPIRED, signal.expires_at, ctx.now),
            lambda: _expiry_check(signal, ctx.now),
        )
    )
    add(
        RiskCode.KILL_SWITCH,
        not user.kill_switch,
        "kill switch on" if user.kill_switch else "kill switch off",
    )
    add(
        RiskCode.USER_PAUSED,
        not user.paused,
        f"user paused: {user.paused_reason or 'no reason given'}" if user.paused else "active",
    )
    excluded = {s.upper() for s in user.excluded_symbols}
    is_excluded = signal.symbol.upper() in excluded or instrument.base.upper() in excluded
    add(
        RiskCode.SYMBOL_EXCLUDED,
        not is_excluded,
        f"{signal.symbol} is excluded by the user" if is_excluded else "symbol allowed",
    )
    age, max_age = ctx.data_age_s, ctx.max_data_age_s
    checks.append(
        _memo(
            (RiskCode.STALE_DATA, ctx.data_quality_ok, *_exact(age), *_exact(max_age)),
            lambda: _stale_check(ctx),
        )
    )
    stop, entry, distance = plan.stop_loss, plan.entry_price, plan.stop_distance_pct
    if stop is None:
        add(RiskCode.NO_STOP_LOSS, False, "no stop-loss")
    else:
        # the plans of one signal share their stop and, mostly, their entry
        checks.append(
            _memo(
                (RiskCode.NO_STOP_LOSS, sign, *_exact(stop), *_exact(entry), *_exact(distance)),
                lambda: _stop_check(sign, stop, entry, distance),
            )
        )
    reward_risk = plan.reward_risk
    checks.append(
        _memo(
            (RiskCode.REWARD_RISK_TOO_LOW, *_exact(reward_risk), *_exact(min_rr)),
            lambda: _check(
                RiskCode.REWARD_RISK_TOO_LOW,
                reward_risk >= min_rr,
                f"reward:risk {reward_risk:.2f} vs minimum {min_rr:.2f}",
                {"reward_risk": reward_risk, "min_reward_risk": min_rr},
            ),
        )
    )
    open_positions = [p for p in ctx.open_positions if p.status is PositionStatus.OPEN]
    same = [p for p in open_positions if p.symbol == plan.symbol and p.exchange == plan.exchange]
    if not same:
        add(RiskCode.ALREADY_IN_SYMBOL, True, "no open position in the symbol")
    elif any(p.direction is not plan.direction for p in same):
        add(
            RiskCode.ALREADY_IN_SYMBOL,
            False,
            "opposite signal: close first",
            open_in_symbol=float(len(same)),
        )
    else:
        add(
            RiskCode.ALREADY_IN_SYMBOL,
            False,
            f"already {plan.direction.value} in {plan.symbol}",
            open_in_symbol=float(len(same)),
        )
    n_open, max_open = len(open_positions), limits.max_open_positions
    checks.append(
        _memo(
            (RiskCode.MAX_OPEN_POSITIONS, n_open, max_open),
            lambda: _check(
                RiskCode.MAX_OPEN_POSITIONS,
                n_open < max_open,
                f"{n_open} open of max {max_open}",
                {"open_positions": float(n_open), "max_open_positions": float(max_open)},
            ),
        )
    )
    breakers = breaker_state(ctx, limits)
    realized, change = breakers.realized_today_pct, breakers.equity_change_today_pct
    daily_limit, daily_dd = limits.daily_loss_limit_pct, ctx.daily_drawdown_pct
    blocked, daily_loss = ctx.entries_blocked, breakers.daily_loss
    checks.append(
        _memo(
            # most users have not traded today: no realized PnL, no change, no drawdown
            (
                RiskCode.DAILY_LOSS_BREAKER,
                *_exact(realized),
                *_exact(change),
                *_exact(daily_limit),
                *_exact(daily_dd),
                blocked,
                daily_loss,
            ),
            lambda: _check(
                RiskCode.DAILY_LOSS_BREAKER,
                not daily_loss and blocked is None,
                f"realized today {realized:.2f}% vs limit -{daily_limit:.2f}%"
                + (" (paused until next UTC day)" if daily_loss else "")
                + (f"; {blocked}" if blocked else ""),
                {
                    "realized_today_pct": realized,
                    "equity_change_today_pct": change,
                    "daily_loss_limit_pct": daily_limit,
                    "daily_drawdown_pct": daily_dd,
                    "ladder_blocked": float(blocked is not None),
                },
            ),
        )
    )
    resume_s = (
        (ctx.consecutive_loss_resume_at - ctx.now).total_seconds()
        if ctx.consecutive_loss_resume_at is not None
        else 0.0
    )
    losses, max_losses = ctx.consecutive_losses, limits.max_consecutive_losses
    streak = breakers.consecutive_losses
    checks.append(
        _memo(
            # resume_s: a timedelta's seconds or 0.0, never -0.0
            (RiskCode.CONSECUTIVE_LOSS_BREAKER, losses, max_losses, resume_s, streak),
            lambda: _check(
                RiskCode.CONSECUTIVE_LOSS_BREAKER,
                not streak,
                f"{losses} consecutive losses of max {max_losses}"
                + (
                    f" (paused; resumes in {resume_s / 60:.0f} min or when the user resumes)"
                    if streak
                    else ""
                ),
                {
                    "consecutive_losses": float(losses),
                    "max_consecutive_losses": float(max_losses),
                    "resumes_in_s": max(0.0, resume_s),
                },
            ),
        )
    )
    add(
        RiskCode.MAX_DRAWDOWN,
        not breakers.max_drawdown,
        f"drawdown {breakers.drawdown_pct:.2f}% from peak {ctx.peak_equity:.2f} vs max "
        f"{limits.max_drawdown_pct:.2f}%"
        + (" (paused until the user resumes)" if breakers.max_drawdown else ""),
        drawdown_pct=breakers.drawdown_pct,
        max_drawdown_pct=limits.max_drawdown_pct,
        peak_equity=ctx.peak_equity,
        equity=ctx.equity,
    )
    big_enough = (
        plan.amount > 0
        and plan.amount >= instrument.min_amount
        and plan.notional >= instrument.min_notional
    )
    add(
        RiskCode.BELOW_MIN_SIZE,
        big_enough,
        f"amount {plan.amount} (min {instrument.min_amount}), notional {plan.notional:.4g} "
        f"(min {instrument.min_notional})"
        + ("" if big_enough else (": " + "; ".join(plan.notes) if plan.notes else "")),
        amount=plan.amount,
        min_amount=instrument.min_amount,
        notional=plan.notional,
        min_notional=instrument.min_notional,
    )
    add(
        RiskCode.POSITION_TOO_LARGE,
        plan.position_pct <= limits.max_position_pct,
        f"position {plan.position_pct:.2f}% of equity vs max {limits.max_position_pct:.2f}%",
        position_pct=plan.position_pct,
        max_position_pct=limits.max_position_pct,
    )
    existing_pct = _open_exposure_pct(open_positions, ctx.equity)
    new_pct = plan.notional / ctx.equity * 100 if ctx.equity > 0 else float("inf")
    total_pct = existing_pct + new_pct
    add(
        RiskCode.EXPOSURE_CAP,
        total_pct <= limits.max_exposure_pct,
        f"exposure {existing_pct:.2f}% open + {new_pct:.2f}% new vs cap "
        f"{limits.max_exposure_pct:.2f}%",
        existing_exposure_pct=existing_pct,
        new_exposure_pct=new_pct if ctx.equity > 0 else 0.0,
        max_exposure_pct=limits.max_exposure_pct,
    )
    required = plan.margin + plan.notional * instrument.taker_fee
    add(
        RiskCode.INSUFFICIENT_MARGIN,
        required <= ctx.free_margin,
        f"margin + entry fee {required:.4g} vs free {ctx.free_margin:.4g}",
        required_margin=required,
        free_margin=ctx.free_margin,
    )
    return checks


def _check(code: RiskCode, passed: bool, detail: str, values: dict[str, float]) -> RiskCheck:
    """``RiskCheck(code=..., passed=..., detail=..., values=...)`` without re-validation
    (domain.trusted): the values are made floats here as validation would, the other
    fields are of their types by construction. A check without numbers is immutable and
    the same for every user (kill switch off, active...): built once, then shared."""
    if not values:
        key = (code, passed, detail)
        check = _NUMBERLESS.get(key)
        if check is None:
            check = trusted(
                RiskCheck, {"code": code, "passed": passed, "detail": detail, "values": {}}
            )
            if len(_NUMBERLESS) < _NUMBERLESS_MAX:
                _NUMBERLESS[key] = check
        return check
    for v in values.values():
        if type(v) is not float or not isfinite(v):
            # stored records are JSON: keep numbers finite (inf only arises with equity <= 0)
            values = {k: float(x) if isfinite(x) else _HUGE for k, x in values.items()}
            break
    return trusted(RiskCheck, {"code": code, "passed": passed, "detail": detail, "values": values})


def _expiry_check(signal: OpportunitySignal, now: datetime) -> RiskCheck:
    ttl_left = (signal.expires_at - now).total_seconds()
    return _check(
        RiskCode.SIGNAL_EXPIRED,
        not signal.is_expired(now),
        f"signal expires in {ttl_left:.0f}s" if ttl_left > 0 else "signal expired",
        {"seconds_left": ttl_left},
    )


def _stop_check(sign: int, stop: float, entry: float, distance_pct: float) -> RiskCheck:
    right_side = sign * (entry - stop) > 0
    return _check(
        RiskCode.NO_STOP_LOSS,
        right_side,
        f"stop {stop} is {distance_pct:.3f}% from entry"
        if right_side
        else f"stop {stop} is on the wrong side of entry {entry}",
        {"stop_loss": stop, "entry_price": entry, "stop_distance_pct": distance_pct},
    )


def _exact(x: float) -> tuple[float, type, float]:
    """A number as a memo key: equal keys are the same number of the same type (0.0 and
    -0.0, 1 and 1.0 are equal numbers but format and store differently)."""
    return x, type(x), copysign(1, x)


def _stale_check(ctx: RiskContext) -> RiskCheck:
    fresh = ctx.data_quality_ok and ctx.data_age_s <= ctx.max_data_age_s
    return _check(
        RiskCode.STALE_DATA,
        fresh,
        "data fresh"
        if fresh
        else (
            "data quality flagged"
            if not ctx.data_quality_ok
            else f"data {ctx.data_age_s:.0f}s old > {ctx.max_data_age_s:.0f}s"
        ),
        {
            "data_age_s": ctx.data_age_s,
            "max_data_age_s": ctx.max_data_age_s,
            "data_quality_ok": float(ctx.data_quality_ok),
        },
    )


def _memo(key: tuple[object, ...], build: Callable[[], RiskCheck]) -> RiskCheck:
    """The check of ``key`` (every input of the check), built once and then shared."""
    check = _MEMO.get(key)
    if check is None:
        check = build()
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()  # keys hold instants and ages: old ones are never asked again
        _MEMO[key] = check
    return check


_MEMO: dict[tuple[object, ...], RiskCheck] = {}
_MEMO_MAX = 4096
_NUMBERLESS: dict[tuple[RiskCode, bool, str], RiskCheck] = {}
_NUMBERLESS_MAX = 1024  # details carry a user's pause reason: bounded


def _open_exposure_pct(positions: list[Position], equity: float) -> float:
    """Entry notional of open positions in % of equity (inf when equity is not positive)."""
    notional = sum(p.notional for p in positions)
    if equity <= 0:
        return float("inf") if notional > 0 else 0.0
    return notional / equity * 100


def _max_allowed_position_pct(
    plan: TradePlan, limits: RiskLimits, ctx: RiskContext, instrument: Instrument
) -> float:
    """Largest position (% of the plan's equity) every size cap allows right now."""
    if ctx.equity <= 0 or plan.equity <= 0:
        return 0.0
    open_positions = [p for p in ctx.open_positions if p.status is PositionStatus.OPEN]
    room_exposure_pct = limits.max_exposure_pct - _open_exposure_pct(open_positions, ctx.equity)
    # margin + fee per unit of notional is 1/leverage + fee
    margin_notional = max(0.0, ctx.free_margin) / (1 / plan.leverage + instrument.taker_fee)
    room_margin_pct = margin_notional / ctx.equity * 100
    allowed_ctx_pct = min(limits.max_position_pct, room_exposure_pct, room_margin_pct)
    # caps are measured on ctx.equity; the plan's position_pct on plan.equity
    return allowed_ctx_pct * ctx.equity / plan.equity


def _annotate_shrink(
    check: RiskCheck, original: TradePlan, shrunk: TradePlan, failed_before: set[RiskCode]
) -> RiskCheck:
    if check.code not in failed_before:
        return check
    return check.model_copy(
        update={
            "detail": f"{check.detail} (shrunk from {original.position_pct:.2f}% "
            f"to {shrunk.position_pct:.2f}%)",
            "values": {**check.values, "original_position_pct": original.position_pct},
        }
    )


def _pct_drop(reference: float, value: float) -> float:
    if reference <= 0:
        return 0.0
    return max(0.0, (reference - value) / reference * 100)
