"""Trading metrics shared by the daily reports, the run summary and backtests. Pure.

Inputs are plain: a list of ``ClosedTrade`` (quote-currency amounts) and an equity curve
``[(ts_ms, equity), …]``. Nothing here reads a store; see ``usecases.report`` for how a
run's positions, journal and candles become these inputs.

Definitions (docs/reports.md repeats them for readers):
- **net PnL** of a trade: gross price PnL − fees − funding paid, in quote currency.
- **win**: net PnL > 0. **win rate** = wins ÷ trades.
- **profit factor** = Σ net PnL of wins ÷ |Σ net PnL of losses| (None without losses).
- **R** (initial risk) = |entry − initial stop| × quantity, in quote currency: what the
  trade stood to lose at its stop. **R multiple** = net PnL ÷ R. **average R** = mean R
  multiple over the trades that had a stop. +1.0 R means "won what it risked".
- **expectancy** = mean net PnL per trade (= win rate × average win + loss rate ×
  average loss), in quote currency.
- **total return** = last equity ÷ first equity − 1 over the curve.
- **annualised return** = (1 + total return)^(365 ÷ days) − 1; only for periods of at
  least ``MIN_ANNUALISE_DAYS`` days (shorter periods extrapolate noise).
- **Sharpe** = mean ÷ sample standard deviation (ddof 1) of daily returns × √365;
  **Sortino** = mean ÷ downside deviation √mean(min(r, 0)²) × √365 (risk-free rate 0;
  crypto trades every day). Daily returns come from the equity at each UTC day's last
  point, days without points carried forward; None for fewer than ``MIN_RATIO_DAYS``.
- **max drawdown** = largest fall from a running peak of the equity curve, in % of that
  peak. The curve is marked to market when prices are given (``equity_curve``).
- **exposure** = % of the period with at least one position open (overlaps once).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.performance import (
    DAY_MS,
    EquityCurve,
    _daily_returns,
    max_drawdown_pct,
    sharpe_ratio,
    sortino_ratio,
)

MIN_ANNUALISE_DAYS = 7.0
MIN_RATIO_DAYS = 7  # Sharpe/Sortino need at least this many daily returns
Marks = Mapping[str, Sequence[tuple[int, float]]]  # symbol → [(ts_ms, price)], oldest first


class ClosedTrade(BaseModel):
    """One closed trade in quote-currency amounts (what every metric needs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trade_id: str
    user_id: str = ""
    symbol: str
    direction: Literal["long", "short"]
    strategy: str = ""
    opened_ms: int
    closed_ms: int
    quantity: float = Field(gt=0)
    entry_price: float = Field(gt=0)
    exit_price: float = Field(gt=0)
    stop_loss: float | None = Field(None, description="initial stop (defines R)")
    take_profits: list[float] = Field(default_factory=list)
    entry_fee: float = 0.0
    exit_fee: float = 0.0
    funding: float = Field(0.0, description="funding paid (negative: received), quote")
    pnl: float = Field(description="net realized PnL: gross − fees − funding, quote")
    exit_reason: str = ""
    analysts_right: list[str] = Field(default_factory=list)
    analysts_wrong: list[str] = Field(default_factory=list)
    category: str = Field("", description="the evaluator's post-trade class, if any")

    @property
    def sign(self) -> int:
        """+1 long, −1 short."""
        return 1 if self.direction == "long" else -1

    @property
    def fees(self) -> float:
        """Entry plus exit fee, quote."""
        return self.entry_fee + self.exit_fee

    @property
    def gross_pnl(self) -> float:
        """Price PnL before fees and funding, quote."""
        return self.pnl + self.fees + self.funding

    @property
    def notional(self) -> float:
        """Entry notional, quote."""
        return self.quantity * self.entry_price

    @property
    def risk(self) -> float | None:
        """R: quote lost at the initial stop (None without a stop or a zero distance)."""
        if self.stop_loss is None:
            return None
        r = abs(self.entry_price - self.stop_loss) * self.quantity
        return r if r > 0 else None

    @property
    def r_multiple(self) -> float | None:
        """Net PnL in units of R."""
        risk = self.risk
        return None if risk is None else self.pnl / risk

    def unrealized(self, mark: float) -> float:
        """Equity effect while open at ``mark``: price PnL minus the entry fee paid."""
        return self.sign * (mark - self.entry_price) * self.quantity - self.entry_fee


class Metrics(BaseModel):
    """Metrics of a set of trades; curve metrics are None without an equity curve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trades: int
    wins: int
    losses: int
    win_rate_pct: float | None
    net_pnl: float
    gross_pnl: float
    fees: float
    funding: float
    avg_win: float | None
    avg_loss: float | None
    best_trade: float | None
    worst_trade: float | None
    profit_factor: float | None
    expectancy: float | None
    avg_r: float | None
    start_equity: float | None = None
    end_equity: float | None = None
    total_return_pct: float | None = None
    annualised_return_pct: float | None = None
    sharpe: float | None = None
    sortino: float | None = None
    max_drawdown_pct: float | None = None
    exposure_pct: float | None = None
    period_days: float | None = None


class AnalystAccuracy(BaseModel):
    """How often one analyst's direction matched the trade's outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    right: int
    wrong: int
    accuracy_pct: float | None


class MetricsReport(BaseModel):
    """Everything the reports show: overall and broken down."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overall: Metrics
    by_user: dict[str, Metrics]
    by_strategy: dict[str, Metrics]
    by_exit_reason: dict[str, Metrics]
    by_analyst: dict[str, Metrics]
    analyst_accuracy: dict[str, AnalystAccuracy]


def compute_metrics(
    trades: Sequence[ClosedTrade],
    curve: EquityCurve | None = None,
    *,
    period_ms: tuple[int, int] | None = None,
) -> Metrics:
    """Trade metrics over ``trades``; curve metrics too when ``curve`` has ≥ 2 points."""
    pnls = [t.pnl for t in sorted(trades, key=lambda t: (t.closed_ms, t.trade_id))]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p <= 0]
    loss_sum = -sum(p for p in losses if p < 0)
    rs = [r for t in trades if (r := t.r_multiple) is not None]
    trade_part = {
        "trades": len(pnls),
        "wins": len(wins),
        "losses": len(losses),
        "win_rate_pct": len(wins) / len(pnls) * 100 if pnls else None,
        "net_pnl": sum(pnls),
        "gross_pnl": sum(t.gross_pnl for t in trades),
        "fees": sum(t.fees for t in trades),
        "funding": sum(t.funding for t in trades),
        "avg_win": _mean(wins),
        "avg_loss": _mean(losses),
        "best_trade": max(pnls) if pnls else None,
        "worst_trade": min(pnls) if pnls else None,
        "profit_factor": sum(wins) / loss_sum if loss_sum > 0 else None,
        "expectancy": _mean(pnls),
        "avg_r": _mean(rs),
    }
    if curve is None or len(curve) < 2:
        span = period_ms or _trade_span(trades)
        return Metrics(
            **trade_part,
            exposure_pct=exposure_pct(trades, span) if span else None,
            period_days=(span[1] - span[0]) / DAY_MS if span else None,
        )
    span = period_ms or (curve[0][0], curve[-1][0])
    days = (span[1] - span[0]) / DAY_MS
    first, last = curve[0][1], curve[-1][1]
    total = last / first - 1 if first > 0 else None
    daily = _daily_returns(list(curve))
    root = math.sqrt(365)
    return Metrics(
        **trade_part,
        start_equity=first,
        end_equity=last,
        total_return_pct=None if total is None else total * 100,
        annualised_return_pct=annualised_pct(total, days),
        sharpe=_times(sharpe_ratio(daily), root) if len(daily) >= MIN_RATIO_DAYS else None,
        sortino=_times(sortino_ratio(daily), root) if len(daily) >= MIN_RATIO_DAYS else None,
        max_drawdown_pct=max_drawdown_pct([e for _, e in curve]),
        exposure_pct=exposure_pct(trades, span),
        period_days=days,
    )


def annualised_pct(total_return: float | None, days: float) -> float | None:
    """Compound annual rate in % for a total return (a fraction) over ``days``."""
    if total_return is None or days < MIN_ANNUALISE_DAYS or total_return <= -1:
        return None
    growth: float = (1 + total_return) ** (365 / days)
    return (growth - 1) * 100


def equity_curve(
    start_equity: float,
    trades: Sequence[ClosedTrade],
    marks: Marks | None = None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> EquityCurve:
    """Equity over time: start + realized net PnL of closed trades + open trades marked
    at ``marks`` (price points per symbol; without them the curve is realized-only).

    Points: ``start_ms`` (default: first open), every open and close, every mark while
    a trade is open, ``end_ms``. Equal timestamps collapse to the last value.
    """
    ordered = sorted(trades, key=lambda t: (t.opened_ms, t.trade_id))
    lo = start_ms if start_ms is not None else (ordered[0].opened_ms if ordered else 0)
    hi = end_ms if end_ms is not None else max((t.closed_ms for t in ordered), default=lo)
    stamps = {lo, hi}
    for t in ordered:
        stamps.update((t.opened_ms, t.closed_ms))
        for ts, _ in (marks or {}).get(t.symbol, ()):
            if t.opened_ms < ts < t.closed_ms:
                stamps.add(ts)
    series = {s: _Prices(p) for s, p in (marks or {}).items()}
    by_close = sorted(range(len(ordered)), key=lambda i: ordered[i].closed_ms)
    next_open = next_close = 0
    realized = 0.0
    open_now: dict[int, ClosedTrade] = {}
    curve: EquityCurve = []
    for ts in sorted(s for s in stamps if lo <= s <= hi):
        while next_open < len(ordered) and ordered[next_open].opened_ms <= ts:
            open_now[next_open] = ordered[next_open]
            next_open += 1
        while next_close < len(by_close) and ordered[by_close[next_close]].closed_ms <= ts:
            closed = ordered[by_close[next_close]]
            realized += closed.pnl
            open_now.pop(by_close[next_close], None)
            next_close += 1
        unrealized = 0.0
        for t in open_now.values():
            prices = series.get(t.symbol)
            mark = prices.at(ts) if prices else None
            unrealized += t.unrealized(mark if mark is not None else t.entry_price)
        curve.append((ts, start_equity + realized + unrealized))
    return curve


def combine_curves(curves: Iterable[EquityCurve]) -> EquityCurve:
    """The sum of several equity curves (each carried forward; before its first point a
    curve counts with its first value)."""
    parts = [c for c in curves if c]
    stamps = sorted({ts for c in parts for ts, _ in c})
    steps = [_Prices(c) for c in parts]
    return [
        (ts, sum(_first_or(s.at(ts), c[0][1]) for s, c in zip(steps, parts, strict=True)))
        for ts in stamps
    ]


def drawdown_series(curve: EquityCurve) -> list[tuple[int, float]]:
    """(ts, drawdown %) at each point: how far below its running peak (≤ 0)."""
    peak = -math.inf
    out: list[tuple[int, float]] = []
    for ts, eq in curve:
        peak = max(peak, eq)
        out.append((ts, (eq / peak - 1) * 100 if peak > 0 else 0.0))
    return out


def exposure_pct(trades: Sequence[ClosedTrade], period: tuple[int, int]) -> float | None:
    """% of ``period`` with at least one trade open (overlapping trades counted once)."""
    lo, hi = period
    if hi <= lo:
        return None
    covered = 0
    end = lo
    for s, e in sorted((max(lo, t.opened_ms), min(hi, t.closed_ms)) for t in trades):
        s = max(s, end)
        if e > s:
            covered += e - s
            end = e
    return covered / (hi - lo) * 100


def breakdown(
    trades: Sequence[ClosedTrade], key: Callable[[ClosedTrade], Iterable[str]]
) -> dict[str, Metrics]:
    """Trade metrics per group; ``key`` gives each trade's groups (one or several)."""
    groups: dict[str, list[ClosedTrade]] = {}
    for t in trades:
        for g in key(t):
            groups.setdefault(g, []).append(t)
    return {g: compute_metrics(groups[g]) for g in sorted(groups)}


def analyst_accuracy(trades: Sequence[ClosedTrade]) -> dict[str, AnalystAccuracy]:
    """Per analyst: trades where its direction matched the outcome, and where it did not."""
    right: dict[str, int] = {}
    wrong: dict[str, int] = {}
    for t in trades:
        for a in t.analysts_right:
            right[a] = right.get(a, 0) + 1
        for a in t.analysts_wrong:
            wrong[a] = wrong.get(a, 0) + 1
    out: dict[str, AnalystAccuracy] = {}
    for a in sorted(set(right) | set(wrong)):
        r, w = right.get(a, 0), wrong.get(a, 0)
        out[a] = AnalystAccuracy(right=r, wrong=w, accuracy_pct=r / (r + w) * 100)
    return out


def metrics_report(
    trades: Sequence[ClosedTrade],
    curves: Mapping[str, EquityCurve] | None = None,
) -> MetricsReport:
    """Overall (on the sum of the users' curves) and per user, strategy, exit reason and
    analyst. ``curves`` maps user_id → that user's equity curve."""
    curves = curves or {}
    users = sorted({t.user_id for t in trades} | set(curves))
    return MetricsReport(
        overall=compute_metrics(trades, combine_curves(curves.values()) if curves else None),
        by_user={
            u: compute_metrics([t for t in trades if t.user_id == u], curves.get(u)) for u in users
        },
        by_strategy=breakdown(trades, lambda t: [t.strategy or "unknown"]),
        by_exit_reason=breakdown(trades, lambda t: [t.exit_reason or "unknown"]),
        by_analyst=breakdown(trades, lambda t: sorted({*t.analysts_right, *t.analysts_wrong})),
        analyst_accuracy=analyst_accuracy(trades),
    )


class _Prices:
    """Step lookup: the last price at or before a time."""

    def __init__(self, points: Sequence[tuple[int, float]]) -> None:
        self._ts = [p[0] for p in points]
        self._px = [p[1] for p in points]

    def at(self, ts: int) -> float | None:
        i = bisect.bisect_right(self._ts, ts) - 1
        return self._px[i] if i >= 0 else None


def _trade_span(trades: Sequence[ClosedTrade]) -> tuple[int, int] | None:
    if not trades:
        return None
    return min(t.opened_ms for t in trades), max(t.closed_ms for t in trades)


def _first_or(x: float | None, default: float) -> float:
    return default if x is None else x


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _times(x: float | None, factor: float) -> float | None:
    return None if x is None else x * factor
