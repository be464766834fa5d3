"""When :func:`evaluate_exit` provably holds: a price band and a time window per position.

After a position is evaluated (no exit), its tracking fields (best/worst/trail) are the
evaluation's. Evaluated again, it returns "hold" with the same tracking fields as long as

- every price it sees (the last price and every trade since the previous evaluation)
  stays inside ``[lo, hi]``: between worst and best (nothing new to track), and off the
  stop, the trail, the first take-profit and the profit-lock price (with a relative
  margin far larger than any rounding in the rules' own arithmetic);
- ``now`` is before ``until_ms`` (max hold, the tracking write that falls due) and not
  before ``from_ms`` (a position opened less than the adverse window ago asks its own
  adverse-move question), and the previous evaluation is not before ``opened_ms``;
- the symbol-wide rules stay silent for its direction: no order-flow reversal, fewer
  adverse moves than the smallest threshold (:func:`symbol_quiet`).

The band is conservative: outside it the full evaluation runs, so decisions are exactly
those of evaluating every position every cycle (``tests/unit/test_exit_bands.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_trader.domain.exits import ExitConfig, _order_flow_reversal
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trade_window import MINUTE_MS, SECOND_MS, TradeWindow
from prometheus_trader.domain.trading import Position

_REL = 1e-9  # relative price margin: the rules' rounding is ~1e-16 of the numbers
_TIME_MARGIN_MS = 1_000
_NEVER = 2**62


@dataclass(frozen=True, slots=True)
class HoldBand:
    """Where and when ``evaluate_exit`` provably holds and changes nothing (module doc)."""

    direction: Direction
    lo: float
    hi: float
    from_ms: int
    until_ms: int
    opened_ms: int


def hold_band(position: Position, config: ExitConfig, write_due_ms: int | None) -> HoldBand:
    """The band of a position as just evaluated (its tracking fields are the evaluation's).

    ``write_due_ms``: when the monitor's throttled tracking write falls due (None: none
    pending); the position must be evaluated then.
    """
    long = position.direction is Direction.LONG
    up, down = 1 + _REL, 1 - _REL
    # prices that end "hold" from below (long) / above (short), and the other side
    floors: list[float] = []
    ceilings: list[float] = []
    exits_below, exits_above = (floors, ceilings) if long else (ceilings, floors)
    if config.enable_stop_loss:
        exits_below.append(position.stop_loss)
    if config.enable_trailing_stop and position.trail_stop is not None:
        exits_below.append(position.trail_stop)
    if config.enable_take_profit and position.take_profits:
        exits_above.append(position.take_profits[0].price)
    lock = _lock_price(position, config)
    if lock is not None:
        exits_below.append(lock)
    lo_best, hi_best = (position.worst_price, position.best_price)
    if not long:
        lo_best, hi_best = position.best_price, position.worst_price
    lo = max([lo_best, *(p * up for p in floors)])
    hi = min([hi_best, *(p * down for p in ceilings)])
    until = _NEVER
    if config.enable_max_hold:
        limit = position.max_hold_minutes
        if config.max_hold_minutes is not None:
            limit = min(limit, config.max_hold_minutes)
        until = position.opened_ms + limit * MINUTE_MS - _TIME_MARGIN_MS
    if write_due_ms is not None:
        until = min(until, write_due_ms)
    adverse_ms = int(config.adverse_window_s * SECOND_MS)
    return HoldBand(
        direction=position.direction,
        lo=lo,
        hi=hi,
        from_ms=position.opened_ms + adverse_ms + _TIME_MARGIN_MS,
        until_ms=until,
        opened_ms=position.opened_ms,
    )


def _lock_price(position: Position, config: ExitConfig) -> float | None:
    """The profit-lock exit price, taking every ladder rung the best price may have
    reached (the highest lock among them: the one that fires first), or None."""
    if not (config.enable_profit_lock and config.profit_lock_ladder):
        return None
    lev = position.leverage if config.profit_lock_on_leveraged_return else 1.0
    best_gain = position.move_pct(position.best_price) * lev
    slack = 1e-9 * (1 + abs(best_gain))
    locks = [lock for level, lock in config.profit_lock_ladder if best_gain + slack >= level]
    if not locks:
        return None
    sign = position.direction.sign
    return position.entry_price * (1 + sign * max(locks) / (100 * lev))


def smallest_adverse_threshold(config: ExitConfig) -> int:
    """The fewest adverse moves that can trigger rule 2 at any profit."""
    return min([config.adverse_move_default, *(t for _, t in config.adverse_move_thresholds)])


def symbol_quiet(
    window: TradeWindow, direction: Direction, now_ms: int, config: ExitConfig
) -> bool:
    """Neither symbol-wide rule (order flow, adverse moves over the full window) can fire
    for a position in ``direction`` opened before the adverse window."""
    if config.enable_order_flow and _order_flow_reversal(direction, window, now_ms, config):
        return False
    if config.enable_adverse_moves:
        since = now_ms - int(config.adverse_window_s * SECOND_MS)
        if window.adverse_moves(direction, now_ms, since) >= smallest_adverse_threshold(config):
            return False
    return True


def price_span(window: TradeWindow, since_ms: int, now_ms: int) -> tuple[float, float] | None:
    """(low, high) of every price an evaluation at ``now_ms`` sees (the last price and
    the trades since ``since_ms``); None when there is no last price (nothing evaluated)."""
    price = window.last_price(now_ms)
    if price is None:
        return None
    rng = window.price_range(since_ms, now_ms)
    if rng is None:
        return price, price
    return min(price, rng[0]), max(price, rng[1])


def in_band(band: HoldBand, low: float, high: float, now_ms: int, since_ms: int) -> bool:
    """The band holds for prices ``[low, high]`` at ``now_ms`` (previous one: ``since_ms``)."""
    return (
        band.lo <= low
        and high <= band.hi
        and band.from_ms <= now_ms < band.until_ms
        and band.opened_ms <= since_ms
    )


__all__ = [
    "HoldBand",
    "hold_band",
    "in_band",
    "price_span",
    "smallest_adverse_threshold",
    "symbol_quiet",
]
