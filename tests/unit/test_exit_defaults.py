"""The default exit rules (issue 11): the trail arms after 0.5R, trails 1R behind (so its
width scales with the ATR-based stop), the profit-lock ladder is on return on margin."""

from __future__ import annotations

import pytest
from _trading_fixtures import T0_MS, position, trade

from prometheus_trader.domain.exits import ExitConfig, evaluate_exit
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trade_window import TradeWindow
from prometheus_trader.domain.trading import ExitReason

pytestmark = pytest.mark.unit
S = 1_000
LEVELS = ExitConfig(enable_order_flow=False, enable_adverse_moves=False)


def _walk(prices: list[float], stop: float, direction: Direction = Direction.LONG) -> list:  # type: ignore[type-arg]
    pos = position(direction, stop=stop, tps=(200.0 if direction is Direction.LONG else 1.0,))
    pos = pos.model_copy(update={"trailing_stop_pct": 0.1})
    w = TradeWindow()
    out = []
    for i, p in enumerate(prices):
        now = T0_MS + (i + 1) * 2 * S
        w.add([trade(now, p, trade_id=f"t{i}")])
        ev = evaluate_exit(pos, w, now, LEVELS, since_ms=now - 2 * S)
        out.append(ev)
        if ev.exit is not None:
            break
        pos = ev.apply(pos)
    return out


def test_no_trail_before_half_r_then_one_r_behind_the_best() -> None:
    # entry 100, stop 98: R = 2 %. Up 0.9 % (< 0.5R): no trail, a dip back is no exit
    evs = _walk([100.9, 99.2], stop=98.0)
    assert [e.trail_stop for e in evs] == [None, None] and evs[-1].exit is None
    # up 1 % (= 0.5R): armed 1R (2 %) below the best
    # (best +1.5 % stays under the ladder's first step: 7.5 % on margin at 5x)
    evs = _walk([101.0, 101.5, 99.6, 99.4], stop=98.0)
    assert evs[0].trail_stop == pytest.approx(101.0 * 0.98)
    assert evs[1].trail_stop == pytest.approx(101.5 * 0.98)
    assert evs[2].trail_stop == pytest.approx(101.5 * 0.98)  # only tightens
    assert evs[-1].exit is not None and evs[-1].exit.reason is ExitReason.TRAILING_STOP


def test_trail_width_scales_with_the_stop_distance() -> None:
    wide = _walk([103.0], stop=94.0)[0]  # R = 6 %: armed at +3 %, 6 % behind
    tight = _walk([100.5], stop=99.0)[0]  # R = 1 %: armed at +0.5 %, 1 % behind
    assert wide.trail_stop == pytest.approx(103.0 * 0.94)
    assert tight.trail_stop == pytest.approx(100.5 * 0.99)
    short = _walk([98.0], stop=104.0, direction=Direction.SHORT)[0]
    assert short.trail_stop == pytest.approx(98.0 * 1.04)


def test_profit_lock_ladder_on_return_on_margin() -> None:
    # leverage 5 (fixture): +2 % move = +10 % on margin -> breakeven lock; stop far away
    cfg = LEVELS.model_copy(update={"enable_trailing_stop": False})
    pos = position(stop=80.0, tps=(150.0,))
    w = TradeWindow()
    w.add([trade(T0_MS + 2 * S, 102.0, trade_id="a")])
    ev = evaluate_exit(pos, w, T0_MS + 2 * S, cfg, since_ms=T0_MS)
    assert ev.exit is None
    pos = ev.apply(pos)
    w.add([trade(T0_MS + 4 * S, 99.99, trade_id="b")])
    ev = evaluate_exit(pos, w, T0_MS + 4 * S, cfg, since_ms=T0_MS + 2 * S)
    assert ev.exit is not None and ev.exit.reason is ExitReason.PROFIT_LOCK
    assert ev.exit.detail["gain_level_pct"] == 10.0 and ev.exit.detail["locked_pct"] == 0.0


def test_adverse_move_thresholds_by_profit() -> None:
    cfg = ExitConfig()
    assert [cfg.adverse_threshold(p) for p in (0.0, 0.5, 1.5, 2.5)] == [5, 3, 2, 1]
