"""Performance metrics and daily report metrics."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest
from _trading_fixtures import T0_MS
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_trader.domain.performance import (
    DAY_MS,
    TradeResult,
    compute_performance,
    daily_report_metrics,
    max_drawdown_pct,
    sharpe_ratio,
    sortino_ratio,
)

pytestmark = pytest.mark.unit
H = 3_600_000


def tr(i: int, pct: float, hours: float = 1.0, risk: float | None = 1.0) -> TradeResult:
    start = T0_MS + i * 4 * H
    return TradeResult(
        symbol=f"S{i}",
        opened_ms=start,
        closed_ms=start + int(hours * H),
        pnl_pct=pct * 2,
        equity_pnl_pct=pct,
        risk_pct=risk,
    )


def test_per_trade_metrics() -> None:
    trades = [tr(0, 2.0), tr(1, -1.0), tr(2, 3.0), tr(3, -1.0)]
    r = compute_performance(trades)
    assert (r.trades, r.wins, r.losses) == (4, 2, 2)
    assert r.win_rate_pct == 50.0
    assert r.total_return_pct == pytest.approx((1.02 * 0.99 * 1.03 * 0.99 - 1) * 100)
    assert r.avg_reward_risk == pytest.approx(2.5 / 1.0)
    assert r.profit_factor == pytest.approx(5.0 / 2.0)
    assert r.avg_r_multiple == pytest.approx(0.75)
    assert r.max_drawdown_pct == pytest.approx(1.0)
    assert r.best_trade_symbol == "S2" and r.worst_trade_pct == -1.0
    assert r.returns_basis == "per_trade"
    rets = [2.0, -1.0, 3.0, -1.0]
    mean = sum(rets) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in rets) / 3)
    assert r.sharpe == pytest.approx(mean / sd)
    assert r.sortino == pytest.approx(mean / math.sqrt(2 / 4))
    # 4 one-hour trades over a 13-hour span
    assert r.exposure_pct == pytest.approx(4 / 13 * 100)


def test_no_losses_profit_factor_undefined_and_empty() -> None:
    r = compute_performance([tr(0, 1.0), tr(1, 2.0)])
    assert r.profit_factor is None and r.avg_reward_risk is None
    empty = compute_performance([])
    assert empty.trades == 0 and empty.win_rate_pct is None and empty.total_return_pct == 0
    assert empty.sharpe is None


def test_daily_sharpe_from_equity_curve_carries_flat_days() -> None:
    day0 = (T0_MS // DAY_MS) * DAY_MS
    curve = [(day0, 100.0), (day0 + DAY_MS + 5, 110.0), (day0 + 3 * DAY_MS + 5, 99.0)]
    r = compute_performance([], curve)
    assert r.returns_basis == "daily"
    daily = [0.0, 10.0, 0.0, -10.0]
    assert r.sharpe == pytest.approx(sharpe_ratio(daily) * math.sqrt(365))  # type: ignore[operator]
    assert r.max_drawdown_pct == pytest.approx(10.0)
    assert r.total_return_pct == pytest.approx(-1.0)


def test_overlapping_exposure_counted_once() -> None:
    a = TradeResult(symbol="A", opened_ms=0, closed_ms=10, pnl_pct=0, equity_pnl_pct=0)
    b = TradeResult(symbol="B", opened_ms=5, closed_ms=15, pnl_pct=0, equity_pnl_pct=0)
    assert compute_performance([a, b], period_ms=(0, 20)).exposure_pct == pytest.approx(75.0)


def test_daily_report_metrics() -> None:
    day = date(2024, 5, 10)
    end = int(datetime(2024, 5, 11, tzinfo=UTC).timestamp() * 1000)
    curve = [
        (end - 40 * DAY_MS, 1000.0),
        (end - 20 * DAY_MS, 1100.0),
        (end - 3 * DAY_MS, 1000.0),
        (end - DAY_MS - 1, 1200.0),
        (end - H, 1260.0),
    ]
    trades = [
        TradeResult(
            symbol="X", opened_ms=end - 2 * H, closed_ms=end - H, pnl_pct=10, equity_pnl_pct=5.0
        ),
        TradeResult(
            symbol="Y",
            opened_ms=end - 5 * DAY_MS,
            closed_ms=end - 3 * DAY_MS,
            pnl_pct=-5,
            equity_pnl_pct=-2.0,
        ),
    ]
    m = daily_report_metrics(trades, curve, day)
    assert m.pnl_today_pct == pytest.approx(5.0)
    assert m.pnl_week_pct == pytest.approx((1260 / 1100 - 1) * 100)
    assert m.pnl_month_pct == pytest.approx((1260 / 1000 - 1) * 100)
    assert m.trades_today == 1 and m.today.win_rate_pct == 100.0
    assert m.month.trades == 2
    no_curve = daily_report_metrics(trades, None, day)
    assert no_curve.pnl_today_pct == pytest.approx(5.0)
    assert no_curve.pnl_week_pct == pytest.approx((1.05 * 0.98 - 1) * 100)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1, 1000), min_size=1, max_size=50))
def test_drawdown_bounds(equity: list[float]) -> None:
    dd = max_drawdown_pct(equity)
    assert 0 <= dd < 100
    if equity == sorted(equity):
        assert dd == 0
    brute = max(
        (max(equity[: i + 1]) - equity[i]) / max(equity[: i + 1]) * 100 for i in range(len(equity))
    )
    assert dd == pytest.approx(brute)


def test_sortino_undefined_without_downside() -> None:
    assert sortino_ratio([1.0, 2.0]) is None and sharpe_ratio([1.0]) is None
