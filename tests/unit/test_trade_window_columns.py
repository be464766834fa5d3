"""The columnar fast path into ``TradeWindow`` gives the same window as one trade at a time."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from prometheus_trader.adapters.streaming.ccxt_trade_stream import (
    add_unified_trades,
    buffered_batches,
    unified_batches,
)
from prometheus_trader.domain import trade_window
from prometheus_trader.domain.market import MarketType, Side, Trade
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.ticks import batches_from_trades
from prometheus_trader.domain.trade_window import TradeWindow

pytestmark = pytest.mark.unit
SYMBOL = "BTC/USDT:USDT"

rows = st.lists(
    st.tuples(
        st.integers(0, 3_000),  # time step (ms); steps of 0 and late trades below
        st.booleans(),  # a late trade (100 ms before the previous one)
        st.sampled_from([100.0, 100.5, 101.0, 99.5]),
        st.floats(0.001, 5.0),
        st.booleans(),  # buy
        st.integers(0, 400),  # trade id: collisions are duplicates
        st.booleans(),  # real trade (else a bar-derived one)
    ),
    max_size=300,
)


def _trades(spec: list[tuple[int, bool, float, float, bool, int, bool]]) -> list[Trade]:
    out: list[Trade] = []
    ts = 1_000_000
    for step, late, price, amount, buy, tid, real in spec:
        ts += step
        out.append(
            Trade(
                exchange="binance",
                market_type=MarketType.PERP,
                symbol=SYMBOL,
                ts_ms=ts - 100 if late else ts,
                trade_id=str(tid),
                price=price,
                amount=amount,
                side=Side.BUY if buy else Side.SELL,
                source="trade" if real else "bar",
            )
        )
    return out


def _snapshot(w: TradeWindow, now_ms: int) -> list[object]:
    return [
        len(w),
        w.last_price(now_ms),
        w.price_range(now_ms - 5_000, now_ms),
        [w.buy_sell_volume(m, now_ms) for m in (1_000, 60_000, 900_000)],
        w.real_trade_count(15_000, now_ms),
        [w.adverse_moves(d, now_ms, now_ms - 15_000) for d in Direction],
    ]


@settings(max_examples=150, deadline=None)
@given(rows, st.integers(1, 50))
# a late trade inside the very first batch is kept at the newest time
@example([(0, False, 100.5, 1.0, True, 5, True), (0, True, 100.0, 1.0, False, 0, True)], 4)
def test_batches_of_columns_equal_one_trade_at_a_time(
    spec: list[tuple[int, bool, float, float, bool, int, bool]], batch: int
) -> None:
    trades = _trades(spec)
    with patch.object(trade_window, "_COMPACT_MIN", 8):  # small: the buffers slide in the test too
        _compare(trades, batch)


def _compare(trades: list[Trade], batch: int) -> None:
    one = TradeWindow(SYMBOL, horizon_ms=20_000)
    cols = TradeWindow(SYMBOL, horizon_ms=20_000)
    added_one = added_cols = 0
    for start in range(0, len(trades), batch):
        chunk = trades[start : start + batch]
        for t in chunk:
            added_one += one.add([t])
        added_cols += cols.add_columns(
            [t.ts_ms for t in chunk],
            [t.price for t in chunk],
            [t.amount for t in chunk],
            [t.side is Side.BUY for t in chunk],
            [t.trade_id for t in chunk],
            [t.source == "trade" for t in chunk],
        )
        now = max(t.ts_ms for t in trades[: start + batch])
        one.prune(now)
        cols.prune(now)
        assert _snapshot(cols, now) == _snapshot(one, now)
    assert added_cols == added_one


def test_ccxt_unified_dicts_fill_per_symbol_windows_like_trades() -> None:
    raws = [
        {"symbol": SYMBOL, "timestamp": 1_000, "id": "1", "price": 100.0, "amount": 1.0,
         "side": "buy"},
        {"symbol": "ETH/USDT:USDT", "timestamp": 1_001, "id": "9", "price": 3.0,
         "amount": 2.0, "side": "sell"},
        {"symbol": SYMBOL, "timestamp": 1_002, "id": "2", "price": 99.0, "amount": 3.0,
         "side": "sell"},
        {"symbol": SYMBOL, "timestamp": 1_003, "id": "2", "price": 99.0, "amount": 3.0,
         "side": "sell"},
    ]  # fmt: skip
    windows: dict[str, TradeWindow] = {}
    assert add_unified_trades(windows, raws) == 3
    assert sorted(windows) == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    btc = windows[SYMBOL]
    assert btc.symbol == SYMBOL and len(btc) == 2
    assert btc.last_price(1_003) == 99.0
    assert btc.buy_sell_volume(60_000, 1_003) == (1.0, 3.0)
    assert btc.adverse_moves(Direction.LONG, 1_003, 0) == 1
    assert windows["ETH/USDT:USDT"].buy_sell_volume(60_000, 1_003) == (0.0, 2.0)


def test_a_trade_of_another_symbol_is_refused_after_the_ones_before_it() -> None:
    w = TradeWindow(SYMBOL)
    good, stranger = _trades([(1, False, 100.0, 1.0, True, 1, True)] * 2)
    stranger = stranger.model_copy(update={"symbol": "ETH/USDT:USDT", "trade_id": "2"})
    with pytest.raises(ValueError, match="ETH/USDT:USDT"):
        w.add([good, stranger])
    assert len(w) == 1


def test_unified_dicts_become_the_columns_of_the_equivalent_trades() -> None:
    raws = [
        {"symbol": SYMBOL, "timestamp": 1_000, "id": "1", "price": 100.0, "amount": 1.0,
         "side": "buy"},
        {"symbol": "ETH/USDT:USDT", "timestamp": 1_001, "id": "9", "price": 3.0,
         "amount": 2.0, "side": None},  # no side: not a taker buy
        {"symbol": SYMBOL, "timestamp": 1_002, "id": "2", "price": 99.0, "amount": 3.0,
         "side": "sell"},
    ]  # fmt: skip
    trades = [
        Trade(
            exchange="binance",
            market_type=MarketType.PERP,
            symbol=r["symbol"],
            ts_ms=r["timestamp"],
            trade_id=r["id"],
            price=r["price"],
            amount=r["amount"],
            side=Side.BUY if r["side"] == "buy" else Side.SELL,
        )
        for r in raws
    ]
    got, want = unified_batches(raws), batches_from_trades(trades)
    assert list(got) == list(want) == [SYMBOL, "ETH/USDT:USDT"]
    for symbol, batch in got.items():
        ref = want[symbol]
        assert list(batch.trade_ids) == list(ref.trade_ids)
        for column in ("ts_ms", "price", "amount", "is_buy"):
            assert getattr(batch, column).tolist() == getattr(ref, column).tolist(), column
        assert batch.real is None and ref.real is None
    assert buffered_batches({SYMBOL: raws[::2]})[SYMBOL].ts_ms.tolist() == [1_000, 1_002]


def test_duplicates_are_looked_for_among_the_newest_rows() -> None:
    trades = _trades([(1_000, False, 100.0, 1.0, True, i, True) for i in range(12)])
    with patch.object(trade_window, "_SEEN_ROWS", 4), patch.object(trade_window, "_COMPACT_MIN", 2):
        w = TradeWindow(SYMBOL, horizon_ms=2_500)
        for t in trades[:10]:
            w.add([t])
        again = trades[9].model_copy(update={"ts_ms": trades[9].ts_ms + 1})
        assert w.add([again]) == 0, "a repeat among the newest rows is dropped"
        w.prune(trades[9].ts_ms)  # keeps the last 3 (ids 7-9), compacts the front
        assert len(w) == 3 and w._head == 0
        assert w.add([trades[10], again, trades[10]]) == 1  # repeats inside the batch too
        old = trades[2].model_copy(update={"ts_ms": trades[10].ts_ms})
        assert w.add([old]) == 1, "an id older than the newest rows is new again"
        assert len(w) == 5


@settings(max_examples=100, deadline=None)
@given(rows, st.integers(1, 60))
def test_checked_batches_equal_one_trade_at_a_time(
    spec: list[tuple[int, bool, float, float, bool, int, bool]], batch: int
) -> None:
    """Batches whose source already dropped repeats (the stream's) skip the window's own
    id check: with unique ids the window is the same, and so is the price range since
    the previous cycle (read from the last batch's column)."""
    trades = _trades([(*row[:5], i, row[6]) for i, row in enumerate(spec)])  # unique ids
    one = TradeWindow(SYMBOL, horizon_ms=20_000)
    checked = TradeWindow(SYMBOL, horizon_ms=20_000)
    before: int | None = None
    with patch.object(trade_window, "_COMPACT_MIN", 8):
        for start in range(0, len(trades), batch):
            chunk = trades[start : start + batch]
            for t in chunk:
                one.add([t])
            (got,) = batches_from_trades(chunk, checked=True).values()
            assert got.checked
            assert checked.add_batch(got) == len(chunk)
            now = max(t.ts_ms for t in trades[: start + batch])
            one.prune(now)
            checked.prune(now)
            since = now - 5_000 if before is None else before
            assert _snapshot(checked, now) == _snapshot(one, now)
            for lo, hi in ((since, now), (since, now - 500), (since + 700, now)):
                assert checked.price_range(lo, hi) == one.price_range(lo, hi)
            before = now


def test_an_unchecked_batch_after_checked_ones_looks_among_the_newest_rows() -> None:
    trades = _trades([(1_000, False, 100.0 + i, 1.0, True, i, True) for i in range(12)])
    with patch.object(trade_window, "_SEEN_ROWS", 4):
        w = TradeWindow(SYMBOL)
        w.add_batch(batches_from_trades(trades[:10], checked=True)[SYMBOL])
        assert len(w) == 10
        again = trades[9].model_copy(update={"ts_ms": trades[9].ts_ms + 1})
        assert w.add([again]) == 0, "a repeat among the newest rows is dropped"
        old = trades[2].model_copy(update={"ts_ms": trades[10].ts_ms})
        assert w.add([old, trades[10]]) == 2, "an id older than the newest rows is new"
        assert len(w) == 12


def test_the_price_range_inside_the_last_batch_is_that_of_its_rows() -> None:
    spec = [(10, False, 100.0 + (i % 7) * (1 if i % 2 else -1), 1.0, True, i, True)
            for i in range(90)]  # fmt: skip
    trades = _trades(spec)
    one, batched = TradeWindow(SYMBOL), TradeWindow(SYMBOL)
    for t in trades:
        one.add([t])
    for chunk in (trades[:40], trades[40:]):  # numpy-sized batches
        batched.add_batch(batches_from_trades(chunk, checked=True)[SYMBOL])
    stamps = [t.ts_ms for t in trades]
    for lo in range(stamps[38], stamps[-1], 30):
        for hi in range(lo + 10, stamps[-1] + 20, 40):
            assert batched.price_range(lo, hi) == one.price_range(lo, hi), (lo, hi)
