"""DuckDB store: appended rows wait for the next read, counts and ranges stay exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.domain.market import MINUTE_MS, Candle, FundingRate, MarketType
from prometheus_trader.ports import SeriesKey

pytestmark = pytest.mark.unit
KEY = SeriesKey("binance", MarketType.PERP, "BTC/USDT:USDT")


def _bar(ts: int, symbol: str = KEY.symbol, close: float = 1.0) -> Candle:
    return Candle(
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=symbol,
        timeframe="1m",
        ts_ms=ts,
        open=1.0,
        high=2.0,
        low=0.5,
        close=close,
        volume=3.0,
    )


def test_appends_are_counted_ranged_and_read_back(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path)
    assert store.write_candles([_bar(m * MINUTE_MS) for m in range(3)]) == 3
    assert store.write_candles([_bar(3 * MINUTE_MS)]) == 1  # pending, not yet inserted
    assert store.candle_range(KEY, "1m") == (0, 3 * MINUTE_MS)
    assert store.write_candles([_bar(4 * MINUTE_MS, "ETH/USDT:USDT")]) == 1
    assert [k.symbol for k in store.series_keys()] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    # re-writing pending rows (and one older new row) counts only the new one
    assert store.write_candles([_bar(3 * MINUTE_MS, close=9.0), _bar(-MINUTE_MS)]) == 1
    series = store.candles(KEY, "1m", -MINUTE_MS, 10 * MINUTE_MS)
    assert list(series.ts_ms) == [m * MINUTE_MS for m in range(-1, 4)]
    assert float(series.close[-1]) == 1.0  # the stored row won, not the re-write
    assert store.candle_range(KEY, "1m") == (-MINUTE_MS, 3 * MINUTE_MS)
    # a batch repeating a key inside itself: first wins, counted once
    assert store.write_candles([_bar(5 * MINUTE_MS, close=5.0), _bar(5 * MINUTE_MS)]) == 1
    assert float(store.candles(KEY, "1m", 5 * MINUTE_MS, 6 * MINUTE_MS).close[0]) == 5.0


def test_pending_rows_reach_the_parquet_files(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path)
    store.write_candles([_bar(0)])
    rate = FundingRate(
        exchange="binance", market_type=MarketType.PERP, symbol=KEY.symbol, ts_ms=0, rate=1e-4
    )
    assert store.write_funding([rate]) == 1
    store.close()
    again = DuckDBMarketStore(tmp_path)
    assert again.candle_range(KEY, "1m") == (0, 0)
    assert again.funding(KEY, 0, 0) == [rate]
    assert again.write_funding([rate]) == 0
