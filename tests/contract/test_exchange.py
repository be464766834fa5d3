"""Contract suite for the ``Exchange`` port (SPEC §2, §5 paper executor, §9).

Every adapter runs the same tests through an ``ExchangeHarness``: the exchange, a clock the
test can move, and the recorded truth the expectations are computed from. Today the only
factory is the replay exchange over a ``DuckDBMarketStore`` holding real Binance USD-M
candles (copied from the bundled sample) and real recorded BTCUSDT trades; a ccxt-backed
adapter joins through ``FACTORIES``.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import prometheus_trader.sample
from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.market import (
    MINUTE_MS,
    Candle,
    CandleSeries,
    MarketType,
    Side,
    Trade,
)
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import Fill, OrderRequest, OrderStatus, OrderType
from prometheus_trader.ports import (
    Exchange,
    ExchangeError,
    OrderRejected,
    SeriesKey,
    StateStore,
)

pytestmark = pytest.mark.contract

SAMPLE_STORE = Path(prometheus_trader.sample.__file__).parent / "store"
# a committed excerpt of ../shared/data/binance-ticks-2024-08/normalized (see its README)
TICKS_CSV = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "exchange"
TICKS_FILE = "usdm_btcusdt_20240808_trades.csv"
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT")
BTC = SYMBOLS[0]
DAY_START = int(datetime(2025, 5, 21, tzinfo=UTC).timestamp() * 1000)
DAY_END = DAY_START + 86_400_000
# 06:00:30 UTC: mid-minute, so the bar that opened at 06:00 is still forming
START_MS = DAY_START + 6 * 3_600_000 + 30_000
TAKER, MAKER, SLIPPAGE_BPS, LATENCY_MS = 0.0005, 0.0002, 2.0, 250
RECORDED_TRADES = 400


@dataclass
class ExchangeHarness:
    """An exchange under test plus what the test needs to check it."""

    exchange: Exchange
    clock: SimulatedClock
    truth: DuckDBMarketStore
    recorded_trades: list[Trade]
    fills: Callable[[str], list[Fill]]  # the adapter's fill ledger (not in the port)

    def at(self, ms: int) -> None:
        self.clock.set_ms(ms)

    def bars(self, symbol: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Recorded 1m bars closed in the window (the expectation source)."""
        return self.truth.candles(key(symbol), "1m", start_ms, end_ms)


def key(symbol: str) -> SeriesKey:
    return SeriesKey("binance", MarketType.PERP, symbol)


def _real_trades() -> list[Trade]:
    """The first recorded BTCUSDT perp trades of 2024-08-08 (``is_buyer_maker`` → taker sold)."""
    path = TICKS_CSV / TICKS_FILE
    if not path.exists():
        raise FileNotFoundError(f"recorded ticks missing: {path}")
    out: list[Trade] = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            out.append(
                Trade(
                    exchange="binance",
                    market_type=MarketType.PERP,
                    symbol=BTC,
                    ts_ms=int(row["trade_time_ms"]),
                    trade_id=row["trade_id"],
                    price=float(row["price"]),
                    amount=float(row["qty"]),
                    side=Side.SELL if row["is_buyer_maker"] == "True" else Side.BUY,
                )
            )
            if len(out) == RECORDED_TRADES:
                break
    return out


@pytest.fixture(scope="module")
def truth(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DuckDBMarketStore, list[Trade]]]:
    """A store with one real day of three perps (from the bundled sample) and real ticks."""
    sample = DuckDBMarketStore(SAMPLE_STORE)
    store = DuckDBMarketStore(tmp_path_factory.mktemp("exchange-store"))
    for symbol in SYMBOLS:
        s = sample.candles(key(symbol), "1m", DAY_START, DAY_END)
        assert len(s) == 1440, f"sample store lacks {symbol} on 2025-05-21"
        store.write_candles(
            [
                Candle(
                    exchange="binance",
                    market_type=MarketType.PERP,
                    symbol=symbol,
                    timeframe="1m",
                    ts_ms=int(s.ts_ms[i]),
                    open=float(s.open[i]),
                    high=float(s.high[i]),
                    low=float(s.low[i]),
                    close=float(s.close[i]),
                    volume=float(s.volume[i]),
                )
                for i in range(len(s))
            ]
        )
        store.write_funding(sample.funding(key(symbol), DAY_START, DAY_END))
    trades = _real_trades()
    store.write_trades(trades)
    yield store, trades


def make_replay(truth: tuple[DuckDBMarketStore, list[Trade]]) -> ExchangeHarness:
    store, trades = truth
    clock = SimulatedClock(datetime.fromtimestamp(START_MS / 1000, UTC))
    exchange = ReplayExchange(
        store,
        clock,
        taker_fee=TAKER,
        maker_fee=MAKER,
        slippage_bps=SLIPPAGE_BPS,
        latency_ms=LATENCY_MS,
        starting_balance=10_000.0,
    )
    return ExchangeHarness(exchange, clock, store, trades, exchange.fills)


FACTORIES: dict[str, Callable[[tuple[DuckDBMarketStore, list[Trade]]], ExchangeHarness]] = {
    "replay": make_replay,
}


# ---------------------------------------------------- persisted paper exchange (i8p)
# The replay exchange with its paper accounts in a StateStore (adapters/paper): on a
# SQLite file, and on the Firestore emulator (the factory asks for the `emulators`
# fixture, so embedded-only runs start none).
PaperFactory = Callable[
    [tuple[DuckDBMarketStore, list[Trade]], pytest.FixtureRequest, Path], ExchangeHarness
]


def _paper(truth: tuple[DuckDBMarketStore, list[Trade]], ledger: StateStore) -> ExchangeHarness:
    store, trades = truth
    clock = SimulatedClock(datetime.fromtimestamp(START_MS / 1000, UTC))
    exchange = ReplayExchange(
        store,
        clock,
        taker_fee=TAKER,
        maker_fee=MAKER,
        slippage_bps=SLIPPAGE_BPS,
        latency_ms=LATENCY_MS,
        starting_balance=10_000.0,
        ledger=ledger,
    )
    return ExchangeHarness(exchange, clock, store, trades, exchange.fills)


def _paper_firestore(
    truth: tuple[DuckDBMarketStore, list[Trade]], request: pytest.FixtureRequest, tmp: Path
) -> ExchangeHarness:
    request.getfixturevalue("emulators")
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

    return _paper(truth, FirestoreStateStore(prefix=f"x{uuid.uuid4().hex[:12]}-"))


PAPER_FACTORIES: dict[str, PaperFactory] = {
    "paper-sqlite": lambda truth, request, tmp: _paper(
        truth, SqliteStateStore(tmp / "paper.sqlite")
    ),
    "paper-firestore": _paper_firestore,
}
# ------------------------------------------------ end persisted paper exchange (i8p)


@pytest.fixture(params=[*sorted(FACTORIES), *sorted(PAPER_FACTORIES)])
def h(
    request: pytest.FixtureRequest,
    truth: tuple[DuckDBMarketStore, list[Trade]],
    tmp_path: Path,
) -> ExchangeHarness:
    if request.param in PAPER_FACTORIES:
        return PAPER_FACTORIES[request.param](truth, request, tmp_path)
    return FACTORIES[request.param](truth)


def market(
    cid: str,
    side: Side,
    amount: float,
    *,
    symbol: str = BTC,
    leverage: float | None = None,
    reduce_only: bool = False,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        type=OrderType.MARKET,
        amount=amount,
        leverage=leverage,
        reduce_only=reduce_only,
    )


def derived_path(bars: CandleSeries, i: int) -> list[tuple[int, float]]:
    """The documented bar path: bullish O→L→H→C, bearish O→H→L→C at +0/20/40/59 s."""
    o, hi, lo, c = (
        float(bars.open[i]),
        float(bars.high[i]),
        float(bars.low[i]),
        float(bars.close[i]),
    )
    prices = (o, lo, hi, c) if c >= o else (o, hi, lo, c)
    ts = int(bars.ts_ms[i])
    return [(ts + off, p) for off, p in zip((0, 20_000, 40_000, 59_000), prices, strict=True)]


def last_close(h: ExchangeHarness, symbol: str, as_of_ms: int) -> float:
    bars = h.bars(symbol, as_of_ms - 3_600_000, as_of_ms)
    return float(bars.close[-1])


# ------------------------------------------------------------------ market data
def test_satisfies_the_port(h: ExchangeHarness) -> None:
    assert isinstance(h.exchange, Exchange)
    assert h.exchange.exchange_id == "binance"


def test_markets_cover_stored_series_with_sane_precision(h: ExchangeHarness) -> None:
    markets = h.exchange.load_markets()
    assert [m.symbol for m in markets] == sorted(SYMBOLS)
    btc = next(m for m in markets if m.symbol == BTC)
    assert (btc.base, btc.quote, btc.settle) == ("BTC", "USDT", "USDT")
    assert btc.min_notional == 5.0 and btc.max_leverage == 20.0
    for m in markets:
        closes = h.bars(m.symbol, START_MS - 86_400_000, START_MS).close
        # every recorded price sits on the inferred grid, and one amount step is 0.1–1 USDT
        assert np.allclose(np.round(closes / m.price_step) * m.price_step, closes, rtol=1e-12)
        assert 0.1 <= m.amount_step * float(closes[-1]) <= 1.0


def test_ohlcv_returns_only_closed_candles(h: ExchangeHarness) -> None:
    now = h.clock.now_ms()
    candles = h.exchange.fetch_ohlcv(BTC, "1m", limit=5)
    assert len(candles) == 5
    assert all(c.close_ms <= now for c in candles)
    assert candles[-1].ts_ms == now - now % MINUTE_MS - MINUTE_MS  # the forming bar is hidden
    expected = h.bars(BTC, candles[0].ts_ms, now)
    assert [c.close for c in candles] == expected.close.tolist()
    h.at(now - now % MINUTE_MS + MINUTE_MS)  # the 06:00 bar closes
    assert h.exchange.fetch_ohlcv(BTC, "1m", limit=1)[-1].ts_ms == candles[-1].ts_ms + MINUTE_MS


def test_ohlcv_since_and_rolled_up_timeframes(h: ExchangeHarness) -> None:
    now = h.clock.now_ms()
    since = now - 3_600_000
    one = h.exchange.fetch_ohlcv(BTC, "1m", since_ms=since, limit=10)
    assert len(one) == 10 and one[0].ts_ms >= since
    five = h.exchange.fetch_ohlcv(BTC, "5m", limit=3)
    assert all(c.close_ms <= now and c.ts_ms % (5 * MINUTE_MS) == 0 for c in five)
    bars = h.bars(BTC, five[-1].ts_ms, five[-1].close_ms)
    assert five[-1].high == float(bars.high.max()) and five[-1].close == float(bars.close[-1])


def test_tickers_come_from_the_last_closed_bar(h: ExchangeHarness) -> None:
    now = h.clock.now_ms()
    tickers = {t.symbol: t for t in h.exchange.fetch_tickers()}
    assert sorted(tickers) == sorted(SYMBOLS)
    bars = h.bars(BTC, now - 86_400_000, now)
    t = tickers[BTC]
    assert t.ts_ms <= now and t.last == float(bars.close[-1])
    assert t.bid is not None and t.ask is not None and t.bid < t.last < t.ask
    assert t.quote_volume_24h == pytest.approx(float(np.sum(bars.close * bars.volume)))
    assert t.change_24h_pct == pytest.approx((t.last / float(bars.open[0]) - 1) * 100)
    assert [x.symbol for x in h.exchange.fetch_tickers([BTC])] == [BTC]


def test_funding_is_the_latest_at_or_before_now(h: ExchangeHarness) -> None:
    now = h.clock.now_ms()
    rate = h.exchange.fetch_funding_rate(BTC)
    stored = h.truth.funding(key(BTC), DAY_START, DAY_END)
    assert rate is not None and rate.ts_ms <= now
    assert rate == [r for r in stored if r.ts_ms <= now][-1]
    assert h.exchange.fetch_open_interest(BTC) is None  # none recorded


def test_derived_trades_appear_only_when_their_bar_has_closed(h: ExchangeHarness) -> None:
    bar_open = h.clock.now_ms() - h.clock.now_ms() % MINUTE_MS  # the forming 06:00 bar
    h.at(bar_open + 59_000)
    assert all(t.ts_ms < bar_open for t in h.exchange.fetch_trades(BTC, bar_open - MINUTE_MS))
    h.at(bar_open + MINUTE_MS)
    trades = h.exchange.poll_trades([BTC], bar_open + 59_000)
    bars = h.bars(BTC, bar_open, bar_open + MINUTE_MS)
    assert [(t.ts_ms, t.price) for t in trades] == derived_path(bars, 0)
    assert all(t.source == "bar" and t.ts_ms <= h.clock.now_ms() for t in trades)
    assert [t.trade_id for t in trades] == [f"bar-{bar_open}-{i}" for i in range(4)]
    assert sum(t.amount for t in trades) == pytest.approx(float(bars.volume[0]))


def test_poll_trades_merges_symbols_in_stream_order(h: ExchangeHarness) -> None:
    now = h.clock.now_ms()
    trades = h.exchange.poll_trades(list(SYMBOLS), now - 5 * MINUTE_MS)
    assert {t.symbol for t in trades} == set(SYMBOLS)
    assert trades == sorted(trades, key=lambda t: (t.ts_ms, t.symbol, t.trade_id))
    assert len(trades) == len(SYMBOLS) * 4 * 5  # five closed bars, four trades each
    assert h.exchange.poll_trades(list(SYMBOLS), now) == []


def test_polling_with_a_cursor_misses_no_trade(h: ExchangeHarness) -> None:
    # the exit monitor's pattern: every 2 s, after_ms = the previous poll's now
    start = h.clock.now_ms()
    cursor, streamed = start, []
    for _ in range(300):  # ten minutes
        h.clock.advance(2)
        streamed += h.exchange.poll_trades([BTC, "ETH/USDT:USDT"], cursor)
        cursor = h.clock.now_ms()
    assert all(t.ts_ms <= cursor for t in streamed)
    assert len({(t.symbol, t.trade_id) for t in streamed}) == len(streamed)  # no repeats
    bar_open = start - start % MINUTE_MS  # the first bar that closed during the loop
    history = [
        t
        for sym in (BTC, "ETH/USDT:USDT")
        for t in h.exchange.fetch_trades(sym, bar_open, limit=10_000)
    ]
    assert sorted(streamed, key=lambda t: (t.symbol, t.ts_ms)) == sorted(
        history, key=lambda t: (t.symbol, t.ts_ms)
    )
    assert len(streamed) == 2 * 4 * 10


def test_recorded_trades_are_served_as_of_now(
    truth: tuple[DuckDBMarketStore, list[Trade]],
) -> None:
    # replay-specific: where the store holds recorded trades, they are the stream
    store, recorded = truth
    cut = recorded[len(recorded) // 2].ts_ms
    clock = SimulatedClock(datetime.fromtimestamp(cut / 1000, UTC))
    ex = ReplayExchange(store, clock)
    seen = ex.fetch_trades(BTC, recorded[0].ts_ms, limit=10_000)
    assert seen == [t for t in recorded if t.ts_ms <= cut]
    assert all(t.source == "trade" for t in seen)
    clock.set_ms(recorded[-1].ts_ms)
    assert ex.poll_trades([BTC], cut) == [t for t in recorded if t.ts_ms > cut]


def test_unknown_symbol_is_an_error(h: ExchangeHarness) -> None:
    with pytest.raises(ExchangeError):
        h.exchange.fetch_ohlcv("NOPE/USDT:USDT", "1m")
    with pytest.raises(OrderRejected):
        h.exchange.create_order("alice", market("u1", Side.BUY, 1.0, symbol="NOPE/USDT:USDT"))


# ------------------------------------------------------------------- orders
def test_create_order_is_idempotent_on_client_id(h: ExchangeHarness) -> None:
    first = h.exchange.create_order("alice", market("entry-1", Side.BUY, 0.01))
    again = h.exchange.create_order("alice", market("entry-1", Side.BUY, 0.01))
    assert again == first
    assert len(h.fills("alice")) == 1
    assert h.exchange.fetch_positions("alice")[0].amount == pytest.approx(0.01)
    # the same client id in another account is another order
    other = h.exchange.create_order("bob", market("entry-1", Side.BUY, 0.01))
    assert other.id != first.id


def test_market_fills_pay_slippage_and_taker_fee_against_us(h: ExchangeHarness) -> None:
    now = h.clock.now_ms()
    last = last_close(h, BTC, now + LATENCY_MS)
    buy = h.exchange.create_order("alice", market("b1", Side.BUY, 0.02, leverage=5))
    assert buy.status is OrderStatus.FILLED and buy.filled == pytest.approx(0.02)
    assert buy.average is not None
    assert buy.average == pytest.approx(last * (1 + SLIPPAGE_BPS / 10_000))
    assert buy.average > last
    assert buy.fee == pytest.approx(0.02 * buy.average * TAKER)
    assert buy.updated_ms == now + LATENCY_MS
    sell = h.exchange.create_order("carol", market("s1", Side.SELL, 0.02, leverage=5))
    assert sell.average is not None
    assert sell.average == pytest.approx(last * (1 - SLIPPAGE_BPS / 10_000))
    assert sell.average < last
    pos = h.exchange.fetch_positions("carol")[0]
    assert pos.direction is Direction.SHORT and pos.entry_price == pytest.approx(sell.average)


def test_stop_loss_triggers_on_the_bar_path_without_look_ahead(h: ExchangeHarness) -> None:
    entry = h.exchange.create_order("alice", market("e", Side.BUY, 0.05, leverage=10))
    assert entry.average is not None
    now = h.clock.now_ms()
    bar_open = now - now % MINUTE_MS
    ahead = h.bars(BTC, bar_open, bar_open + 6 * 3_600_000)
    # a stop between the entry and the lowest low ahead: it will be crossed
    stop = entry.average - (entry.average - float(ahead.low.min())) * 0.5
    sl = h.exchange.create_order(
        "alice",
        OrderRequest(
            client_order_id="sl",
            symbol=BTC,
            side=Side.SELL,
            type=OrderType.STOP_MARKET,
            amount=0.05,
            stop_price=stop,
            reduce_only=True,
        ),
    )
    tp = h.exchange.create_order(
        "alice",
        OrderRequest(
            client_order_id="tp",
            symbol=BTC,
            side=Side.SELL,
            type=OrderType.TAKE_PROFIT_MARKET,
            amount=0.05,
            stop_price=entry.average * 1.5,
            reduce_only=True,
        ),
    )
    path = [p for i in range(len(ahead)) for p in derived_path(ahead, i)]
    trigger_ts, trigger_price = next(
        (ts, p) for ts, p in path if ts > now + LATENCY_MS and p <= stop
    )
    bar_close = trigger_ts - trigger_ts % MINUTE_MS + MINUTE_MS
    h.at(bar_close - 1)  # the triggering bar has not closed: nothing is known yet
    assert h.exchange.fetch_order("alice", sl.id).status is OrderStatus.OPEN
    h.at(bar_close)
    filled = h.exchange.fetch_order("alice", sl.id)
    assert filled.status is OrderStatus.FILLED and filled.average is not None
    assert filled.updated_ms == trigger_ts
    assert filled.average == pytest.approx(trigger_price * (1 - SLIPPAGE_BPS / 10_000))
    assert filled.fee == pytest.approx(0.05 * filled.average * TAKER)
    assert h.exchange.fetch_positions("alice") == []
    # OCO-like: the leftover take-profit cannot open a new position
    assert h.exchange.fetch_order("alice", tp.id).status is OrderStatus.CANCELED
    assert h.exchange.fetch_open_orders("alice") == []


def test_stop_that_would_trigger_at_once_is_rejected(h: ExchangeHarness) -> None:
    entry = h.exchange.create_order("alice", market("e", Side.BUY, 0.01))
    assert entry.average is not None
    with pytest.raises(OrderRejected, match="trigger immediately"):
        h.exchange.create_order(
            "alice",
            OrderRequest(
                client_order_id="sl",
                symbol=BTC,
                side=Side.SELL,
                type=OrderType.STOP_MARKET,
                amount=0.01,
                stop_price=entry.average * 1.01,
                reduce_only=True,
            ),
        )


def test_reduce_only_cannot_flip_or_open(h: ExchangeHarness) -> None:
    with pytest.raises(OrderRejected, match="reduce"):
        h.exchange.create_order("alice", market("r0", Side.SELL, 0.01, reduce_only=True))
    h.exchange.create_order("alice", market("e", Side.BUY, 0.01))
    close = h.exchange.create_order("alice", market("r1", Side.SELL, 0.03, reduce_only=True))
    assert close.status is OrderStatus.FILLED and close.filled == pytest.approx(0.01)
    assert h.exchange.fetch_positions("alice") == []
    with pytest.raises(OrderRejected):
        h.exchange.create_order("alice", market("r2", Side.SELL, 0.01, reduce_only=True))


def test_orders_beyond_free_margin_are_rejected(h: ExchangeHarness) -> None:
    price = last_close(h, BTC, h.clock.now_ms())
    amount = round(30_000 / price, 3)  # 30k USDT notional on a 10k account
    with pytest.raises(OrderRejected, match="insufficient margin") as err:
        h.exchange.create_order("alice", market("big", Side.BUY, amount, leverage=2))
    assert "big" in str(err.value)
    assert h.exchange.fetch_balance("alice").wallet == 10_000.0
    assert h.fills("alice") == []
    ok = h.exchange.create_order("alice", market("big", Side.BUY, amount, leverage=5))
    assert ok.status is OrderStatus.FILLED  # the rejected id left no trace
    used = h.exchange.fetch_balance("alice").used_margin
    assert used == pytest.approx(amount * (ok.average or 0) / 5)


def test_round_trip_wallet_change_is_pnl_minus_fees(h: ExchangeHarness) -> None:
    before = h.exchange.fetch_balance("alice")
    buy = h.exchange.create_order("alice", market("in", Side.BUY, 0.05, leverage=3))
    mid = h.exchange.fetch_balance("alice")
    pos = h.exchange.fetch_positions("alice")[0]
    mark = last_close(h, BTC, h.clock.now_ms())
    assert mid.unrealized_pnl == pytest.approx(0.05 * (mark - pos.entry_price))
    assert mid.used_margin == pytest.approx(0.05 * pos.entry_price / 3)
    h.clock.advance(3 * 3600)
    sell = h.exchange.create_order("alice", market("out", Side.SELL, 0.05, reduce_only=True))
    after = h.exchange.fetch_balance("alice")
    assert buy.average is not None and sell.average is not None
    pnl = (sell.average - buy.average) * 0.05
    assert after.wallet - before.wallet == pytest.approx(pnl - buy.fee - sell.fee)
    assert after.used_margin == 0 and after.unrealized_pnl == 0 and after.equity == after.wallet
    fills = h.fills("alice")
    assert [f.order_id for f in fills] == [buy.id, sell.id]


def test_cancel_stops_a_resting_order_and_is_idempotent(h: ExchangeHarness) -> None:
    price = last_close(h, BTC, h.clock.now_ms())
    limit = h.exchange.create_order(
        "alice",
        OrderRequest(
            client_order_id="lim",
            symbol=BTC,
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=0.01,
            price=round(price * 0.5, 1),
        ),
    )
    assert limit.status is OrderStatus.OPEN
    assert [o.id for o in h.exchange.fetch_open_orders("alice", BTC)] == [limit.id]
    cancelled = h.exchange.cancel_order("alice", limit.id)
    assert cancelled.status is OrderStatus.CANCELED
    assert h.exchange.cancel_order("alice", limit.id).status is OrderStatus.CANCELED
    assert h.exchange.fetch_open_orders("alice") == []
    with pytest.raises(ExchangeError):
        h.exchange.fetch_order("alice", "no-such-order")


def test_limit_rests_until_price_trades_through(h: ExchangeHarness) -> None:
    now = h.clock.now_ms()
    bar_open = now - now % MINUTE_MS
    ahead = h.bars(BTC, bar_open, bar_open + 6 * 3_600_000)
    price = last_close(h, BTC, now)
    level = round(price - (price - float(ahead.low.min())) * 0.5, 1)
    order = h.exchange.create_order(
        "alice",
        OrderRequest(
            client_order_id="lim",
            symbol=BTC,
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=0.01,
            price=level,
        ),
    )
    assert order.status is OrderStatus.OPEN
    path = [p for i in range(len(ahead)) for p in derived_path(ahead, i)]
    through_ts = next(ts for ts, p in path if ts > now + LATENCY_MS and p < level)
    h.at(through_ts - through_ts % MINUTE_MS + MINUTE_MS)
    filled = h.exchange.fetch_order("alice", order.id)
    assert filled.status is OrderStatus.FILLED and filled.average == level
    assert filled.updated_ms == through_ts
    assert filled.fee == pytest.approx(0.01 * level * MAKER)


def test_same_calls_give_identical_results(truth: tuple[DuckDBMarketStore, list[Trade]]) -> None:
    def run() -> list[object]:
        hx = make_replay(truth)
        hx.exchange.create_order("alice", market("e", Side.BUY, 0.02, leverage=4))
        hx.clock.advance(7200)
        out: list[object] = list(hx.exchange.poll_trades(list(SYMBOLS), START_MS))
        out += hx.exchange.fetch_tickers()
        out += [hx.exchange.fetch_balance("alice")]
        return out

    assert run() == run()
