"""Metrics against an independent computation on a real run (tests/fixtures/run)."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prometheus_trader.domain import formatting as fmt
from prometheus_trader.domain.metrics import (
    ClosedTrade,
    compute_metrics,
    drawdown_series,
    equity_curve,
    metrics_report,
)
from prometheus_trader.usecases.trades import breaker_trips, closed_trades, starting_equity

pytestmark = pytest.mark.unit
RUN = Path(__file__).parents[1] / "fixtures" / "run"


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RUN / "state.json").read_text())
    return data


def _trade(pnl: float, opened: int, closed: int, **kw: Any) -> ClosedTrade:
    base: dict[str, Any] = {
        "trade_id": f"t{opened}",
        "symbol": "BTC/USDT:USDT",
        "direction": "long",
        "opened_ms": opened,
        "closed_ms": closed,
        "quantity": 1.0,
        "entry_price": 100.0,
        "exit_price": 100.0 + pnl,
        "stop_loss": 90.0,
        "pnl": pnl,
    }
    return ClosedTrade(**(base | kw))


# ------------------------------------------------------------ independent formulas
def _daily_closes(curve: list[tuple[int, float]]) -> list[float]:
    """Equity at each UTC calendar day's last point, gaps carried (written afresh)."""
    by_day: dict[Any, float] = {}
    for ts, eq in curve:
        by_day[datetime.fromtimestamp(ts / 1000, UTC).date()] = eq
    days = sorted(by_day)
    out, last = [], curve[0][1]
    d = days[0]
    while d <= days[-1]:
        last = by_day.get(d, last)
        out.append(last)
        d = d.fromordinal(d.toordinal() + 1)
    return out


def _empyrical(curve: list[tuple[int, float]]) -> dict[str, float]:
    closes = [curve[0][1], *_daily_closes(curve)]
    rets = [b / a - 1 for a, b in itertools.pairwise(closes)]
    mean = statistics.fmean(rets)
    downside = math.sqrt(statistics.fmean([min(r, 0.0) ** 2 for r in rets]))
    peak, mdd = -math.inf, 0.0
    for _, eq in curve:
        peak = max(peak, eq)
        mdd = max(mdd, 1 - eq / peak)
    return {
        "sharpe": mean / statistics.stdev(rets) * math.sqrt(365),
        "sortino": mean / downside * math.sqrt(365),
        "max_drawdown_pct": mdd * 100,
        "total_return_pct": (curve[-1][1] / curve[0][1] - 1) * 100,
    }


def test_metrics_match_an_independent_computation_on_a_real_run(state: dict[str, Any]) -> None:
    trades = closed_trades(state["positions"], state["journal"])
    assert len(trades) == 17
    for user in sorted({t.user_id for t in trades}):
        mine = [t for t in trades if t.user_id == user]
        start = starting_equity(state["executions"], user)
        assert start is not None
        # a real run spans < 2 days: a trade every 2 days gives a daily series long enough
        stretched = [
            t.model_copy(
                update={
                    "opened_ms": t.opened_ms + 2 * i * 86_400_000,
                    "closed_ms": t.closed_ms + 2 * i * 86_400_000,
                }
            )
            for i, t in enumerate(mine)
        ]
        curve = equity_curve(start, stretched)
        got = compute_metrics(stretched, curve)
        want = _empyrical(curve)
        for name, value in want.items():
            assert getattr(got, name) == pytest.approx(value, rel=1e-9), (user, name)
        pnls = [t.pnl for t in mine]
        wins = [p for p in pnls if p > 0]
        losses = [p for p in pnls if p <= 0]
        assert got.net_pnl == pytest.approx(
            sum(p["realized_pnl"] for p in state["positions"] if p["user_id"] == user), abs=1e-9
        )
        assert got.win_rate_pct == pytest.approx(len(wins) / len(pnls) * 100)
        assert got.expectancy == pytest.approx(statistics.fmean(pnls))
        if losses and wins:
            assert got.profit_factor == pytest.approx(sum(wins) / -sum(losses))
        fees = sum(
            p["entry_fee"] + p["exit_fee"] for p in state["positions"] if p["user_id"] == user
        )
        assert got.fees == pytest.approx(fees)
        rs = [
            (p["realized_pnl"]) / (abs(p["entry_price"] - p["stop_loss"]) * p["amount"])
            for p in state["positions"]
            if p["user_id"] == user
        ]
        assert got.avg_r == pytest.approx(statistics.fmean(rs))


def test_curve_is_marked_to_market_between_entry_and_exit() -> None:
    day = 86_400_000
    t = _trade(5.0, 0, 10 * day)  # ends +5 but was −20 in between
    marks = {"BTC/USDT:USDT": [(2 * day, 95.0), (5 * day, 80.0), (8 * day, 104.0)]}
    curve = equity_curve(1000.0, [t], marks)
    assert [e for _, e in curve] == [1000.0, 995.0, 980.0, 1004.0, 1005.0]
    m = compute_metrics([t], curve)
    assert m.max_drawdown_pct == pytest.approx(2.0)  # realized-only would say 0
    assert min(dd for _, dd in drawdown_series(curve)) == pytest.approx(-2.0)
    assert m.exposure_pct == pytest.approx(100.0)
    assert m.annualised_return_pct == pytest.approx((1.005 ** (365 / 10) - 1) * 100)


def test_r_multiple_and_breakdowns() -> None:
    a = _trade(20.0, 0, 1, exit_reason="take_profit", strategy="s1", analysts_right=["x"])
    b = _trade(-10.0, 2, 3, exit_reason="stop_loss", strategy="s1", analysts_wrong=["x"])
    c = _trade(-5.0, 4, 5, exit_reason="stop_loss", strategy="s2", stop_loss=None)
    rep = metrics_report([a, b, c])
    assert rep.overall.avg_r == pytest.approx((2.0 - 1.0) / 2)  # c has no stop: no R
    assert rep.overall.profit_factor == pytest.approx(20 / 15)
    assert rep.by_exit_reason["stop_loss"].trades == 2
    assert rep.by_strategy["s1"].net_pnl == pytest.approx(10.0)
    assert rep.analyst_accuracy["x"].accuracy_pct == pytest.approx(50.0)
    assert rep.by_analyst["x"].trades == 2


def test_breaker_trips_carry_their_numbers(state: dict[str, Any]) -> None:
    trips = breaker_trips(state["executions"], state["events"])
    codes = {t.code for t in trips}
    assert codes == {"consecutive_loss_breaker", "daily_loss_breaker"}
    assert len(trips) == 49  # the 49 breaker rejections of the sample
    consecutive = next(t for t in trips if t.code == "consecutive_loss_breaker")
    assert consecutive.values["consecutive_losses"] >= consecutive.values["max_consecutive_losses"]


def test_formatting_has_no_float_noise() -> None:
    assert fmt.num(3.8433311800000003) == "3.84"
    assert fmt.pct(-0.0000001) == "0.00 %"
    assert fmt.money(-50.09713320191048) == "-50.10 USDT"
    assert fmt.price(2550.25995) == "2,550.26"
    assert fmt.price(0.39827964) == "0.398280"
    assert fmt.pct(None) == fmt.DASH
    assert fmt.clean({"a": [0.1 + 0.2]}) == {"a": [0.3]}


def test_overlapping_trades_and_combined_curves() -> None:
    a = _trade(10.0, 0, 100, trade_id="a")
    b = _trade(-4.0, 50, 150, trade_id="b", symbol="ETH/USDT:USDT")
    curve = equity_curve(100.0, [a, b])  # realized-only: open trades at their entry price
    assert curve == [(0, 100.0), (50, 100.0), (100, 110.0), (150, 106.0)]
    assert compute_metrics([a, b], curve).exposure_pct == pytest.approx(100.0)
    assert compute_metrics([a], period_ms=(0, 200)).exposure_pct == pytest.approx(50.0)
    other = [(25, 50.0), (120, 60.0)]
    combined = metrics_report([a, b], {"u1": curve, "u2": other}).overall
    assert combined.start_equity == pytest.approx(150.0)  # u2 counts from its first value
    assert combined.end_equity == pytest.approx(166.0)
