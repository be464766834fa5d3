"""Performance metrics over closed trades and an equity curve (SPEC §7, §9). Pure.

Conventions:
- A trade's return is ``equity_pnl_pct`` (PnL after fees in % of equity at entry).
  Without an equity curve the curve is rebuilt by compounding those returns from 1.0
  in close-time order.
- Win rate, averages, best/worst, profit factor: from per-trade ``equity_pnl_pct``.
- ``avg_reward_risk`` is the realized payoff ratio: mean win ÷ |mean loss|.
  ``avg_r_multiple`` is the mean of ``equity_pnl_pct ÷ risk_pct`` where the planned risk
  is known.
- Sharpe and Sortino: with an equity curve, from **daily** returns (equity at each UTC
  day's last point, days without points carried forward so flat days count as 0%),
  annualised by √365 (crypto trades every day), risk-free rate 0. Without a curve, from
  **per-trade** returns, not annualised. ``returns_basis`` says which. Sortino's downside
  deviation is ``sqrt(mean(min(r, 0)²))`` over all returns. None when undefined.
- Exposure: % of the period with at least one position open (overlaps counted once).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.journal import JournalEntry

DAY_MS = 86_400_000
EquityCurve = list[tuple[int, float]]  # (ts_ms, equity), oldest first


class TradeResult(BaseModel):
    """The numbers of one closed trade that the metrics need."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    opened_ms: int
    closed_ms: int
    pnl_pct: float = Field(description="return on entry notional after fees, %")
    equity_pnl_pct: float = Field(description="return on equity at entry after fees, %")
    risk_pct: float | None = Field(None, description="planned risk, % of equity")

    @classmethod
    def from_journal(cls, entry: JournalEntry, risk_pct: float | None = None) -> TradeResult:
        """Build from a journal entry."""
        return cls(
            symbol=entry.symbol,
            opened_ms=int(entry.opened_at.timestamp() * 1000),
            closed_ms=int(entry.closed_at.timestamp() * 1000),
            pnl_pct=entry.pnl_pct,
            equity_pnl_pct=entry.equity_pnl_pct,
            risk_pct=risk_pct,
        )


class PerformanceReport(BaseModel):
    """Aggregate metrics; None where a metric is undefined (e.g. no losses)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trades: int
    wins: int
    losses: int
    win_rate_pct: float | None
    total_return_pct: float
    avg_trade_pct: float | None
    avg_win_pct: float | None
    avg_loss_pct: float | None
    avg_reward_risk: float | None
    avg_r_multiple: float | None
    profit_factor: float | None
    max_drawdown_pct: float
    sharpe: float | None
    sortino: float | None
    returns_basis: Literal["daily", "per_trade"]
    best_trade_pct: float | None
    best_trade_symbol: str | None
    worst_trade_pct: float | None
    worst_trade_symbol: str | None
    exposure_pct: float | None


class DailyReportMetrics(BaseModel):
    """What the daily reporter shows for one UTC day (week = 7 days, month = 30 days)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    day: date
    pnl_today_pct: float
    pnl_week_pct: float
    pnl_month_pct: float
    trades_today: int
    today: PerformanceReport
    month: PerformanceReport


def compute_performance(
    trades: list[TradeResult],
    equity_curve: EquityCurve | None = None,
    *,
    period_ms: tuple[int, int] | None = None,
) -> PerformanceReport:
    """Metrics over ``trades`` (any order) and an optional equity curve."""
    ordered = sorted(trades, key=lambda t: (t.closed_ms, t.opened_ms, t.symbol))
    rets = [t.equity_pnl_pct for t in ordered]
    wins = [r for r in rets if r > 0]
    losses = [r for r in rets if r <= 0]
    has_curve = equity_curve is not None and len(equity_curve) >= 2
    curve = equity_curve if equity_curve is not None and has_curve else _compound_curve(ordered)

    if has_curve and equity_curve is not None:
        basis: Literal["daily", "per_trade"] = "daily"
        sample = _daily_returns(equity_curve)
        annualise = math.sqrt(365)
    else:
        basis = "per_trade"
        sample = rets
        annualise = 1.0

    loss_sum = -sum(losses)
    best = max(ordered, key=lambda t: t.equity_pnl_pct) if ordered else None
    worst = min(ordered, key=lambda t: t.equity_pnl_pct) if ordered else None
    r_multiples = [
        t.equity_pnl_pct / t.risk_pct for t in ordered if t.risk_pct is not None and t.risk_pct > 0
    ]
    avg_win = _mean(wins)
    avg_loss = _mean(losses)
    return PerformanceReport(
        trades=len(rets),
        wins=len(wins),
        losses=len(losses),
        win_rate_pct=len(wins) / len(rets) * 100 if rets else None,
        total_return_pct=_total_return(curve),
        avg_trade_pct=_mean(rets),
        avg_win_pct=avg_win,
        avg_loss_pct=avg_loss,
        avg_reward_risk=(
            avg_win / -avg_loss
            if avg_win is not None and avg_loss is not None and avg_loss < 0
            else None
        ),
        avg_r_multiple=_mean(r_multiples),
        profit_factor=sum(wins) / loss_sum if loss_sum > 0 else None,
        max_drawdown_pct=max_drawdown_pct([e for _, e in curve]),
        sharpe=_scaled(sharpe_ratio(sample), annualise),
        sortino=_scaled(sortino_ratio(sample), annualise),
        returns_basis=basis,
        best_trade_pct=best.equity_pnl_pct if best else None,
        best_trade_symbol=best.symbol if best else None,
        worst_trade_pct=worst.equity_pnl_pct if worst else None,
        worst_trade_symbol=worst.symbol if worst else None,
        exposure_pct=_exposure_pct(ordered, period_ms or _span(equity_curve, ordered)),
    )


def daily_report_metrics(
    trades: list[TradeResult], equity_curve: EquityCurve | None, day: date
) -> DailyReportMetrics:
    """Metrics for UTC ``day`` and the 7/30 days ending with it (for the 00:00 report)."""
    end = int(datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC).timestamp() * 1000)
    starts = {n: end - n * DAY_MS for n in (1, 7, 30)}

    def closed_in(start: int) -> list[TradeResult]:
        return [t for t in trades if start <= t.closed_ms < end]

    def curve_in(start: int) -> EquityCurve | None:
        if not equity_curve:
            return None
        before = [p for p in equity_curve if p[0] <= start]
        inside = [p for p in equity_curve if start < p[0] < end]
        return ([before[-1]] if before else []) + inside

    def period_return(start: int) -> float:
        curve = curve_in(start)
        if curve and len(curve) >= 2:
            return _total_return(curve)
        return _total_return(_compound_curve(closed_in(start)))

    today = closed_in(starts[1])
    month = closed_in(starts[30])
    return DailyReportMetrics(
        day=day,
        pnl_today_pct=period_return(starts[1]),
        pnl_week_pct=period_return(starts[7]),
        pnl_month_pct=period_return(starts[30]),
        trades_today=len(today),
        today=compute_performance(today, curve_in(starts[1]), period_ms=(starts[1], end)),
        month=compute_performance(month, curve_in(starts[30]), period_ms=(starts[30], end)),
    )


def max_drawdown_pct(equity: list[float]) -> float:
    """Largest peak-to-trough fall of an equity series, in % of the peak (≥ 0)."""
    if not equity:
        return 0.0
    arr = np.asarray(equity, dtype=np.float64)
    peaks = np.maximum.accumulate(arr)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peaks > 0, (peaks - arr) / peaks * 100, 0.0)
    return float(max(0.0, dd.max()))


def sharpe_ratio(returns: list[float]) -> float | None:
    """Mean ÷ sample standard deviation (ddof 1); None for < 2 returns or zero spread."""
    if len(returns) < 2:
        return None
    arr = np.asarray(returns, dtype=np.float64)
    sd = float(arr.std(ddof=1))
    return float(arr.mean()) / sd if sd > 0 else None


def sortino_ratio(returns: list[float]) -> float | None:
    """Mean ÷ downside deviation ``sqrt(mean(min(r, 0)²))``; None if no downside."""
    if len(returns) < 2:
        return None
    arr = np.asarray(returns, dtype=np.float64)
    downside = float(np.sqrt(np.mean(np.minimum(arr, 0.0) ** 2)))
    return float(arr.mean()) / downside if downside > 0 else None


def _scaled(x: float | None, factor: float) -> float | None:
    return None if x is None else x * factor


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _compound_curve(ordered: list[TradeResult]) -> EquityCurve:
    start = ordered[0].opened_ms if ordered else 0
    curve: EquityCurve = [(start, 1.0)]
    equity = 1.0
    for t in ordered:
        equity *= 1 + t.equity_pnl_pct / 100
        curve.append((t.closed_ms, equity))
    return curve


def _total_return(curve: EquityCurve) -> float:
    if len(curve) < 2 or curve[0][1] <= 0:
        return 0.0
    return (curve[-1][1] / curve[0][1] - 1) * 100


def _daily_returns(curve: EquityCurve) -> list[float]:
    """% returns between consecutive UTC day closes (first day vs the first point)."""
    closes: dict[int, float] = {}
    for ts, eq in curve:
        closes[ts // DAY_MS] = eq  # later points of the same day overwrite earlier ones
    first_day, last_day = curve[0][0] // DAY_MS, curve[-1][0] // DAY_MS
    prev = curve[0][1]
    out: list[float] = []
    for day in range(first_day, last_day + 1):
        eq = closes.get(day, prev)
        out.append((eq / prev - 1) * 100 if prev > 0 else 0.0)
        prev = eq
    return out


def _span(curve: EquityCurve | None, trades: list[TradeResult]) -> tuple[int, int] | None:
    if curve and len(curve) >= 2:
        return curve[0][0], curve[-1][0]
    if trades:
        return min(t.opened_ms for t in trades), max(t.closed_ms for t in trades)
    return None


def _exposure_pct(trades: list[TradeResult], period: tuple[int, int] | None) -> float | None:
    if period is None or period[1] <= period[0]:
        return None
    lo, hi = period
    intervals = sorted((max(lo, t.opened_ms), min(hi, t.closed_ms)) for t in trades)
    covered = 0
    cur_start, cur_end = None, None
    for s, e in intervals:
        if e <= s:
            continue
        if cur_end is None or s > cur_end:
            if cur_start is not None and cur_end is not None:
                covered += cur_end - cur_start
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    if cur_start is not None and cur_end is not None:
        covered += cur_end - cur_start
    return covered / (hi - lo) * 100
