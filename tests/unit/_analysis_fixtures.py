"""Builders of constructed candle series and features for the analysis tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prometheus_trader.domain.features import SymbolFeatures
from prometheus_trader.domain.market import MINUTE_MS, CandleSeries, DataQuality

T0 = 1_746_000_000_000  # 2025-04-30 08:00 UTC, aligned to the hour


def series(
    closes: Sequence[float] | np.ndarray,
    *,
    symbol: str = "TEST/USDT:USDT",
    start_ms: int = T0,
    volume: Sequence[float] | np.ndarray | None = None,
    taker_buy: Sequence[float] | np.ndarray | None = None,
    spread: float = 0.0002,
    ts_ms: Sequence[int] | np.ndarray | None = None,
) -> CandleSeries:
    """1m bars through ``closes``: open = previous close, high/low ``spread`` beyond the body."""
    c = np.asarray(closes, dtype=np.float64)
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) * (1 + spread)
    lo = np.minimum(o, c) * (1 - spread)
    vol = np.full(c.shape, 10.0) if volume is None else np.asarray(volume, dtype=np.float64)
    taker = (
        np.full(c.shape, np.nan) if taker_buy is None else np.asarray(taker_buy, dtype=np.float64)
    )
    ts = (
        start_ms + MINUTE_MS * np.arange(c.shape[0], dtype=np.int64)
        if ts_ms is None
        else np.asarray(ts_ms, dtype=np.int64)
    )
    return CandleSeries(symbol, "1m", ts, o, h, lo, c, vol, taker)


def ohlc_series(
    bars: Sequence[tuple[float, float, float, float]],
    *,
    symbol: str = "TEST/USDT:USDT",
    volume: Sequence[float] | None = None,
) -> CandleSeries:
    """1m bars from explicit (open, high, low, close) tuples."""
    arr = np.asarray(bars, dtype=np.float64)
    n = arr.shape[0]
    vol = np.full(n, 10.0) if volume is None else np.asarray(volume, dtype=np.float64)
    ts = T0 + MINUTE_MS * np.arange(n, dtype=np.int64)
    return CandleSeries(
        symbol, "1m", ts, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], vol, np.full(n, np.nan)
    )


def random_walk(n: int, *, seed: int, drift: float = 0.0, vol: float = 0.001) -> np.ndarray:
    """Log-normal random walk from 100 (fixed seed)."""
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(drift + vol * rng.standard_normal(n)))


def now_after(s: CandleSeries) -> int:
    """The moment the last bar of ``s`` closes."""
    return int(s.ts_ms[-1]) + MINUTE_MS


def features(**overrides: Any) -> SymbolFeatures:
    """OK-quality features with only the given fields known."""
    base: dict[str, Any] = {
        "symbol": "TEST/USDT:USDT",
        "as_of_ms": T0,
        "bars": 1440,
        "data_quality": DataQuality.OK,
        "last_price": 100.0,
    }
    base.update(overrides)
    return SymbolFeatures(**base)
