"""The live collector's gap arithmetic: holes between stored 1m bars, ranges less
recorded ones, derived bars back to domain candles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prometheus_trader.domain.market import MINUTE_MS, CandleSeries, MarketType
from prometheus_trader.ports import SeriesKey
from prometheus_trader.usecases.collect_live import series_to_candles
from prometheus_trader.usecases.market_gaps import holes, subtract

pytestmark = pytest.mark.unit
M = MINUTE_MS


def test_holes_inside_and_before_the_end() -> None:
    ts = np.array([0, M, 4 * M, 5 * M, 9 * M], dtype=np.int64)
    assert holes(ts, 0, 10 * M) == [(2 * M, 4 * M), (6 * M, 9 * M)]
    assert holes(ts, 0, 12 * M) == [(2 * M, 4 * M), (6 * M, 9 * M), (10 * M, 12 * M)]
    assert holes(ts[:2], 0, 2 * M) == []


@given(st.sets(st.integers(0, 200), min_size=1))
def test_holes_are_exactly_the_missing_minutes(present: set[int]) -> None:
    ts = np.array(sorted(present), dtype=np.int64) * M
    lo, hi = int(ts[0]), 201 * M
    missing = {t for a, b in holes(ts, lo, hi) for t in range(a, b, M)}
    assert missing == set(range(lo, hi, M)) - {int(t) for t in ts}


def test_subtract_cuts_recorded_ranges() -> None:
    assert subtract([(0, 10 * M)], [(2 * M, 4 * M), (8 * M, 12 * M)]) == [
        (0, 2 * M),
        (4 * M, 8 * M),
    ]
    assert subtract([(0, 3 * M)], [(0, 3 * M)]) == []
    assert subtract([(0, 3 * M)], [(5 * M, 6 * M)]) == [(0, 3 * M)]


def test_series_to_candles_keeps_values_and_unknown_taker_volume() -> None:
    key = SeriesKey("binance", MarketType.PERP, "BTC/USDT:USDT")
    s = CandleSeries(
        "BTC/USDT:USDT",
        "5m",
        np.array([0, 5 * M], dtype=np.int64),
        np.array([1.0, 2.0]),
        np.array([3.0, 4.0]),
        np.array([0.5, 1.5]),
        np.array([2.0, 3.0]),
        np.array([10.0, 20.0]),
        np.array([4.0, np.nan]),
    )
    out = series_to_candles(key, s)
    assert [(c.timeframe, c.ts_ms, c.high, c.volume) for c in out] == [
        ("5m", 0, 3.0, 10.0),
        ("5m", 5 * M, 4.0, 20.0),
    ]
    assert [c.taker_buy_volume for c in out] == [4.0, None]
