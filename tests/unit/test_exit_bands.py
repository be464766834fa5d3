"""The exit monitor's skip filter (``HoldBands``) never skips a position whose evaluation
would act: wherever it says "quiet", ``evaluate_exit`` returns no exit and the same
best/worst/trail. Random positions, rule sets and price paths (Hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_trader.domain.exit_bands import hold_band
from prometheus_trader.domain.exits import ExitConfig, evaluate_exit
from prometheus_trader.domain.market import MarketType, Side, Trade
from prometheus_trader.domain.signals import Direction, TakeProfitLevel
from prometheus_trader.domain.trade_window import TradeWindow
from prometheus_trader.domain.trading import Position
from prometheus_trader.usecases.hold_bands import HoldBands

pytestmark = pytest.mark.unit

CYCLE_MS = 2_000
CONFIGS = [
    ExitConfig(),  # the defaults: every rule on
    ExitConfig(  # quiet rules 1 and 2, tight levels
        order_flow_long_exit_ratio=1e-9,
        order_flow_short_exit_ratio=1e9,
        adverse_move_thresholds=[(0.3, 10**6)],
        adverse_move_default=10**6,
        trail_arm_r=0.2,
    ),
    ExitConfig(trail_arm_r=0.0, trail_width_r=None, trailing_stop_pct=0.3),
    ExitConfig(
        enable_order_flow=False,
        adverse_move_thresholds=[(0.5, 9), (1.0, 4)],
        adverse_move_default=7,
        profit_lock_ladder=[(1.0, 0.2), (2.0, 0.5), (3.0, 0.1)],
        profit_lock_on_leveraged_return=False,
        max_hold_minutes=3,
    ),
    ExitConfig(enable_adverse_moves=False, enable_take_profit=False, enable_stop_loss=False),
]


def _position(direction: Direction, stop_pct: float, tp_pct: float, leverage: float) -> Position:
    entry = 100.0
    sign = direction.sign
    return Position(
        id="p1",
        user_id="u1",
        signal_id="s1",
        exchange="binance",
        market_type=MarketType.PERP,
        symbol="BTC/USDT:USDT",
        direction=direction,
        amount=1.0,
        entry_price=entry,
        leverage=leverage,
        stop_loss=entry * (1 - sign * stop_pct / 100),
        take_profits=[
            TakeProfitLevel(price=entry * (1 + sign * tp_pct / 100), pct=tp_pct, size_fraction=1.0)
        ],
        trailing_stop_pct=0.2,
        entry_order_id="e1",
        max_hold_minutes=6,
        opened_at="2024-01-01T00:00:00Z",
        opened_ms=1_000,
        best_price=entry,
        worst_price=entry,
    )


steps = st.lists(
    st.tuples(
        st.integers(0, 3_000),  # ms to the next trade
        st.integers(-2, 2),  # move in steps of 0.05 % (prices revisit levels)
        st.booleans(),  # taker buy
        st.floats(0.01, 5.0),  # amount
    ),
    min_size=60,
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(
    config=st.sampled_from(CONFIGS),
    direction=st.sampled_from(list(Direction)),
    stop_pct=st.floats(0.3, 3.0),
    tp_pct=st.floats(0.3, 5.0),
    leverage=st.sampled_from([1.0, 5.0, 20.0]),
    path=steps,
)
def test_a_quiet_position_would_hold_and_track_nothing(
    config: ExitConfig,
    direction: Direction,
    stop_pct: float,
    tp_pct: float,
    leverage: float,
    path: list[tuple[int, int, bool, float]],
) -> None:
    position = _position(direction, stop_pct, tp_pct, leverage)
    trades: list[Trade] = []
    ts, level = 1_000, 0
    for i, (dt, move, buy, amount) in enumerate(path):
        ts += dt
        level += move
        price = position.entry_price * (1 + level * 0.05 / 100)
        trades.append(
            Trade(
                exchange="binance",
                market_type=MarketType.PERP,
                symbol=position.symbol,
                ts_ms=ts,
                price=price,
                amount=amount,
                side=Side.BUY if buy else Side.SELL,
                trade_id=str(i),
            )
        )
    window = TradeWindow(position.symbol)
    bands = HoldBands(config)
    fed, since = 0, None
    for now in range(1_000 + CYCLE_MS, ts + 4 * CYCLE_MS, CYCLE_MS):
        upto = fed
        while upto < len(trades) and trades[upto].ts_ms <= now:
            upto += 1
        window.add(trades[fed:upto])
        fed = upto
        window.prune(now)
        if window.last_price(now) is None:
            continue
        quiet = since is not None and bands.quiet({position.symbol: window}.get, now, since)
        evaluation = evaluate_exit(position, window, now, config, since_ms=since)
        if quiet and position.id in quiet:
            assert quiet[position.id] is position
            assert evaluation.exit is None
            assert (evaluation.best_price, evaluation.worst_price, evaluation.trail_stop) == (
                position.best_price,
                position.worst_price,
                position.trail_stop,
            )
        if evaluation.exit is not None:
            return
        position = evaluation.apply(position)
        bands.settle(position, hold_band(position, config, None))
        since = now


def test_quiet_positions_are_found_on_a_calm_market() -> None:
    """The filter does skip: a position on a flat market is quiet every cycle."""
    config = CONFIGS[1]
    position = _position(Direction.LONG, 2.0, 3.0, 5.0)
    window = TradeWindow(position.symbol)
    trades = [
        Trade(
            exchange="binance",
            market_type=MarketType.PERP,
            symbol=position.symbol,
            ts_ms=1_000 + 500 * i,
            price=100.0 + (0.01 if i % 2 else 0.0),
            amount=1.0,
            side=Side.BUY if i % 2 else Side.SELL,
            trade_id=str(i),
        )
        for i in range(400)
    ]
    window.add(trades[:40])
    window.prune(21_000)
    evaluation = evaluate_exit(position, window, 21_000, config, since_ms=0)
    position = evaluation.apply(position)
    bands = HoldBands(config)
    bands.settle(position, hold_band(position, config, None))
    quiet = 0
    for k, now in enumerate(range(23_000, 101_000, CYCLE_MS)):
        window.add([t for t in trades if now - CYCLE_MS < t.ts_ms <= now])
        window.prune(now)
        quiet += position.id in bands.quiet({position.symbol: window}.get, now, now - CYCLE_MS)
        assert evaluate_exit(position, window, now, config, since_ms=now - CYCLE_MS).exit is None
        assert k < 60
    assert quiet >= 35


def _trade(i: int, ts_ms: int, price: float) -> Trade:
    return Trade(
        exchange="binance",
        market_type=MarketType.PERP,
        symbol="BTC/USDT:USDT",
        ts_ms=ts_ms,
        price=price,
        amount=1.0,
        side=Side.BUY if i % 2 else Side.SELL,
        trade_id=str(i),
    )


def _run(
    position: Position,
    config: ExitConfig,
    prices: list[tuple[int, float]],
    end_ms: int,
    trades: list[Trade] | None = None,
) -> list[tuple[int, bool, str | None]]:
    """Cycles every 2 s to ``end_ms``: (time, quiet, exit reason) until the exit."""
    window = TradeWindow(position.symbol)
    bands = HoldBands(config)
    if trades is None:
        trades = [_trade(i, ts, p) for i, (ts, p) in enumerate(prices)]
    out: list[tuple[int, bool, str | None]] = []
    since: int | None = None
    for now in range(1_000 + CYCLE_MS, end_ms, CYCLE_MS):
        window.add([t for t in trades if now - CYCLE_MS < t.ts_ms <= now])
        window.prune(now)
        quiet = since is not None and position.id in bands.quiet(
            {position.symbol: window}.get, now, since
        )
        evaluation = evaluate_exit(position, window, now, config, since_ms=since)
        reason = evaluation.exit.reason.value if evaluation.exit else None
        out.append((now, quiet, reason))
        if evaluation.exit is not None:
            break
        position = evaluation.apply(position)
        bands.settle(position, hold_band(position, config, None))
        since = now
    return out


def test_a_flat_position_is_quiet_until_its_max_hold() -> None:
    config = CONFIGS[1]
    position = _position(Direction.LONG, 2.0, 3.0, 1.0)  # max hold 6 minutes
    prices = [(1_000 + 500 * i, 100.0 + (0.01 if i % 2 else 0.0)) for i in range(900)]
    cycles = _run(position, config, prices, 8 * 60_000)
    assert cycles[-1][2] == "max_hold"
    assert not cycles[-1][1]
    assert sum(q for _, q, _ in cycles) > len(cycles) / 2


def test_a_take_profit_inside_the_tracked_range_is_not_quiet() -> None:
    """A spike above the target between two cycles raises best above it while the last
    price stays below; the price coming back to the target must be evaluated."""
    config = CONFIGS[1]
    position = _position(Direction.LONG, 2.0, 1.0, 1.0)  # target 101
    prices = [(1_000 + 1_000 * i, 100.0) for i in range(30)]  # calm half minute
    prices += [(31_500, 101.5), (31_800, 100.5)]  # the spike, back below the target
    prices += [(33_000 + 1_000 * i, 100.5) for i in range(10)]
    prices += [(44_500, 101.0)]  # at the target, below the best
    cycles = _run(position, config, prices, 60_000)
    assert cycles[-1][2] == "take_profit"
    assert not cycles[-1][1]
    assert any(q for _, q, _ in cycles)


def test_an_order_flow_reversal_at_a_flat_price_is_not_quiet() -> None:
    """Rule 1 reads volumes, not prices: buyers for 14 minutes, then sellers take over
    at the same price; the long position must be evaluated (and exits)."""
    config = ExitConfig(enable_adverse_moves=False, enable_max_hold=False)
    position = _position(Direction.LONG, 2.0, 3.0, 1.0)
    trades = []
    for i in range(15 * 60):  # one trade a second, all at 100
        late = i >= 14 * 60
        buy = i % 4 != 0 if not late else i % 6 == 0
        trade = _trade(i, 1_000 + 1_000 * i, 100.0)
        trades.append(trade.model_copy(update={"side": Side.BUY if buy else Side.SELL}))
    cycles = _run(position, config, [], 17 * 60_000, trades)
    assert cycles[-1][2] == "order_flow_reversal"
    assert not cycles[-1][1]
    assert sum(q for _, q, _ in cycles) > len(cycles) / 2
