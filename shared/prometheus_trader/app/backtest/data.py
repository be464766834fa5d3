"""Market data held in memory for a backtest: one read of the store, then array slices.

``MemoryMarketData`` loads every 1m series, funding and open-interest history of one
exchange/market type once (one DuckDB query per kind) and answers the read methods of the
``MarketStore`` port by binary search on numpy arrays, so the paper exchange and the
engine never query a database per event. Recorded trades (large) stay in the source store
and are read on demand, an hour at a time, by the exchange's own cache.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prometheus_trader.adapters.embedded.duckdb_market_store import (
    TABLES,
    DuckDBMarketStore,
    read_table,
)
from prometheus_trader.domain.market import (
    MINUTE_MS,
    TIMEFRAME_MS,
    Candle,
    CandleSeries,
    FundingRate,
    MarketType,
    OpenInterest,
    Ticker,
    Trade,
)
from prometheus_trader.ports import MarketStore, SeriesKey

FAR_FUTURE_MS = 2**62
_TYPES = {
    f.name: f.type
    for f in TABLES["candles"].schema
    if f.name in ("ts_ms", "open", "high", "low", "close", "volume", "taker_buy_volume")
}


T = TypeVar("T", FundingRate, OpenInterest)


@dataclass(frozen=True)
class _Points(Generic[T]):
    """A sparse series (funding, open interest) sorted by time."""

    stamps: list[int]
    points: list[T]

    @classmethod
    def of(cls, points: list[T]) -> _Points[T]:
        return cls([p.ts_ms for p in points], points)

    def between(self, start_ms: int, end_ms: int) -> list[T]:
        lo = bisect.bisect_left(self.stamps, start_ms)
        hi = bisect.bisect_right(self.stamps, end_ms)
        return self.points[lo:hi]


class MemoryMarketData:
    """Read-only ``MarketStore`` over arrays loaded once from another store.

    ``timeframe``: the bars held (1m; a store of only coarser candles is backtested on
    those, docs/data.md).
    """

    timeframe: str = "1m"

    def __init__(
        self, source: MarketStore, exchange: str, market_type: MarketType, timeframe: str = "1m"
    ) -> None:
        self.timeframe = timeframe
        self._source = source
        self._keys = [
            k
            for k in source.series_keys()
            if k.exchange == exchange and k.market_type == market_type
        ]
        loaded = source.candles_many(self._keys, timeframe, 0, FAR_FUTURE_MS)
        self.series: dict[SeriesKey, CandleSeries] = {k: s for k, s in loaded.items() if len(s) > 0}
        self._keys = [k for k in self._keys if k in self.series]
        funding = source.funding_many(self._keys, 0, FAR_FUTURE_MS)
        interest = source.open_interest_many(self._keys, 0, FAR_FUTURE_MS)
        self._funding = {k: _Points([r.ts_ms for r in v], v) for k, v in funding.items()}
        self._interest = {k: _Points([p.ts_ms for p in v], v) for k, v in interest.items()}

    def cut(self, t_ms: int) -> MemoryMarketData:
        """What was known at ``t_ms``: bars closed by then, points and trades stamped by
        then (for the look-ahead analysis)."""
        cut = object.__new__(MemoryMarketData)
        cut._source = _CutTrades(self._source, t_ms)  # type: ignore[assignment]
        cut.timeframe = self.timeframe
        bar_ms = TIMEFRAME_MS[self.timeframe]
        cut.series = {
            k: s.rows(0, int(np.searchsorted(s.ts_ms, t_ms - bar_ms, side="right")))
            for k, s in self.series.items()
        }
        cut.series = {k: s for k, s in cut.series.items() if len(s) > 0}
        cut._keys = [k for k in self._keys if k in cut.series]
        cut._funding = {k: _Points.of(v.between(0, t_ms)) for k, v in self._funding.items()}
        cut._interest = {k: _Points.of(v.between(0, t_ms)) for k, v in self._interest.items()}
        return cut

    @classmethod
    def from_parquet(
        cls, root: Path, exchange: str, market_type: MarketType, timeframe: str = "1m"
    ) -> MemoryMarketData:
        """Read the store's Parquet partitions directly (no in-memory DuckDB tables: the
        backtest's memory is its arrays); recorded trades come from a store opened only
        if the backtest asks for them."""
        with _system_memory_pool():
            loaded = cls._from_parquet(root, exchange, market_type, timeframe)
        release_free_memory()
        return loaded

    @classmethod
    def _from_parquet(
        cls, root: Path, exchange: str, market_type: MarketType, timeframe: str
    ) -> MemoryMarketData:
        self = object.__new__(cls)
        self._source = _LazyTrades(root)  # type: ignore[assignment]
        self.timeframe = timeframe
        self.series = {
            SeriesKey(exchange, market_type, symbol): series
            for symbol, series in _read_candles(
                root, exchange, market_type.value, timeframe
            ).items()
        }
        self._keys = list(self.series)
        funding: dict[SeriesKey, list[FundingRate]] = {}
        for row in read_table(root, "funding", exchange, market_type.value).to_pylist():
            key = SeriesKey(exchange, market_type, row["symbol"])
            funding.setdefault(key, []).append(FundingRate(**row))
        interest: dict[SeriesKey, list[OpenInterest]] = {}
        for row in read_table(root, "open_interest", exchange, market_type.value).to_pylist():
            key = SeriesKey(exchange, market_type, row["symbol"])
            interest.setdefault(key, []).append(OpenInterest(**row))
        self._funding = {k: _Points.of(v) for k, v in funding.items() if k in self.series}
        self._interest = {k: _Points.of(v) for k, v in interest.items() if k in self.series}
        return self

    @property
    def candle_count(self) -> int:
        """Number of 1m candles held."""
        return sum(len(s) for s in self.series.values())

    # ------------------------------------------------------------------ reads
    def series_keys(self) -> list[SeriesKey]:
        """Every instrument with candles, sorted."""
        return sorted(self._keys, key=lambda k: (k.exchange, k.market_type.value, k.symbol))

    def candles(self, key: SeriesKey, timeframe: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Candles with ``start_ms <= ts_ms`` and close time ``<= end_ms`` (the held
        timeframe only)."""
        if timeframe != self.timeframe:
            raise ValueError(f"the backtest holds {self.timeframe} candles only")
        series = self.series.get(key)
        if series is None:
            return CandleSeries.empty(key.symbol, timeframe)
        lo = int(np.searchsorted(series.ts_ms, start_ms, side="left"))
        hi = int(np.searchsorted(series.ts_ms, end_ms - TIMEFRAME_MS[timeframe], side="right"))
        return series.rows(lo, max(lo, hi))

    def candles_many(
        self, keys: Sequence[SeriesKey], timeframe: str, start_ms: int, end_ms: int
    ) -> dict[SeriesKey, CandleSeries]:
        """``candles`` for several instruments."""
        return {k: self.candles(k, timeframe, start_ms, end_ms) for k in keys}

    def last_candle_ms(self, key: SeriesKey, timeframe: str) -> int | None:
        """Open time of the newest candle."""
        rng = self.candle_range(key, timeframe)
        return None if rng is None else rng[1]

    def candle_range(self, key: SeriesKey, timeframe: str) -> tuple[int, int] | None:
        """(first, last) candle open times (the held timeframe only; others are rolled up)."""
        series = self.series.get(key)
        if timeframe != self.timeframe or series is None:
            return None
        return int(series.ts_ms[0]), int(series.ts_ms[-1])

    def trades(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[Trade]:
        """Recorded trades, from the source store (the exchange caches them per hour)."""
        return self._source.trades(key, start_ms, end_ms)

    def funding(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[FundingRate]:
        """Funding rates in [start_ms, end_ms]."""
        points = self._funding.get(key)
        return [] if points is None else points.between(start_ms, end_ms)

    def open_interest(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[OpenInterest]:
        """Open interest points in [start_ms, end_ms]."""
        points = self._interest.get(key)
        return [] if points is None else points.between(start_ms, end_ms)

    def funding_many(
        self, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[FundingRate]]:
        """``funding`` for several instruments."""
        return {k: self.funding(k, start_ms, end_ms) for k in keys}

    def open_interest_many(
        self, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[OpenInterest]]:
        """``open_interest`` for several instruments."""
        return {k: self.open_interest(k, start_ms, end_ms) for k in keys}

    def latest_tickers(self, exchange: str, as_of_ms: int) -> list[Ticker]:
        """Not kept: the backtest reads no tickers."""
        return []

    # --------------------------------------------- writes: the data is read-only
    def write_candles(self, candles: Sequence[Candle]) -> int:
        """Read-only."""
        raise TypeError("MemoryMarketData is read-only")

    def write_trades(self, trades: Sequence[Trade]) -> int:
        """Read-only."""
        raise TypeError("MemoryMarketData is read-only")

    def write_funding(self, rates: Sequence[FundingRate]) -> int:
        """Read-only."""
        raise TypeError("MemoryMarketData is read-only")

    def write_open_interest(self, points: Sequence[OpenInterest]) -> int:
        """Read-only."""
        raise TypeError("MemoryMarketData is read-only")

    def write_tickers(self, tickers: Sequence[Ticker]) -> int:
        """Read-only."""
        raise TypeError("MemoryMarketData is read-only")

    def flush(self) -> None:
        """Nothing to persist."""


_CANDLE_COLUMNS = ("ts_ms", "open", "high", "low", "close", "volume", "taker_buy_volume")


def _read_candles(
    root: Path, exchange: str, market_type: str, timeframe: str
) -> dict[str, CandleSeries]:
    """Every ``timeframe`` series of the store, by symbol (sorted), oldest bar first.

    The same rows as ``read_table(root, "candles", ...)``, read one date partition at a
    time and only the columns a series needs, so the peak is the arrays plus one day (the
    whole table, its sorted copy and the converted columns at once were 270 MiB for the
    16-perp month).
    """
    kind = TABLES["candles"].kind(timeframe)
    files = sorted(Path(root).glob(f"{exchange}/{market_type}/{kind}/date=*/data.parquet"))
    parts: dict[str, list[list[np.ndarray]]] = {}
    for path in files:
        table = pq.read_table(path, columns=["symbol", *_CANDLE_COLUMNS], memory_map=True)
        codes = table.column("symbol").combine_chunks().dictionary_encode()
        index = codes.indices.to_numpy()
        cols = [
            np.asarray(
                table.column(name).cast(_TYPES[name]).fill_null(np.nan).to_numpy()
                if name == "taker_buy_volume"
                else table.column(name).cast(_TYPES[name]).to_numpy(),
                dtype=np.int64 if name == "ts_ms" else np.float64,
            )
            for name in _CANDLE_COLUMNS
        ]
        del table
        for code, symbol in enumerate(codes.dictionary.to_pylist()):
            rows = np.flatnonzero(index == code)
            if rows.size:
                parts.setdefault(str(symbol), []).append([c[rows] for c in cols])
    series: dict[str, CandleSeries] = {}
    for symbol in sorted(parts):
        chunks = parts.pop(symbol)
        arrays = [
            np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(_CANDLE_COLUMNS))
        ]
        del chunks
        order = np.argsort(arrays[0], kind="stable")
        if bool((order != np.arange(order.shape[0])).any()):
            arrays = [a[order] for a in arrays]
        ts, o, h, lo, c, v, taker = arrays
        series[symbol] = CandleSeries(symbol, timeframe, ts, o, h, lo, c, v, taker)
    return series


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere): the load frees one day's buffers after another and the run frees many
    small objects, and glibc keeps such pages resident (~25 MiB after the month's load)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return cast("Callable[[int], int]", ctypes.CDLL("libc.so.6").malloc_trim)
    except (OSError, AttributeError):  # not glibc
        return None


@contextmanager
def _system_memory_pool() -> Iterator[None]:
    """Arrow allocates from the C allocator while the store is read: its default pool
    (mimalloc) keeps the day buffers' pages after they are freed (~55 MiB resident for
    the 16-perp month, for the whole run)."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


class _LazyTrades:
    """Recorded trades from the store under ``root``, opened on first use (most backtests
    replay bars only and never pay for loading it)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._store: DuckDBMarketStore | None = None
        self._has_trades = any(Path(root).glob("*/*/trades/date=*/data.parquet"))

    def trades(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[Trade]:
        if not self._has_trades:
            return []
        if self._store is None:
            self._store = DuckDBMarketStore(self._root, read_only=True)
        return self._store.trades(key, start_ms, end_ms)


class _CutTrades:
    """Recorded trades of a store, as known at ``t_ms``."""

    def __init__(self, source: MarketStore, t_ms: int) -> None:
        self._source = source
        self._t_ms = t_ms

    def trades(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[Trade]:
        if start_ms > self._t_ms:
            return []
        return self._source.trades(key, start_ms, min(end_ms, self._t_ms))


__all__ = ["MINUTE_MS", "MemoryMarketData"]
