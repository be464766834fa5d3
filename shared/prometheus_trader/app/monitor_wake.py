"""When the embedded run's exit monitor must run its next cycle.

The worker runs a cycle every ``monitor_interval_seconds`` while a position is open; on
recorded data most of those cycles see nothing new (a bar's derived trades all become
visible when it closes) and decide nothing. A cycle that closed nothing reads the same
inputs at the next step unless one of these happens first, so the run sleeps until the
earliest of them and then runs the cycle at the first step of the worker's grid at or
after it (the cycle it would have run anyway, with the same ``now``):

* a trade of an open position's symbol (or of a pending scaled entry's) becomes visible:
  prices, the trade windows, resting stops and entry legs move only then;
* a real taker trade (``source == "trade"``) inside the order-flow rule's live window:
  while it is live, the flow ratios change as older trades age out, so no cycle is skipped;
* a position reaches its maximum hold time;
* a consecutive-loss breaker's cool-down ends (the reset is observed by the cycle);
* a pending scaled entry expires (its resting legs are cancelled).

The adverse-move count can only fall while no trade arrives, and the drawdown ladder and
breakers read an equity priced at the last visible trade; the UTC day rolls on a minute
boundary, where the run always runs a cycle. A cycle that closed or failed something is
followed by one at the next step, as before: its own writes are inputs of that cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prometheus_trader.domain.breakers import consecutive_resume_at
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.market import MINUTE_MS
from prometheus_trader.domain.trading import PositionStatus
from prometheus_trader.domain.users import User
from prometheus_trader.ports import Filter, StateStore
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.stats import UserStats, user_stats_id


class TradeClock(Protocol):
    """What the run's exchange tells about its trade stream (``ReplayExchange``)."""

    def next_visible_ms(self, symbols: list[str], after_ms: int, until_ms: int) -> int | None:
        """Earliest time in ``(after_ms, until_ms]`` a trade of ``symbols`` becomes visible."""

    def real_trade_between(self, symbols: list[str], after_ms: int, until_ms: int) -> bool:
        """Whether a recorded (``source == "trade"``) trade has ``after_ms < ts <= until``."""


@dataclass(frozen=True)
class WakeInputs:
    """What ``next_wake_ms`` reads from the store: the watched symbols and the times due
    by themselves (max hold, scaled-entry expiry, breaker cool-downs). A function of the
    documents alone: unchanged while the store is."""

    symbols: list[str]
    due: tuple[int, ...]


# the collections ``wake_inputs`` reads: its answer is the same while none of them changes
WAKE_COLLECTIONS = (
    Collections.POSITIONS,
    Collections.SCALED_ENTRIES,
    Collections.USERS,
    Collections.STATS,
)


def wake_inputs(
    state: StateStore,
    config: ExitConfig,
    cooldowns: Callable[[StateStore, set[str]], list[int]] | None = None,
) -> WakeInputs:
    """``next_wake_ms``'s reads of ``state`` (of ``WAKE_COLLECTIONS`` only).

    ``cooldowns``: ``breaker_cooldowns`` or a caller's memo of it (a function of the
    users' and stats documents and the user ids)."""
    positions = state.query(
        Collections.POSITIONS, [Filter("status", "==", PositionStatus.OPEN.value)]
    )
    scaled = state.query(Collections.SCALED_ENTRIES, [Filter("status", "==", "pending")])
    symbols = sorted({str(p["symbol"]) for p in positions} | {_scaled_symbol(d) for d in scaled})
    due: list[int] = []
    if config.enable_max_hold:
        for p in positions:
            limit = int(p["max_hold_minutes"])
            if config.max_hold_minutes is not None:
                limit = min(limit, config.max_hold_minutes)
            due.append(int(p["opened_ms"]) + limit * MINUTE_MS)
    due.extend(_ms(str(d["expires_at"])) for d in scaled)
    users = {str(p["user_id"]) for p in positions}
    due.extend((cooldowns or breaker_cooldowns)(state, users))
    return WakeInputs(symbols, tuple(due))


def next_wake_ms(
    state: StateStore,
    trades: TradeClock,
    config: ExitConfig,
    now_ms: int,
    until_ms: int,
    inputs: WakeInputs | None = None,
) -> int:
    """The earliest time in ``(now_ms, until_ms]`` at which the next cycle may decide
    something a cycle at ``now_ms`` did not (``until_ms`` when nothing is due before it).

    ``inputs``: ``wake_inputs(state, config)`` when the caller knows the store has not
    changed since it read them (the backtest), else they are read."""
    if inputs is None:
        inputs = wake_inputs(state, config)
    symbols = inputs.symbols
    live_ms = int(config.order_flow_window_s * 1000)
    if config.enable_order_flow and trades.real_trade_between(symbols, now_ms - live_ms, now_ms):
        return now_ms + 1  # the flow rule is live: every step counts
    due = [until_ms, *inputs.due]
    visible = trades.next_visible_ms(symbols, now_ms, until_ms)
    if visible is not None:
        due.append(visible)
    return min((d for d in due if d > now_ms), default=now_ms + 1)


def breaker_cooldowns(state: StateStore, user_ids: set[str]) -> list[int]:
    """When each user's consecutive-loss breaker resumes by itself (tripped ones only):
    read from ``Collections.USERS`` and ``Collections.STATS`` alone."""
    out: list[int] = []
    for user_id in sorted(user_ids):
        user_doc = state.get(Collections.USERS, user_id)
        stats_doc = state.get(Collections.STATS, user_stats_id(user_id))
        if user_doc is None or stats_doc is None:
            continue
        resume = consecutive_resume_at(
            UserStats.model_validate(stats_doc), User.model_validate(user_doc).limits
        )
        if resume is not None:
            out.append(int(resume.timestamp() * 1000))
    return out


def _scaled_symbol(doc: dict[str, Any]) -> str:
    plan = doc.get("plan") or {}
    return str(plan.get("symbol") or doc.get("symbol") or "")


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def next_cycle_ms(step_ms: int, wake_ms: int, interval_ms: int, grid_start_ms: int) -> int:
    """The first step of the worker's grid (``grid_start + k × interval``) after
    ``step_ms`` and at or after ``wake_ms``."""
    steps_to_wake = -(-(wake_ms - grid_start_ms) // interval_ms)  # ceil
    return max(step_ms + interval_ms, grid_start_ms + steps_to_wake * interval_ms)


__all__ = [
    "WAKE_COLLECTIONS",
    "TradeClock",
    "WakeInputs",
    "breaker_cooldowns",
    "next_cycle_ms",
    "next_wake_ms",
    "wake_inputs",
]
