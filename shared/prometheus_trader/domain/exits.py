"""Exit monitor rules (SPEC §6) as pure functions over a position and a trade window.

Price used everywhere: the **last trade price** at or before ``now_ms`` (any source).
Optionally (``since_ms``) the best/worst price also take the extremes of all trades since
the previous evaluation, so a spike between two 2-second cycles still tightens the trail.

Priority order of :func:`evaluate_exit` (the first rule that fires wins):

1. **Order-flow cascade reversal** (``rule=1``). Imbalance ratio = taker buy volume ÷
   taker sell volume over the last 1m, 5m and 15m, counting *only* trades with
   ``source == "trade"`` (a ``"bar"`` trade's side is a tick-rule guess, not a real
   aggressor). Long exits when ``r1m < 0.5 and r1m < r5m < r15m``; short when
   ``r1m > 2.0 and r1m > r5m > r15m``. The rule is "on a 15 s window": it is evaluated
   only while at least one real taker trade happened in the last ``order_flow_window_s``
   (a live reversal, not a stale one), and never when a window has no real volume.
2. **Consecutive adverse price moves** (``rule=2``). Moves are between successive
   *distinct* prices (equal prices are skipped), counted backwards from the latest tick
   while they go against the position; only moves ending after the position opened and
   inside the last ``adverse_window_s`` count. Exit when the count reaches the threshold
   for the current (unleveraged) profit: < 0.3% → 5, < 1% → 3, < 2% → 2, else 1.
3. **Levels** (``rule=3``), in this order: trailing stop, stop-loss, first take-profit
   level, profit-lock ladder, max hold time. When the price is through both the trailing
   stop and the stop-loss, the tighter level (the one crossed first) is the reason.
   The trail **arms** once the best move reaches ``trail_arm_r`` R (R = the initial stop
   distance, k×ATR by the synthesizer), then follows the best price at ``trail_width_r``
   R (so its width scales with volatility; never tighter than the position's trailing
   %), and only tightens. ``trail_arm_r = 0`` with ``trail_width_r = None`` is the old
   fixed trail active from entry. The profit-lock ladder is measured on the return on
   margin (move × leverage) by default, the SPEC's "+10% → breakeven" reading.

Rules 1 and 2 are individually switchable: rule 2 with 5 ticks is trigger-happy on
coarse (bar-derived) prices.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trade_window import MINUTE_MS, SECOND_MS, TradeWindow
from prometheus_trader.domain.trading import ExitReason, Position

# Defaults chosen on binance-usdm-2025-05 (docs/decisions.md, scripts/eval_exits.py).
TRAIL_ARM_R = 0.5
TRAIL_WIDTH_R = 1.0

_HUGE = 1e18  # stands in for an infinite ratio in stored (JSON) details


class ExitConfig(BaseModel):
    """Exit-rule parameters; percentages are price moves from entry unless stated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trailing_stop_pct: float = Field(
        0.5, gt=0, description="used when the position carries no trailing % of its own"
    )
    trail_arm_r: float = Field(
        TRAIL_ARM_R,
        ge=0,
        description="the trail arms once the best move reaches this many R (initial stop "
        "distances); 0: active from entry",
    )
    trail_width_r: float | None = Field(
        TRAIL_WIDTH_R,
        gt=0,
        description="trail distance in R (the stop is k×ATR, so the width scales with "
        "volatility); the position's trailing % is then a floor. None: the fixed trailing %",
    )
    profit_lock_ladder: list[tuple[float, float]] = Field(
        default_factory=lambda: [(10.0, 0.0), (20.0, 10.0), (50.0, 30.0)],
        description="(gain %, locked %): once the best gain reaches it, exit at the lock",
    )
    profit_lock_on_leveraged_return: bool = Field(
        True, description="measure the ladder on return on margin (move × leverage)"
    )
    adverse_move_thresholds: list[tuple[float, int]] = Field(
        default_factory=lambda: [(0.3, 5), (1.0, 3), (2.0, 2)],
        description="(profit below %, ticks) ascending; above the last: adverse_move_default",
    )
    adverse_move_default: int = Field(1, ge=1)
    adverse_window_s: float = Field(15.0, gt=0)
    order_flow_window_s: float = Field(15.0, gt=0)
    order_flow_long_exit_ratio: float = Field(0.5, gt=0)
    order_flow_short_exit_ratio: float = Field(2.0, gt=0)
    enable_order_flow: bool = True
    enable_adverse_moves: bool = True
    enable_trailing_stop: bool = True
    enable_stop_loss: bool = True
    enable_take_profit: bool = True
    enable_profit_lock: bool = True
    enable_max_hold: bool = True
    max_hold_minutes: int | None = Field(
        None, ge=1, description="caps the position's own max hold when set"
    )

    def adverse_threshold(self, profit_pct: float) -> int:
        """Adverse ticks that trigger an exit at the current profit (%)."""
        for below, ticks in sorted(self.adverse_move_thresholds):
            if profit_pct < below:
                return ticks
        return self.adverse_move_default


class ExitDecision(BaseModel):
    """Close the position: why (rule 1–3 + reason) and the numbers behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: ExitReason
    rule: int = Field(ge=1, le=3)
    price: float | None
    detail: dict[str, float | str]


class ExitEvaluation(BaseModel):
    """Updated tracking fields for the position, plus an exit decision if any."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    last_price: float | None
    best_price: float
    worst_price: float
    trail_stop: float | None = Field(description="None until the trail arms")
    profit_pct: float | None = Field(description="current unleveraged move from entry, %")
    adverse_moves: int
    adverse_threshold: int | None
    exit: ExitDecision | None = None

    def apply(self, position: Position) -> Position:
        """The position with its tracking fields (best/worst/trail) updated; not closed."""
        return position.model_copy(
            update={
                "best_price": self.best_price,
                "worst_price": self.worst_price,
                "trail_stop": self.trail_stop,
            }
        )


def evaluate_exit(
    position: Position,
    window: TradeWindow,
    now_ms: int,
    config: ExitConfig,
    *,
    since_ms: int | None = None,
) -> ExitEvaluation:
    """Apply the exit rules in priority order (module doc) to ``position`` at ``now_ms``.

    ``since_ms`` (time of the previous evaluation) lets the best/worst price include every
    trade since then, not only the last one. Reads the window; mutates nothing.
    """
    d = position.direction
    sign = d.sign
    price = window.last_price(now_ms)

    best, worst = position.best_price, position.worst_price
    observed: list[float] = [] if price is None else [price]
    if since_ms is not None:
        rng = window.price_range(max(since_ms, position.opened_ms - 1), now_ms)
        if rng is not None:
            observed.extend(rng)
    for p in observed:
        if sign * (p - best) > 0:
            best = p
        if sign * (p - worst) < 0:
            worst = p

    trail_pct = trail_width_pct(position, config)
    trail: float | None = position.trail_stop
    r_pct = _stop_distance_pct(position)
    armed = trail is not None or position.move_pct(best) >= config.trail_arm_r * r_pct
    if armed:
        if config.trail_arm_r <= 0 and trail is None:
            trail = position.entry_price * (1 - sign * trail_pct / 100)
        candidate = best * (1 - sign * trail_pct / 100)
        trail = candidate if trail is None else _tighter(d, trail, candidate)

    profit = position.move_pct(price) if price is not None else None
    adverse = window.adverse_moves(
        d, now_ms, max(position.opened_ms - 1, now_ms - int(config.adverse_window_s * SECOND_MS))
    )
    threshold = config.adverse_threshold(profit) if profit is not None else None

    def result(exit_: ExitDecision | None) -> ExitEvaluation:
        return ExitEvaluation(
            last_price=price,
            best_price=best,
            worst_price=worst,
            trail_stop=trail,
            profit_pct=profit,
            adverse_moves=adverse,
            adverse_threshold=threshold,
            exit=exit_,
        )

    if config.enable_order_flow:
        flow = _order_flow_reversal(d, window, now_ms, config)
        if flow is not None:
            return result(
                ExitDecision(
                    reason=ExitReason.ORDER_FLOW_REVERSAL, rule=1, price=price, detail=flow
                )
            )
    if config.enable_adverse_moves and threshold is not None and adverse >= threshold:
        return result(
            ExitDecision(
                reason=ExitReason.ADVERSE_MOVES,
                rule=2,
                price=price,
                detail={
                    "adverse_moves": float(adverse),
                    "threshold": float(threshold),
                    "profit_pct": profit if profit is not None else 0.0,
                    "window_s": config.adverse_window_s,
                },
            )
        )
    level = _level_exit(position, price, best, trail, now_ms, config)
    return result(level)


def trail_width_pct(position: Position, config: ExitConfig) -> float:
    """Trail distance from the best price, in %: ``trail_width_r`` × the initial stop
    distance (never tighter than the position's trailing %), or the fixed trailing %."""
    floor = position.trailing_stop_pct if position.trailing_stop_pct > 0 else None
    if config.trail_width_r is None:
        return floor if floor is not None else config.trailing_stop_pct
    width = config.trail_width_r * _stop_distance_pct(position)
    return max(width, floor or 0.0) if width > 0 else (floor or config.trailing_stop_pct)


def _stop_distance_pct(position: Position) -> float:
    """The initial stop distance (1 R) in % of entry."""
    return abs(position.entry_price - position.stop_loss) / position.entry_price * 100


def _tighter(direction: Direction, a: float, b: float) -> float:
    """The stop closer to (or further into) profit: higher for a long, lower for a short."""
    return max(a, b) if direction is Direction.LONG else min(a, b)


def _finite(x: float | None) -> float:
    if x is None:
        return -1.0  # "no data" marker in stored details
    return x if math.isfinite(x) else _HUGE


def _order_flow_reversal(
    direction: Direction, window: TradeWindow, now_ms: int, config: ExitConfig
) -> dict[str, float | str] | None:
    live_ms = int(config.order_flow_window_s * SECOND_MS)
    live_trades, r1, r5, r15 = window.flow_ratios(live_ms, now_ms)
    if live_trades == 0:
        return None
    if r1 is None or r5 is None or r15 is None:
        return None
    if direction is Direction.LONG:
        fired = r1 < config.order_flow_long_exit_ratio and r1 < r5 < r15
        limit = config.order_flow_long_exit_ratio
    else:
        fired = r1 > config.order_flow_short_exit_ratio and r1 > r5 > r15
        limit = config.order_flow_short_exit_ratio
    if not fired:
        return None
    buy1, sell1 = window.buy_sell_volume(MINUTE_MS, now_ms)
    return {
        "ratio_1m": _finite(r1),
        "ratio_5m": _finite(r5),
        "ratio_15m": _finite(r15),
        "ratio_limit": limit,
        "buy_volume_1m": buy1,
        "sell_volume_1m": sell1,
        "live_trades": float(live_trades),
        "window_s": config.order_flow_window_s,
    }


def _level_exit(
    position: Position,
    price: float | None,
    best: float,
    trail: float | None,
    now_ms: int,
    config: ExitConfig,
) -> ExitDecision | None:
    d = position.direction
    sign = d.sign
    entry = position.entry_price
    if price is not None:
        move = position.move_pct(price)
        trail_hit = (
            config.enable_trailing_stop and trail is not None and sign * (price - trail) <= 0
        )
        stop_hit = config.enable_stop_loss and sign * (price - position.stop_loss) <= 0
        if trail_hit or stop_hit:
            # both crossed: the tighter level was crossed first on the way
            stop_is_tighter = trail is None or sign * (position.stop_loss - trail) > 0
            if stop_hit and (not trail_hit or stop_is_tighter):
                return ExitDecision(
                    reason=ExitReason.STOP_LOSS,
                    rule=3,
                    price=price,
                    detail={"stop_loss": position.stop_loss, "price": price, "move_pct": move},
                )
            return ExitDecision(
                reason=ExitReason.TRAILING_STOP,
                rule=3,
                price=price,
                detail={
                    "trail_stop": trail if trail is not None else 0.0,
                    "best_price": best,
                    "price": price,
                    "move_pct": move,
                },
            )
        if config.enable_take_profit and position.take_profits:
            target = position.take_profits[0].price
            if sign * (price - target) >= 0:
                return ExitDecision(
                    reason=ExitReason.TAKE_PROFIT,
                    rule=3,
                    price=price,
                    detail={"take_profit": target, "price": price, "move_pct": move},
                )
        if config.enable_profit_lock and config.profit_lock_ladder:
            lev = position.leverage if config.profit_lock_on_leveraged_return else 1.0
            best_gain = position.move_pct(best) * lev
            reached = [lvl for lvl in sorted(config.profit_lock_ladder) if best_gain >= lvl[0]]
            if reached:
                gain_level, lock = reached[-1]
                if move * lev <= lock:
                    return ExitDecision(
                        reason=ExitReason.PROFIT_LOCK,
                        rule=3,
                        price=price,
                        detail={
                            "gain_level_pct": gain_level,
                            "locked_pct": lock,
                            "best_gain_pct": best_gain,
                            "current_pct": move * lev,
                            "lock_price": entry * (1 + sign * lock / (100 * lev)),
                        },
                    )
    if config.enable_max_hold:
        limit = position.max_hold_minutes
        if config.max_hold_minutes is not None:
            limit = min(limit, config.max_hold_minutes)
        held_min = (now_ms - position.opened_ms) / MINUTE_MS
        if held_min >= limit:
            return ExitDecision(
                reason=ExitReason.MAX_HOLD,
                rule=3,
                price=price,
                detail={"held_minutes": held_min, "max_hold_minutes": float(limit)},
            )
    return None
