"""DuckDB store: reads answered from memory (pending appends, cached funding / open
interest) return exactly what the same reads return from the DuckDB tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.domain.market import (
    MINUTE_MS,
    Candle,
    CandleSeries,
    FundingRate,
    MarketType,
    OpenInterest,
)
from prometheus_trader.ports import SeriesKey

pytestmark = pytest.mark.unit
KEYS = [SeriesKey("binance", MarketType.PERP, s) for s in ("BTC/USDT:USDT", "ETH/USDT:USDT")]
OTHER = SeriesKey("bybit", MarketType.PERP, "BTC/USDT:USDT")


def _bar(key: SeriesKey, minute: int, taker: float | None = 1.0) -> Candle:
    return Candle(
        exchange=key.exchange,
        market_type=key.market_type,
        symbol=key.symbol,
        timeframe="1m",
        ts_ms=minute * MINUTE_MS,
        open=1.0 + minute,
        high=2.0 + minute,
        low=0.5,
        close=1.5 + minute / 7,
        volume=3.0 + minute,
        taker_buy_volume=taker,
    )


def _minute(m: int) -> list[Candle]:
    """One collector round: every series' bar of minute ``m`` (symbols in reverse order,
    so a batch is not sorted the way a read is)."""
    return [_bar(k, m, None if m % 3 == 0 else 0.5) for k in reversed([*KEYS, OTHER])]


def _same(a: dict[SeriesKey, CandleSeries], b: dict[SeriesKey, CandleSeries]) -> None:
    assert list(a) == list(b)
    for key in a:
        for field in ("ts_ms", "open", "high", "low", "close", "volume", "taker_buy_volume"):
            np.testing.assert_array_equal(getattr(a[key], field), getattr(b[key], field))
            assert getattr(a[key], field).dtype == getattr(b[key], field).dtype


def test_reads_from_pending_appends_equal_reads_from_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_pending: list[str] = []
    answer = DuckDBMarketStore._series_from_pending

    def counted(self: DuckDBMarketStore, *args: Any) -> dict[SeriesKey, CandleSeries]:
        from_pending.append(self.root.name)
        return answer(self, *args)

    monkeypatch.setattr(DuckDBMarketStore, "_series_from_pending", counted)
    fast = DuckDBMarketStore(tmp_path / "fast")
    slow = DuckDBMarketStore(tmp_path / "slow")
    for store in (fast, slow):
        store.write_candles([c for m in range(30) for c in _minute(m)])
    keys = [*KEYS, OTHER, SeriesKey("binance", MarketType.PERP, "XRP/USDT:USDT")]
    for m in range(30, 50):
        if m % 2 == 0:  # two minutes per batch, the later first
            for store in (fast, slow):
                store.write_candles(_minute(m + 1) + _minute(m))
        # the slow store INSERTs its pending rows (a read from before them), the fast one
        # answers from them
        slow.candles_many(keys, "1m", -MINUTE_MS, (m + 1) * MINUTE_MS)
        if m % 5 in (1, 4):
            for start, end in [(m - 4, m + 1), (m - 2, m), (m - 4, m + 3), (m + 1, m + 2)]:
                window = (start * MINUTE_MS, end * MINUTE_MS)
                _same(
                    fast.candles_many(keys, "1m", *window),
                    slow.candles_many(keys, "1m", *window),
                )
                _same(
                    {KEYS[0]: fast.candles(KEYS[0], "1m", *window)},
                    {KEYS[0]: slow.candles(KEYS[0], "1m", *window)},
                )
    # the fast store did answer from its pending rows, the slow one never
    assert from_pending.count("fast") >= 8 and "slow" not in from_pending
    # a window reaching into the INSERTed rows is read from the table, and equal too
    _same(
        fast.candles_many(keys, "1m", 20 * MINUTE_MS, 50 * MINUTE_MS),
        slow.candles_many(keys, "1m", 20 * MINUTE_MS, 50 * MINUTE_MS),
    )


def _rate(key: SeriesKey, hour: int, rate: float) -> FundingRate:
    return FundingRate(
        exchange=key.exchange,
        market_type=key.market_type,
        symbol=key.symbol,
        ts_ms=hour * 60 * MINUTE_MS,
        rate=rate,
    )


def test_funding_and_open_interest_reads_follow_every_kind_of_write(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path / "store")
    store.write_funding([_rate(k, h, 1e-4 * h) for h in range(0, 24, 8) for k in KEYS])
    hour = 60 * MINUTE_MS

    def expected(keys: list[SeriesKey], start: int, end: int) -> dict[SeriesKey, list[object]]:
        return {k: store.funding(k, start, end) for k in keys}  # the single-series query

    keys = [*KEYS, OTHER]
    assert store.funding_many(keys, 0, 24 * hour) == expected(keys, 0, 24 * hour)
    # an append (after every stored row), then a write with an older row and a repeat
    store.write_funding([_rate(KEYS[1], 24, 2e-4), _rate(OTHER, 24, 3e-4)])
    assert store.funding_many(keys, 8 * hour, 24 * hour) == expected(keys, 8 * hour, 24 * hour)
    store.write_funding([_rate(KEYS[0], 4, -1e-4), _rate(KEYS[0], 8, 9.0)])
    got = store.funding_many(keys, 0, 30 * hour)
    assert got == expected(keys, 0, 30 * hour)
    assert [r.rate for r in got[KEYS[0]]] == [0.0, -1e-4, 8e-4, 1.6e-3]  # the stored 8 h won
    assert store.funding_many(keys, 5 * hour, 5 * hour) == {k: [] for k in keys}

    points = [
        OpenInterest(
            exchange="binance",
            market_type=MarketType.PERP,
            symbol=KEYS[0].symbol,
            ts_ms=m * MINUTE_MS,
            amount=float(m),
            value=None if m % 2 else 2.0 * m,
        )
        for m in range(10)
    ]
    assert store.open_interest_many(KEYS, 0, 10 * MINUTE_MS) == {k: [] for k in KEYS}
    store.write_open_interest(points[5:])
    store.write_open_interest(points[:5])  # older rows: not an append
    got_oi = store.open_interest_many(KEYS, 2 * MINUTE_MS, 7 * MINUTE_MS)
    assert got_oi[KEYS[0]] == points[2:8]
    assert got_oi[KEYS[1]] == []
    # after reopening (rows from Parquet), the same answers
    store.close()
    again = DuckDBMarketStore(tmp_path / "store")
    assert again.open_interest_many(KEYS, 2 * MINUTE_MS, 7 * MINUTE_MS) == got_oi
    assert again.funding_many(keys, 0, 30 * hour) == got
