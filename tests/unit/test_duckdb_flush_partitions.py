"""``DuckDBMarketStore.flush_partitions``: the hook the Cloud Storage store uploads by."""

from __future__ import annotations

from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.domain.market import Candle, FundingRate, MarketType

pytestmark = pytest.mark.unit

T0 = 1_747_785_600_000  # 2025-05-21T00:00Z
DAY = 86_400_000


def bar(ts_ms: int, timeframe: str = "1m") -> Candle:
    return Candle(
        exchange="binance",
        market_type=MarketType.PERP,
        symbol="BTC/USDT:USDT",
        timeframe=timeframe,
        ts_ms=ts_ms,
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=1.0,
    )


def test_returns_the_rewritten_files_relative_and_sorted(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path)
    store.write_candles([bar(T0 + DAY), bar(T0), bar(T0, "1h")])
    store.write_funding(
        [
            FundingRate(
                exchange="binance",
                market_type=MarketType.PERP,
                symbol="BTC/USDT:USDT",
                ts_ms=T0,
                rate=1e-4,
            )
        ]
    )
    written = store.flush_partitions()
    assert [p.as_posix() for p in written] == [
        "binance/perp/candles_1h/date=2025-05-21/data.parquet",
        "binance/perp/candles_1m/date=2025-05-21/data.parquet",
        "binance/perp/candles_1m/date=2025-05-22/data.parquet",
        "binance/perp/funding/date=2025-05-21/data.parquet",
    ]
    assert all((tmp_path / p).is_file() for p in written)


def test_only_dirty_partitions_and_nothing_when_clean(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path)
    store.write_candles([bar(T0), bar(T0 + DAY)])
    store.flush()
    assert store.flush_partitions() == []
    store.write_candles([bar(T0 + DAY + 60_000)])
    store.write_candles([bar(T0)])  # already stored: dirties nothing
    assert [p.as_posix() for p in store.flush_partitions()] == [
        "binance/perp/candles_1m/date=2025-05-22/data.parquet"
    ]
