"""Portfolio rules, pure (domain.portfolio)."""

from __future__ import annotations

import pytest

from prometheus_trader.domain.portfolio import (
    LadderAction,
    OpenExposure,
    btc_dump_closes,
    ladder_blocks_entries,
    ladder_decision,
    pct_change,
    returns_correlation,
    worst_half,
)

pytestmark = pytest.mark.unit

POS = [
    OpenExposure(position_id="a", symbol="ETH/USDT:USDT", long=True, unrealized_pct=-1.0),
    OpenExposure(position_id="b", symbol="SOL/USDT:USDT", long=True, unrealized_pct=0.5),
    OpenExposure(position_id="c", symbol="XRP/USDT:USDT", long=False, unrealized_pct=-2.0),
]


@pytest.mark.parametrize(
    ("drawdown", "done", "action", "closed"),
    [
        (1.9, 0.0, None, None),
        (2.0, 0.0, LadderAction.ALERT, []),
        (2.5, 2.0, None, None),
        (3.0, 2.0, LadderAction.CLOSE_WORST_HALF, ["a", "c"]),
        (3.5, 3.0, None, None),
        (4.2, 3.0, LadderAction.CLOSE_ALL, ["a", "b", "c"]),
        (5.0, 0.0, LadderAction.CLOSE_ALL_AND_HALT, ["a", "b", "c"]),
        (6.0, 5.0, None, None),
    ],
)
def test_ladder_steps(
    drawdown: float, done: float, action: LadderAction | None, closed: list[str] | None
) -> None:
    decision = ladder_decision(drawdown, done, POS)
    if action is None:
        assert decision is None
    else:
        assert decision is not None
        assert (decision.action, decision.close) == (action, closed)


def test_worst_half_rounds_up_and_blocks() -> None:
    assert worst_half(POS[:1]) == ["a"]
    assert worst_half([]) == []
    assert ladder_blocks_entries(0.0, 2.9) is None
    assert "no new entries" in (ladder_blocks_entries(0.0, 3.0) or "")
    assert "next UTC day" in (ladder_blocks_entries(5.0, 0.0) or "")


def test_btc_dump_closes_correlated_longs_only() -> None:
    corr: dict[str, float | None] = {"ETH/USDT:USDT": 0.85, "SOL/USDT:USDT": 0.6}
    assert btc_dump_closes(-1.49, POS, corr) == []
    assert btc_dump_closes(-1.5, POS, corr) == ["a"]
    assert btc_dump_closes(None, POS, corr) == []


def test_pct_change_and_correlation() -> None:
    closes = [100.0, 101.0, 100.0, 99.0, 98.0, 98.5]
    assert pct_change(closes, 5) == pytest.approx(-1.5)
    assert pct_change(closes, 6) is None
    a = [1.0, 2.0, 1.5, 3.0, 2.5]
    assert returns_correlation(a, a) == pytest.approx(1.0)
    assert returns_correlation(a, [1.0] * 5) is None
