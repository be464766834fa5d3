"""Post-trade evaluation: PnL after fees, MFE/MAE, analysts, category, rating, lessons."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _trading_fixtures import T0, T0_MS, position

from prometheus_trader.domain.evaluation import evaluate_trade
from prometheus_trader.domain.journal import TradeCategory
from prometheus_trader.domain.signals import AnalystView, Direction
from prometheus_trader.domain.trading import ExitReason, Position, PositionStatus

pytestmark = pytest.mark.unit

VIEWS = [
    AnalystView(analyst="order_flow", direction=Direction.LONG, strength=0.8),
    AnalystView(analyst="technical", direction=Direction.SHORT, strength=0.4),
    AnalystView(analyst="sentiment", direction=None, strength=0.0),
]


def closed(
    exit_price: float,
    reason: ExitReason,
    minutes: float = 30,
    best: float | None = None,
    worst: float | None = None,
    direction: Direction = Direction.LONG,
    fees: float = 0.1,
) -> Position:
    stop = 98.0 if direction is Direction.LONG else 102.0
    return position(
        direction,
        stop=stop,
        amount=1.0,
        best_price=best if best is not None else 100.0,
        worst_price=worst if worst is not None else 100.0,
        entry_fee=fees / 2,
        exit_fee=fees / 2,
        status=PositionStatus.CLOSED,
        exit_price=exit_price,
        exit_reason=reason,
        closed_at=T0 + timedelta(minutes=minutes),
        closed_ms=T0_MS + int(minutes * 60_000),
    )


def test_take_profit_win_is_perfect() -> None:
    e = evaluate_trade(
        closed(104.0, ExitReason.TAKE_PROFIT, best=104.0, worst=99.0), VIEWS, "consensus", 1_000.0
    )
    # (104-100)*1 - 0.1 fees = 3.9 on 100 notional; 0.39% of 1000 equity
    assert e.pnl_pct == pytest.approx(3.9)
    assert e.equity_pnl_pct == pytest.approx(0.39)
    assert e.mfe_pct == pytest.approx(4.0) and e.mae_pct == pytest.approx(-1.0)
    assert e.analysts_right == ["order_flow"] and e.analysts_wrong == ["technical"]
    assert e.category is TradeCategory.PERFECT and e.rating == 5
    assert e.duration_s == 1800 and e.strategy == "consensus"
    assert any("3.90%" in line for line in e.lessons)


def test_gave_back_most_of_mfe_could_be_better() -> None:
    e = evaluate_trade(
        closed(100.5, ExitReason.TRAILING_STOP, best=103.0, worst=99.9), VIEWS, "s", 1_000.0
    )
    assert e.category is TradeCategory.COULD_BE_BETTER
    assert e.rating in (3, 4)
    assert any("gave back 83%" in line for line in e.lessons)


def test_stopped_at_plan_is_acceptable_loss() -> None:
    e = evaluate_trade(
        closed(98.0, ExitReason.STOP_LOSS, minutes=60, best=101.0, worst=98.0), VIEWS, "s", 1_000.0
    )
    assert e.category is TradeCategory.ACCEPTABLE_LOSS and e.rating == 2
    assert e.analysts_right == ["technical"] and e.analysts_wrong == ["order_flow"]


def test_loss_beyond_plan_is_bad_plan() -> None:
    e = evaluate_trade(
        closed(97.0, ExitReason.STOP_LOSS, minutes=60, best=101.0, worst=97.0), VIEWS, "s", 1_000.0
    )
    assert e.category is TradeCategory.BAD_PLAN and e.rating == 1
    assert any("exceeded the planned 2.00%" in line for line in e.lessons)


def test_quick_stop_without_mfe_is_bad_plan() -> None:
    e = evaluate_trade(
        closed(98.0, ExitReason.STOP_LOSS, minutes=3, best=100.05, worst=98.0), VIEWS, "s", 1_000.0
    )
    assert e.category is TradeCategory.BAD_PLAN
    assert any("never started" in line for line in e.lessons)


def test_short_mirrored_and_exit_extends_excursions() -> None:
    e = evaluate_trade(
        closed(95.0, ExitReason.TAKE_PROFIT, direction=Direction.SHORT), VIEWS, "s", 1_000.0
    )
    assert e.pnl_pct == pytest.approx(4.9)
    assert e.mfe_pct == pytest.approx(5.0)  # the tracker never saw 95; the exit did
    assert e.analysts_right == ["technical"]


def test_open_position_refused() -> None:
    with pytest.raises(ValueError):
        evaluate_trade(position(), VIEWS, "s", 1_000.0)
