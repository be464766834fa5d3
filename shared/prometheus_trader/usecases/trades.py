"""A run's state documents → the plain inputs of the metrics: closed trades, starting
equity, breaker trips. Functions over documents (dicts) so that the run summary, the
daily reporter and backtests share them; ``load_*`` read them from a state store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from prometheus_trader.domain.market import TIMEFRAME_MS, MarketType
from prometheus_trader.domain.metrics import ClosedTrade
from prometheus_trader.domain.trading import RiskCode
from prometheus_trader.ports import Filter, MarketStore, SeriesKey, StateStore
from prometheus_trader.usecases.names import Collections

Doc = Mapping[str, Any]

# the account-level circuit breakers (SPEC §5); other risk codes judge one signal
BREAKER_CODES = frozenset(
    {
        RiskCode.DAILY_LOSS_BREAKER.value,
        RiskCode.CONSECUTIVE_LOSS_BREAKER.value,
        RiskCode.MAX_DRAWDOWN.value,
        RiskCode.KILL_SWITCH.value,
    }
)


class BreakerTrip(BaseModel):
    """A breaker that blocked a signal (or fired as an event), with its numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: str  # ISO 8601 UTC
    ts_ms: int
    user_id: str
    code: str
    detail: str
    values: dict[str, float]
    symbol: str = ""
    signal_id: str = ""


def closed_trades(
    positions: Iterable[Doc], journal: Iterable[Doc] = (), user_id: str | None = None
) -> list[ClosedTrade]:
    """Closed positions (with their journal entries for strategy and analysts)."""
    notes = {j["position_id"]: j for j in journal}
    out: list[ClosedTrade] = []
    for p in positions:
        if p.get("status") != "closed" or (user_id is not None and p["user_id"] != user_id):
            continue
        j = notes.get(p["id"], {})
        entry_fee = float(p.get("entry_fee") or 0.0)
        exit_fee = float(p.get("exit_fee") or 0.0)
        funding = float(p.get("funding") or 0.0)
        gross = (
            (float(p["exit_price"]) - float(p["entry_price"]))
            * float(p["amount"])
            * (1 if p["direction"] == "long" else -1)
        )
        out.append(
            ClosedTrade(
                trade_id=p["id"],
                user_id=p["user_id"],
                symbol=p["symbol"],
                direction=p["direction"],
                strategy=j.get("strategy", ""),
                opened_ms=int(p["opened_ms"]),
                closed_ms=int(p["closed_ms"]),
                quantity=float(p["amount"]),
                entry_price=float(p["entry_price"]),
                exit_price=float(p["exit_price"]),
                stop_loss=p.get("stop_loss"),
                take_profits=[float(tp["price"]) for tp in p.get("take_profits", [])],
                entry_fee=entry_fee,
                exit_fee=exit_fee,
                funding=funding,
                pnl=gross - entry_fee - exit_fee - funding,
                exit_reason=p.get("exit_reason") or "",
                analysts_right=list(j.get("analysts_right", [])),
                analysts_wrong=list(j.get("analysts_wrong", [])),
                category=j.get("category", ""),
            )
        )
    return sorted(out, key=lambda t: (t.closed_ms, t.trade_id))


def starting_equity(executions: Iterable[Doc], user_id: str) -> float | None:
    """The user's equity before the first sized plan (the executor's balance read)."""
    plans = sorted(
        (e["created_at"], e["decision"]["plan"]["equity"])
        for e in executions
        if e["user_id"] == user_id and ((e.get("decision") or {}).get("plan") or {}).get("equity")
    )
    return float(plans[0][1]) if plans else None


def breaker_trips(executions: Iterable[Doc], events: Iterable[Doc] = ()) -> list[BreakerTrip]:
    """Every breaker that blocked a decision (from the decision's failed checks), and
    every ``circuit_breaker`` event, oldest first."""
    trips: list[BreakerTrip] = []
    for e in executions:
        for check in (e.get("decision") or {}).get("checks", []):
            if check.get("passed") or check.get("code") not in BREAKER_CODES:
                continue
            trips.append(
                BreakerTrip(
                    at=e["created_at"],
                    ts_ms=_ms(e["created_at"]),
                    user_id=e["user_id"],
                    code=check["code"],
                    detail=check.get("detail", ""),
                    values={k: float(v) for k, v in (check.get("values") or {}).items()},
                    symbol=e.get("symbol", ""),
                    signal_id=e.get("signal_id", ""),
                )
            )
    for ev in events:
        if ev.get("type") != "circuit_breaker":
            continue
        payload = ev.get("payload") or {}
        trips.append(
            BreakerTrip(
                at=ev["created_at"],
                ts_ms=_ms(ev["created_at"]),
                user_id=ev.get("user_id") or "",
                code=str(payload.get("code") or payload.get("breaker") or "circuit_breaker"),
                detail=str(payload.get("detail") or ""),
                values={
                    k: float(v)
                    for k, v in payload.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                },
                symbol=str(payload.get("symbol") or ""),
            )
        )
    return sorted(trips, key=lambda t: (t.ts_ms, t.user_id, t.code, t.signal_id))


def load_closed_trades(state: StateStore, user_id: str) -> list[ClosedTrade]:
    """``closed_trades`` of one user from the state store."""
    where = [Filter("user_id", "==", user_id)]
    return closed_trades(
        state.query(Collections.POSITIONS, where), state.query(Collections.JOURNAL, where), user_id
    )


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


# one line per risk code, for summaries and reports (SPEC §5 has the rules)
REASON_EXPLANATIONS: dict[str, str] = {
    "signal_expired": "the signal's time to live ran out before the executor saw it",
    "user_paused": "the user is paused (by hand or by a breaker) and takes no new trades",
    "kill_switch": "the user's kill switch is on: no new trades, open ones closed",
    "no_stop_loss": "the plan had no usable stop-loss (missing, or on the wrong side)",
    "reward_risk_too_low": "distance to the targets ÷ distance to the stop is below the minimum",
    "position_too_large": "the position would exceed the user's maximum % of equity",
    "exposure_cap": "open positions plus this one would exceed the total exposure cap",
    "max_open_positions": "the user already holds the maximum number of positions",
    "already_in_symbol": "the user already has a position in this symbol",
    "daily_loss_breaker": "breaker: today's realized loss reached the daily loss limit",
    "consecutive_loss_breaker": "breaker: too many losing trades in a row (paused for review)",
    "max_drawdown": "breaker: equity fell from its peak by more than the allowed drawdown",
    "symbol_excluded": "the user excluded this symbol",
    "insufficient_margin": "free margin does not cover the margin and entry fee",
    "stale_data": "market data was too old or failed quality checks",
    "below_min_size": "the sized order is below the exchange's minimum amount or notional",
}


def explain(code: str) -> str:
    """The one-line explanation of a risk code (codes added later say so)."""
    return REASON_EXPLANATIONS.get(code, "no explanation recorded for this code yet")


def load_marks(
    market: MarketStore,
    exchange: str,
    market_type: MarketType,
    trades: Sequence[ClosedTrade],
    timeframe: str = "1m",
) -> dict[str, list[tuple[int, float]]]:
    """Close prices (at each bar's close time) while each trade was open, per symbol."""
    marks: dict[str, dict[int, float]] = {}
    for t in trades:
        key = SeriesKey(exchange, market_type, t.symbol)
        series = market.candles(key, timeframe, t.opened_ms, t.closed_ms)
        step = TIMEFRAME_MS.get(timeframe, 60_000)
        points = marks.setdefault(t.symbol, {})
        for ts, close in zip(series.ts_ms.tolist(), series.close.tolist(), strict=True):
            points[int(ts) + step] = float(close)
    return {s: sorted(p.items()) for s, p in sorted(marks.items())}
