"""Exit rules: trade window, priority order, trailing stop, bar-sourced trades."""

from __future__ import annotations

import itertools
from typing import Any, Literal

import pytest
from _trading_fixtures import T0_MS, position, trade
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_trader.domain.exits import ExitConfig, evaluate_exit
from prometheus_trader.domain.market import Side, Trade
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trade_window import TradeWindow
from prometheus_trader.domain.trading import ExitReason

pytestmark = pytest.mark.unit

S, M = 1_000, 60_000
NOW = T0_MS + 11 * M
# The fixed trail active from entry and the ladder on price moves (the pre-issue-11
# defaults): these tests pin the rule mechanics; test_exit_defaults.py pins the defaults.
LEGACY: dict[str, Any] = {
    "trail_arm_r": 0.0,
    "trail_width_r": None,
    "profit_lock_on_leveraged_return": False,
}


def legacy(**overrides: Any) -> ExitConfig:
    """An ExitConfig with the legacy trail and ladder, plus ``overrides``."""
    return ExitConfig(**{**LEGACY, **overrides})


ONLY_FLOW = legacy(
    enable_adverse_moves=False,
    enable_trailing_stop=False,
    enable_stop_loss=False,
    enable_take_profit=False,
    enable_profit_lock=False,
    enable_max_hold=False,
)


def reversal_trades(
    source: Literal["trade", "bar"] = "trade", sell_side: Side = Side.SELL, price: float = 100.0
) -> list[Trade]:
    buy_side = Side.BUY if sell_side is Side.SELL else Side.SELL
    return [
        trade(NOW - 10 * M, price, 10, buy_side, source),
        trade(NOW - 3 * M, price, 2, buy_side, source),
        trade(NOW - 3 * M + 1, price, 2, sell_side, source),
        trade(NOW - 30 * S, price, 5, sell_side, source),
        trade(NOW - 5 * S, price, 1, sell_side, source),
    ]


def window_of(trades: list[Trade]) -> TradeWindow:
    w = TradeWindow()
    w.add(trades)
    return w


def test_window_volumes_exclude_bar_trades_and_prune() -> None:
    w = window_of(
        [
            trade(NOW - 20 * M, 99, 7, Side.BUY),
            trade(NOW - 4 * M, 100, 3, Side.BUY),
            trade(NOW - 40 * S, 101, 2, Side.SELL),
            trade(NOW - 10 * S, 102, 50, Side.BUY, source="bar"),
            trade(NOW - 5 * S, 103, 1, Side.BUY),
        ]
    )
    assert w.buy_sell_volume(15 * S, NOW) == (1, 0)
    assert w.buy_sell_volume(M, NOW) == (1, 2)
    assert w.buy_sell_volume(5 * M, NOW) == (4, 2)
    assert w.buy_sell_volume(15 * M, NOW) == (4, 2)
    assert w.buy_sell_volume(30 * M, NOW) == (11, 2)
    assert w.real_trade_count(15 * S, NOW) == 1
    assert w.last_price(NOW) == 103
    assert w.last_price(NOW - 7 * S) == 102
    assert w.price_range(NOW - M, NOW) == (101, 103)
    w.prune(NOW)
    assert len(w) == 4
    assert w.buy_sell_volume(30 * M, NOW) == (4, 2)


def test_window_ignores_duplicate_ids_and_wrong_symbol() -> None:
    w = TradeWindow()
    t = trade(NOW, 100, 1, trade_id="x")
    assert w.add([t, t]) == 1
    with pytest.raises(ValueError):
        w.add([trade(NOW, 100, symbol="ETH/USDT:USDT")])


def test_adverse_moves_use_distinct_price_direction_not_side() -> None:
    # prices rise on sell-side trades: not adverse for a long
    w = window_of([trade(NOW - 4 * S + i, 100 + i, 1, Side.SELL) for i in range(4)])
    assert w.adverse_moves(Direction.LONG, NOW, NOW - 15 * S) == 0
    assert w.adverse_moves(Direction.SHORT, NOW, NOW - 15 * S) == 3
    # falling prices with repeats: 100, 99, 99, 98, 98, 97 → 3 distinct drops
    w = window_of([trade(NOW - 6 * S + i, p) for i, p in enumerate([100, 99, 99, 98, 98, 97])])
    assert w.adverse_moves(Direction.LONG, NOW, NOW - 15 * S) == 3
    # an uptick breaks the streak
    w.add([trade(NOW - 10, 97.5), trade(NOW - 5, 97.2)])
    assert w.adverse_moves(Direction.LONG, NOW, NOW - 15 * S) == 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40 * M), st.floats(1, 2), st.floats(0, 5), st.booleans(), st.booleans()
        ),
        min_size=1,
        max_size=300,
    ),
    st.lists(st.integers(0, 45 * M), min_size=1, max_size=10),
)
def test_window_matches_brute_force(raw, query_times) -> None:  # type: ignore[no-untyped-def]
    raw = sorted(raw, key=lambda r: r[0])
    trades = [
        trade(
            T0_MS + ts,
            price,
            amount,
            Side.BUY if buy else Side.SELL,
            "bar" if bar else "trade",
            trade_id=f"id{i}",
        )
        for i, (ts, price, amount, buy, bar) in enumerate(raw)
    ]
    w = TradeWindow()
    fed = 0
    for q in sorted(query_times):
        now = T0_MS + q
        while fed < len(trades) and trades[fed].ts_ms <= now:
            w.add([trades[fed]])
            fed += 1
        w.prune(now)
        for win in (15 * S, M, 5 * M, 15 * M):
            inside = [t for t in trades[:fed] if now - win < t.ts_ms <= now and t.source == "trade"]
            buy = sum(t.amount for t in inside if t.side is Side.BUY)
            sell = sum(t.amount for t in inside if t.side is Side.SELL)
            got = w.buy_sell_volume(win, now)
            assert got[0] == pytest.approx(buy, abs=1e-6)
            assert got[1] == pytest.approx(sell, abs=1e-6)
        seen = trades[:fed]
        assert w.last_price(now) == (seen[-1].price if seen else None)


def test_order_flow_reversal_fires_for_long_and_records_numbers() -> None:
    w = window_of(reversal_trades())
    ev = evaluate_exit(position(), w, NOW, ONLY_FLOW)
    assert ev.exit is not None and ev.exit.reason is ExitReason.ORDER_FLOW_REVERSAL
    assert ev.exit.rule == 1
    assert ev.exit.detail["ratio_1m"] == 0.0
    assert ev.exit.detail["ratio_5m"] == pytest.approx(0.25)
    assert ev.exit.detail["ratio_15m"] == pytest.approx(1.5)
    # the same flow is no exit for a short
    assert evaluate_exit(position(Direction.SHORT, stop=102), w, NOW, ONLY_FLOW).exit is None


def test_order_flow_reversal_short_mirrored() -> None:
    w = window_of(reversal_trades(sell_side=Side.BUY))
    ev = evaluate_exit(position(Direction.SHORT, stop=102), w, NOW, ONLY_FLOW)
    assert ev.exit is not None and ev.exit.reason is ExitReason.ORDER_FLOW_REVERSAL


def test_order_flow_needs_a_live_trade_in_the_15s_window() -> None:
    w = window_of(reversal_trades()[:-1])  # last real trade 30 s ago
    assert evaluate_exit(position(), w, NOW, ONLY_FLOW).exit is None


def test_bar_trades_never_trigger_order_flow_reversal_same_data() -> None:
    w = window_of(reversal_trades(source="bar"))
    assert evaluate_exit(position(), w, NOW, ONLY_FLOW).exit is None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 15 * M), st.floats(90, 110), st.floats(0.01, 100), st.booleans()),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from(list(Direction)),
)
def test_bar_sourced_trades_never_trigger_order_flow(raw, direction) -> None:  # type: ignore[no-untyped-def]
    raw = sorted(raw, key=lambda r: r[0])
    w = window_of(
        [
            trade(NOW - 15 * M + ts, p, a, Side.BUY if b else Side.SELL, "bar", trade_id=f"b{i}")
            for i, (ts, p, a, b) in enumerate(raw)
        ]
    )
    pos = position(direction, stop=80.0 if direction is Direction.LONG else 120.0)
    ev = evaluate_exit(pos, w, NOW, legacy())
    assert ev.exit is None or ev.exit.reason is not ExitReason.ORDER_FLOW_REVERSAL


def test_priority_order() -> None:
    # order-flow reversal + 5 adverse ticks + price below the stop, all at once
    trades = reversal_trades()
    falling = [
        trade(NOW - 4 * S + i * 500, p, 0.001, Side.BUY)
        for i, p in enumerate([99, 98.5, 98, 97.5, 97.0, 96.5])
    ]
    w = window_of(sorted(trades + falling, key=lambda t: t.ts_ms))
    pos = position(stop=98.0)
    full = legacy()
    assert evaluate_exit(pos, w, NOW, full).exit.reason is ExitReason.ORDER_FLOW_REVERSAL  # type: ignore[union-attr]
    no_flow = full.model_copy(update={"enable_order_flow": False})
    ev = evaluate_exit(pos, w, NOW, no_flow)
    assert ev.exit is not None and ev.exit.reason is ExitReason.ADVERSE_MOVES and ev.exit.rule == 2
    assert ev.adverse_moves >= 5 and ev.adverse_threshold == 5
    levels_only = no_flow.model_copy(update={"enable_adverse_moves": False})
    ev = evaluate_exit(pos, w, NOW, levels_only)
    assert ev.exit is not None and ev.exit.rule == 3
    # the 0.5% trail (99.5) is tighter than the stop (98): trail crossed first
    assert ev.exit.reason is ExitReason.TRAILING_STOP
    no_trail = levels_only.model_copy(update={"enable_trailing_stop": False})
    assert evaluate_exit(pos, w, NOW, no_trail).exit.reason is ExitReason.STOP_LOSS  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("profit_price", "threshold"), [(100.1, 5), (100.5, 3), (101.5, 2), (103.0, 1)]
)
def test_adverse_threshold_by_profit(profit_price: float, threshold: int) -> None:
    cfg = legacy(enable_order_flow=False, enable_trailing_stop=False)
    steps = [profit_price + 0.01 * (threshold - i) for i in range(threshold + 1)]
    pos = position(tps=(200.0,))
    w = window_of([trade(NOW - 10 * S + i * 100, p) for i, p in enumerate(steps[:-1])])
    short_of = evaluate_exit(pos, w, NOW, cfg)
    assert short_of.adverse_moves == threshold - 1 and short_of.exit is None
    w.add([trade(NOW - 10, steps[-1])])
    ev = evaluate_exit(pos, w, NOW, cfg)
    assert ev.adverse_threshold == threshold
    assert ev.exit is not None and ev.exit.reason is ExitReason.ADVERSE_MOVES


def test_adverse_moves_before_open_do_not_count() -> None:
    cfg = legacy(enable_order_flow=False, enable_trailing_stop=False)
    pos = position(opened_ms=NOW - 6500)
    w = window_of([trade(NOW - 10 * S + i * S, 100.5 - 0.1 * i) for i in range(6)])
    assert evaluate_exit(pos, w, NOW, cfg).adverse_moves == 2
    assert evaluate_exit(position(), w, NOW, cfg).adverse_moves == 5


def test_stop_tighter_than_trail_is_the_reason() -> None:
    cfg = legacy(enable_order_flow=False, enable_adverse_moves=False)
    pos = position(stop=99.8, trailing_pct=1.0)  # trail 99.0, stop 99.8
    w = window_of([trade(NOW - S, 98.9)])
    ev = evaluate_exit(pos, w, NOW, cfg)
    assert ev.exit is not None and ev.exit.reason is ExitReason.STOP_LOSS


def test_take_profit_profit_lock_and_max_hold() -> None:
    cfg = legacy(enable_order_flow=False, enable_adverse_moves=False, enable_trailing_stop=False)
    tp = evaluate_exit(position(tps=(104.0,)), window_of([trade(NOW - S, 104.2)]), NOW, cfg)
    assert tp.exit is not None and tp.exit.reason is ExitReason.TAKE_PROFIT
    assert tp.exit.detail["take_profit"] == 104.0
    # best +12% then back to +0%: the +10% → breakeven lock fires
    pos = position(tps=(200.0,), best_price=112.0, stop=90.0)
    lock = evaluate_exit(pos, window_of([trade(NOW - S, 99.9)]), NOW, cfg)
    assert lock.exit is not None and lock.exit.reason is ExitReason.PROFIT_LOCK
    assert lock.exit.detail["gain_level_pct"] == 10 and lock.exit.detail["locked_pct"] == 0
    held = position(tps=(200.0,), max_hold_minutes=10)
    ev = evaluate_exit(held, window_of([trade(NOW - S, 100.2)]), NOW, cfg)
    assert ev.exit is not None and ev.exit.reason is ExitReason.MAX_HOLD
    assert ev.exit.detail["held_minutes"] == pytest.approx(11)
    nothing = evaluate_exit(position(tps=(200.0,)), window_of([trade(NOW - S, 100.2)]), NOW, cfg)
    assert nothing.exit is None


def test_since_ms_catches_spikes_between_cycles() -> None:
    w = window_of([trade(NOW - 1500, 101.0), trade(NOW - 500, 100.4)])
    pos = position(tps=(200.0,))
    no_since = evaluate_exit(
        pos, w, NOW, legacy(enable_order_flow=False, enable_adverse_moves=False)
    )
    assert no_since.best_price == 100.4 and no_since.exit is None
    with_since = evaluate_exit(
        pos,
        w,
        NOW,
        legacy(enable_order_flow=False, enable_adverse_moves=False),
        since_ms=NOW - 2 * S,
    )
    assert with_since.best_price == 101.0
    assert with_since.trail_stop == pytest.approx(101.0 * 0.995)
    assert with_since.exit is not None and with_since.exit.reason is ExitReason.TRAILING_STOP


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(90, 110), min_size=1, max_size=80), st.sampled_from(list(Direction)))
def test_trailing_stop_only_tightens(prices, direction) -> None:  # type: ignore[no-untyped-def]
    cfg = legacy(
        enable_order_flow=False,
        enable_adverse_moves=False,
        enable_trailing_stop=False,
        enable_stop_loss=False,
        enable_take_profit=False,
        enable_profit_lock=False,
        enable_max_hold=False,
    )
    pos = position(direction, stop=50.0 if direction is Direction.LONG else 150.0)
    w = TradeWindow()
    trails: list[float] = []
    for i, p in enumerate(prices):
        now = T0_MS + (i + 1) * 2 * S
        w.add([trade(now, p, trade_id=f"p{i}")])
        ev = evaluate_exit(pos, w, now, cfg, since_ms=now - 2 * S)
        pos = ev.apply(pos)
        trails.append(ev.trail_stop)
    sign = direction.sign
    assert trails[0] * sign >= 100 * (1 - sign * 0.005) * sign - 1e-9
    for a, b in itertools.pairwise(trails):
        assert sign * (b - a) >= 0
    best = max(prices) if sign > 0 else min(prices)
    best = max(best, 100.0) if sign > 0 else min(best, 100.0)
    assert trails[-1] == pytest.approx(best * (1 - sign * 0.005))


def test_no_trades_no_price_rules() -> None:
    ev = evaluate_exit(position(), TradeWindow(), NOW, legacy())
    assert ev.last_price is None and ev.exit is None and ev.profit_pct is None


def test_window_stays_correct_across_compaction() -> None:
    # 30k trades, one every 100 ms for 50 min: pruning compacts storage several times
    trades = [
        trade(
            T0_MS + i * 100,
            100 + (i % 7) * 0.1,
            1 + i % 3,
            Side.BUY if i % 2 else Side.SELL,
            trade_id=f"c{i}",
        )
        for i in range(30_000)
    ]
    w = TradeWindow()
    for start in range(0, len(trades), 1000):
        chunk = trades[start : start + 1000]
        w.add(chunk)
        w.prune(chunk[-1].ts_ms)
    now = trades[-1].ts_ms
    assert len(w) == 15 * M // 100  # (now - 15 min, now]
    for win in (15 * S, M, 5 * M, 15 * M):
        inside = [t for t in trades if now - win < t.ts_ms <= now]
        buy = sum(t.amount for t in inside if t.side is Side.BUY)
        sell = sum(t.amount for t in inside if t.side is Side.SELL)
        got_buy, got_sell = w.buy_sell_volume(win, now)
        assert got_buy == pytest.approx(buy) and got_sell == pytest.approx(sell)
    assert w.last_price(now) == trades[-1].price
