"""Contract suite for the ``MarketStore`` port: every adapter must pass it.

To add an adapter, append a factory to ``FACTORIES``: it opens the store kept in a folder
(or any location derived from it); calling it again on the same folder must reopen the
same data.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from google.cloud import storage  # type: ignore[attr-defined]  # no py.typed

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.gcp.gcs_blob_store import GcsBlobStore
from prometheus_trader.adapters.gcp.gcs_market_store import GcsMarketStore
from prometheus_trader.domain.market import (
    Candle,
    FundingRate,
    MarketType,
    OpenInterest,
    Side,
    Ticker,
    Trade,
)
from prometheus_trader.ports import MarketStore, SeriesKey

pytestmark = pytest.mark.contract

StoreFactory = Callable[[Path], MarketStore]


def _gcs(path: Path) -> MarketStore:
    """One bucket per test folder on the storage emulator, and a fresh cache folder per
    open: a reopen must get its data from the bucket, not from a local leftover."""
    client = storage.Client(project="demo-prometheus")
    bucket = "market-" + hashlib.sha256(str(path).encode()).hexdigest()[:24]
    GcsBlobStore.ensure_bucket(bucket, client)
    cache = path / "gcs-cache" / uuid.uuid4().hex
    return GcsMarketStore(bucket, cache, client=client, prefix="market")


FACTORIES: dict[str, StoreFactory] = {
    "duckdb": lambda path: DuckDBMarketStore(path / "market"),
    "gcs": _gcs,
}
# Factories that need the emulators: the fixture starts them only for these.
NEEDS_EMULATORS = {"gcs"}

T0 = 1_747_785_600_000  # 2025-05-21T00:00Z
MIN = 60_000
BTC = SeriesKey("binance", MarketType.PERP, "BTC/USDT:USDT")
ETH = SeriesKey("binance", MarketType.PERP, "ETH/USDT:USDT")
BTC_SPOT = SeriesKey("binance", MarketType.SPOT, "BTC/USDT")


@pytest.fixture(params=sorted(FACTORIES))
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    if request.param in NEEDS_EMULATORS:
        request.getfixturevalue("emulators")
    return FACTORIES[request.param]


@pytest.fixture
def market_store(store_factory: StoreFactory, tmp_path: Path) -> MarketStore:
    return store_factory(tmp_path)


def candle(
    key: SeriesKey,
    ts_ms: int,
    close: float = 100.0,
    timeframe: str = "1m",
    taker_buy_volume: float | None = None,
) -> Candle:
    return Candle(
        exchange=key.exchange,
        market_type=key.market_type,
        symbol=key.symbol,
        timeframe=timeframe,
        ts_ms=ts_ms,
        open=close - 1,
        high=close + 2,
        low=close - 3,
        close=close,
        volume=10.0,
        taker_buy_volume=taker_buy_volume,
    )


def trade(key: SeriesKey, ts_ms: int, trade_id: str, price: float = 100.0) -> Trade:
    return Trade(
        exchange=key.exchange,
        market_type=key.market_type,
        symbol=key.symbol,
        ts_ms=ts_ms,
        trade_id=trade_id,
        price=price,
        amount=1.5,
        side=Side.SELL if int(trade_id) % 2 else Side.BUY,
    )


def funding(key: SeriesKey, ts_ms: int, rate: float) -> FundingRate:
    return FundingRate(
        exchange=key.exchange,
        market_type=key.market_type,
        symbol=key.symbol,
        ts_ms=ts_ms,
        rate=rate,
    )


def ticker(key: SeriesKey, ts_ms: int, last: float) -> Ticker:
    return Ticker(
        exchange=key.exchange,
        market_type=key.market_type,
        symbol=key.symbol,
        ts_ms=ts_ms,
        last=last,
        bid=last - 0.1,
        ask=last + 0.1,
    )


def oi(key: SeriesKey, ts_ms: int, amount: float) -> OpenInterest:
    return OpenInterest(
        exchange=key.exchange,
        market_type=key.market_type,
        symbol=key.symbol,
        ts_ms=ts_ms,
        amount=amount,
    )


def test_store_satisfies_the_port(market_store: MarketStore) -> None:
    assert isinstance(market_store, MarketStore)


def test_writes_are_idempotent_and_count_new_rows(market_store: MarketStore) -> None:
    bars = [candle(BTC, T0 + i * MIN) for i in range(3)]
    assert market_store.write_candles(bars) == 3
    assert market_store.write_candles(bars) == 0
    assert market_store.write_candles([*bars, candle(BTC, T0 + 3 * MIN)]) == 1
    ticks = [trade(BTC, T0, "1"), trade(BTC, T0, "2")]
    assert market_store.write_trades(ticks) == 2
    assert market_store.write_trades(ticks[:1]) == 0
    assert market_store.write_funding([funding(BTC, T0, 1e-4)]) == 1
    assert market_store.write_funding([funding(BTC, T0, 1e-4)]) == 0
    assert market_store.write_open_interest([oi(BTC, T0, 5.0)]) == 1
    assert market_store.write_open_interest([oi(BTC, T0, 5.0)]) == 0
    assert market_store.write_tickers([ticker(BTC, T0, 100.0)]) == 1
    assert market_store.write_tickers([ticker(BTC, T0, 100.0)]) == 0
    assert len(market_store.candles(BTC, "1m", T0, T0 + 10 * MIN)) == 4


def test_duplicate_rows_in_one_batch_count_once(market_store: MarketStore) -> None:
    assert market_store.write_candles([candle(BTC, T0), candle(BTC, T0)]) == 1
    assert market_store.write_trades([trade(BTC, T0, "7"), trade(BTC, T0, "7")]) == 1


def test_reads_see_writes_before_flush(market_store: MarketStore) -> None:
    market_store.write_candles([candle(BTC, T0, close=123.0)])
    market_store.write_trades([trade(BTC, T0 + 5, "9")])
    series = market_store.candles(BTC, "1m", T0, T0 + MIN)
    assert series.close.tolist() == [123.0]
    assert [t.trade_id for t in market_store.trades(BTC, T0, T0 + MIN)] == ["9"]


def test_data_persists_after_flush_and_reopen(store_factory: StoreFactory, tmp_path: Path) -> None:
    first = store_factory(tmp_path)
    first.write_candles([candle(BTC, T0 + i * MIN, close=100.0 + i) for i in range(3)])
    first.write_candles([candle(BTC, T0 + 86_400_000, close=200.0)])  # next UTC day
    first.write_trades([trade(BTC, T0 + 1, "1", price=99.5)])
    first.write_funding([funding(BTC, T0, -2e-5)])
    first.write_open_interest([oi(BTC, T0, 42.0)])
    first.write_tickers([ticker(BTC, T0, 101.0)])
    first.flush()

    second = store_factory(tmp_path)
    assert second.candles(BTC, "1m", T0, T0 + 2 * 86_400_000).close.tolist() == [
        100.0,
        101.0,
        102.0,
        200.0,
    ]
    assert second.trades(BTC, T0, T0 + MIN) == [trade(BTC, T0 + 1, "1", price=99.5)]
    assert second.funding(BTC, T0, T0) == [funding(BTC, T0, -2e-5)]
    assert second.open_interest(BTC, T0, T0) == [oi(BTC, T0, 42.0)]
    assert second.latest_tickers("binance", T0) == [ticker(BTC, T0, 101.0)]
    assert second.write_candles([candle(BTC, T0)]) == 0


def test_candles_window_uses_open_time_and_close_time(market_store: MarketStore) -> None:
    market_store.write_candles([candle(BTC, T0 + i * MIN, close=100.0 + i) for i in range(10)])
    # bars open at T0+2m .. ; the bar opening at T0+5m closes at T0+6m > end: excluded
    series = market_store.candles(BTC, "1m", T0 + 2 * MIN, T0 + 5 * MIN + MIN - 1)
    assert series.ts_ms.tolist() == [T0 + 2 * MIN, T0 + 3 * MIN, T0 + 4 * MIN]
    # a bar closing exactly at end is included
    assert market_store.candles(BTC, "1m", T0, T0 + MIN).ts_ms.tolist() == [T0]
    assert len(market_store.candles(BTC, "1m", T0, T0 + MIN - 1)) == 0
    assert series.symbol == BTC.symbol and series.timeframe == "1m"


def test_candles_are_oldest_first_and_keep_timeframes_apart(market_store: MarketStore) -> None:
    market_store.write_candles([candle(BTC, T0 + i * MIN) for i in (5, 1, 3)])
    market_store.write_candles([candle(BTC, T0, timeframe="1h")])
    assert market_store.candles(BTC, "1m", T0, T0 + 60 * MIN).ts_ms.tolist() == [
        T0 + MIN,
        T0 + 3 * MIN,
        T0 + 5 * MIN,
    ]
    assert market_store.candles(BTC, "1h", T0, T0 + 60 * MIN).ts_ms.tolist() == [T0]


def test_candle_values_and_missing_taker_volume(market_store: MarketStore) -> None:
    market_store.write_candles(
        [candle(BTC, T0, close=50.0, taker_buy_volume=4.0), candle(BTC, T0 + MIN, close=51.0)]
    )
    series = market_store.candles(BTC, "1m", T0, T0 + 2 * MIN)
    assert series.open.tolist() == [49.0, 50.0]
    assert series.high.tolist() == [52.0, 53.0]
    assert series.low.tolist() == [47.0, 48.0]
    assert series.volume.tolist() == [10.0, 10.0]
    assert series.taker_buy_volume[0] == 4.0
    assert math.isnan(series.taker_buy_volume[1])
    assert not series.has_taker_volume


def test_series_keys_are_sorted_and_only_from_candles(market_store: MarketStore) -> None:
    assert market_store.series_keys() == []
    market_store.write_candles([candle(k, T0) for k in (ETH, BTC_SPOT, BTC)])
    market_store.write_trades(
        [trade(SeriesKey("binance", MarketType.PERP, "XRP/USDT:USDT"), T0, "1")]
    )
    assert market_store.series_keys() == [BTC, ETH, BTC_SPOT]


def test_last_candle_and_candle_range(market_store: MarketStore) -> None:
    assert market_store.last_candle_ms(BTC, "1m") is None
    assert market_store.candle_range(BTC, "1m") is None
    market_store.write_candles([candle(BTC, T0 + i * MIN) for i in (4, 0, 9)])
    market_store.write_candles([candle(ETH, T0 + 20 * MIN)])
    assert market_store.last_candle_ms(BTC, "1m") == T0 + 9 * MIN
    assert market_store.candle_range(BTC, "1m") == (T0, T0 + 9 * MIN)
    assert market_store.candle_range(BTC, "5m") is None


def test_trades_are_ordered_by_time_then_id_within_inclusive_range(
    market_store: MarketStore,
) -> None:
    market_store.write_trades(
        [trade(BTC, T0 + 10, "3"), trade(BTC, T0 + 5, "2"), trade(BTC, T0 + 10, "1")]
    )
    market_store.write_trades([trade(BTC, T0 + 20, "4"), trade(ETH, T0 + 10, "5")])
    got = market_store.trades(BTC, T0 + 5, T0 + 10)
    assert [(t.ts_ms, t.trade_id) for t in got] == [(T0 + 5, "2"), (T0 + 10, "1"), (T0 + 10, "3")]
    assert got[0] == trade(BTC, T0 + 5, "2")


def test_funding_and_open_interest_ranges_are_inclusive(market_store: MarketStore) -> None:
    eight_h = 8 * 60 * MIN
    market_store.write_funding([funding(BTC, T0 + i * eight_h, i * 1e-5) for i in range(4)])
    market_store.write_funding([funding(ETH, T0, 9e-5)])
    got = market_store.funding(BTC, T0 + eight_h, T0 + 2 * eight_h)
    assert [(f.ts_ms, f.rate) for f in got] == [(T0 + eight_h, 1e-5), (T0 + 2 * eight_h, 2e-5)]
    market_store.write_open_interest([oi(BTC, T0 + i * MIN, 10.0 + i) for i in range(3)])
    assert [p.amount for p in market_store.open_interest(BTC, T0, T0 + MIN)] == [10.0, 11.0]


def test_latest_tickers_as_of(market_store: MarketStore) -> None:
    market_store.write_tickers(
        [
            ticker(BTC, T0, 100.0),
            ticker(BTC, T0 + 2 * MIN, 102.0),
            ticker(ETH, T0 + MIN, 10.0),
            ticker(BTC_SPOT, T0 + 3 * MIN, 99.0),
        ]
    )
    assert market_store.latest_tickers("binance", T0 - 1) == []
    assert [(t.symbol, t.last) for t in market_store.latest_tickers("binance", T0 + MIN)] == [
        ("BTC/USDT:USDT", 100.0),
        ("ETH/USDT:USDT", 10.0),
    ]
    later = market_store.latest_tickers("binance", T0 + 10 * MIN)
    assert sorted((t.symbol, t.market_type.value, t.last) for t in later) == [
        ("BTC/USDT", "spot", 99.0),
        ("BTC/USDT:USDT", "perp", 102.0),
        ("ETH/USDT:USDT", "perp", 10.0),
    ]
    assert market_store.latest_tickers("bybit", T0 + 10 * MIN) == []


def test_batched_reads_equal_the_single_reads(market_store: MarketStore) -> None:
    """candles_many / funding_many / open_interest_many = one call per key, in one query."""
    eight_h = 8 * 60 * MIN
    market_store.write_candles(
        [candle(k, T0 + i * MIN, 100 + i) for k in (BTC, ETH) for i in range(5)]
    )
    market_store.write_candles([candle(BTC_SPOT, T0, 99.0)])
    market_store.write_funding(
        [funding(k, T0 + i * eight_h, i * 1e-5) for k in (BTC, ETH) for i in range(3)]
    )
    market_store.write_open_interest([oi(BTC, T0 + i * MIN, 10.0 + i) for i in range(3)])
    keys = [BTC, ETH, BTC_SPOT]
    many = market_store.candles_many(keys, "1m", T0 + MIN, T0 + 4 * MIN)
    assert list(many) == keys
    for k in keys:
        single = market_store.candles(k, "1m", T0 + MIN, T0 + 4 * MIN)
        assert many[k].ts_ms.tolist() == single.ts_ms.tolist()
        assert many[k].close.tolist() == single.close.tolist()
    assert len(many[BTC_SPOT]) == 0 and len(many[BTC]) == 3
    rates = market_store.funding_many(keys, T0, T0 + eight_h)
    assert {k: [r.rate for r in v] for k, v in rates.items()} == {
        k: [r.rate for r in market_store.funding(k, T0, T0 + eight_h)] for k in keys
    }
    assert [r.rate for r in rates[ETH]] == [0.0, 1e-5] and rates[BTC_SPOT] == []
    interest = market_store.open_interest_many([BTC, ETH], T0, T0 + MIN)
    assert [p.amount for p in interest[BTC]] == [10.0, 11.0] and interest[ETH] == []
