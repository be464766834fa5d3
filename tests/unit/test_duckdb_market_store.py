"""DuckDB market store specifics beyond the port contract: layout, flush, extras."""

from __future__ import annotations

from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.domain.market import Candle, MarketType
from prometheus_trader.ports import SeriesKey
from prometheus_trader.sample import (
    SAMPLE_END_MS,
    SAMPLE_START_MS,
    SAMPLE_STORE_DIR,
    SAMPLE_SYMBOLS,
)

pytestmark = pytest.mark.unit

T0 = 1_747_785_600_000  # 2025-05-21T00:00Z
DAY = 86_400_000
MIN = 60_000
BTC = SeriesKey("binance", MarketType.PERP, "BTC/USDT:USDT")
ETH = SeriesKey("binance", MarketType.PERP, "ETH/USDT:USDT")


def bar(key: SeriesKey, ts_ms: int, close: float = 10.0, timeframe: str = "1m") -> Candle:
    return Candle(
        exchange=key.exchange,
        market_type=key.market_type,
        symbol=key.symbol,
        timeframe=timeframe,
        ts_ms=ts_ms,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
    )


def test_partition_layout(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path)
    store.write_candles([bar(BTC, T0), bar(BTC, T0 + DAY), bar(BTC, T0, timeframe="1h")])
    store.write_mark_candles([bar(BTC, T0, timeframe="8h")])
    store.flush()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "binance/perp/candles_1h/date=2025-05-21/data.parquet",
        "binance/perp/candles_1m/date=2025-05-21/data.parquet",
        "binance/perp/candles_1m/date=2025-05-22/data.parquet",
        "binance/perp/mark_8h/date=2025-05-21/data.parquet",
    ]


def test_flush_rewrites_only_dirty_partitions(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path)
    store.write_candles([bar(BTC, T0), bar(BTC, T0 + DAY)])
    store.flush()
    day1 = tmp_path / "binance/perp/candles_1m/date=2025-05-21/data.parquet"
    day2 = tmp_path / "binance/perp/candles_1m/date=2025-05-22/data.parquet"
    day1.unlink()  # a rewrite of this clean partition would bring it back
    store.write_candles([bar(BTC, T0 + DAY + MIN)])
    store.write_candles([bar(BTC, T0 + DAY)])  # not new: must not dirty anything more
    store.flush()
    assert not day1.exists()
    assert DuckDBMarketStore(tmp_path).candle_range(BTC, "1m") == (T0 + DAY, T0 + DAY + MIN)
    assert day2.exists()


def test_flush_output_is_deterministic(tmp_path: Path) -> None:
    rows = [bar(k, T0 + i * MIN, close=1.0 + i) for i in range(50) for k in (ETH, BTC)]
    for name, order in (("a", rows), ("b", list(reversed(rows)))):
        store = DuckDBMarketStore(tmp_path / name)
        store.write_candles(order)
        store.close()
    rel = "binance/perp/candles_1m/date=2025-05-21/data.parquet"
    assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_candles_many_matches_single_queries(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path)
    store.write_candles([bar(BTC, T0 + i * MIN, close=100.0 + i) for i in range(5)])
    store.write_candles([bar(ETH, T0 + i * MIN, close=10.0 + i) for i in range(3)])
    missing = SeriesKey("binance", MarketType.PERP, "XRP/USDT:USDT")
    many = store.candles_many([ETH, missing, BTC], "1m", T0 + MIN, T0 + 4 * MIN)
    assert list(many) == [ETH, missing, BTC]
    for key in (ETH, BTC):
        single = store.candles(key, "1m", T0 + MIN, T0 + 4 * MIN)
        assert many[key].ts_ms.tolist() == single.ts_ms.tolist()
        assert many[key].close.tolist() == single.close.tolist()
    assert many[BTC].close.tolist() == [101.0, 102.0, 103.0]
    assert len(many[missing]) == 0


def test_mark_candles_are_kept_apart_from_candles(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path)
    assert store.write_mark_candles([bar(BTC, T0, close=5.0, timeframe="8h")]) == 1
    assert store.write_mark_candles([bar(BTC, T0, close=5.0, timeframe="8h")]) == 0
    assert store.series_keys() == []
    assert [c.close for c in store.mark_candles(BTC, "8h", T0, T0 + 8 * 60 * MIN)] == [5.0]


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    DuckDBMarketStore(tmp_path).close()
    store = DuckDBMarketStore(tmp_path, read_only=True)
    with pytest.raises(PermissionError):
        store.write_candles([bar(BTC, T0)])


def test_unknown_timeframe_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timeframe"):
        DuckDBMarketStore(tmp_path).write_candles([bar(BTC, T0, timeframe="7m")])


def test_bundled_sample_holds_two_full_days_of_every_symbol() -> None:
    store = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    keys = store.series_keys()
    assert [k.symbol for k in keys] == sorted(SAMPLE_SYMBOLS)
    for key in keys:
        assert store.candle_range(key, "1m") == (SAMPLE_START_MS, SAMPLE_END_MS - MIN)
        series = store.candles(key, "1m", SAMPLE_START_MS, SAMPLE_END_MS)
        assert len(series) == (SAMPLE_END_MS - SAMPLE_START_MS) // MIN
        assert (series.high >= series.low).all()
        rates = store.funding(key, SAMPLE_START_MS, SAMPLE_END_MS)
        assert len(rates) in (6, 12, 48)  # 8h, 4h or 1h funding interval, by symbol
        # Binance's funding times carry a few ms of jitter; they are kept as recorded
        assert all(r.ts_ms % (60 * MIN) < 100 for r in rates)
        assert len(store.mark_candles(key, "8h", SAMPLE_START_MS, SAMPLE_END_MS)) == 6
