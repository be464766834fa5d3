"""The reads of ``DuckDBMarketStore`` (duckdb_market_store.py): candles, trades, funding,
open interest and tickers, with the pending rows and the in-memory row cache they use.

A mixin, kept apart so the store module stays small; it uses the store's connection,
lock and pending rows (declared below).
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prometheus_trader.adapters.embedded.market_tables import (
    _CANDLE_SCHEMA,
    TABLES,
    TableName,
    _series_columns,
    _TableSpec,
    _to_series,
    _trade,
)
from prometheus_trader.domain.market import (
    TIMEFRAME_MS,
    Candle,
    CandleSeries,
    FundingRate,
    MarketType,
    OpenInterest,
    Ticker,
    Trade,
)
from prometheus_trader.ports import SeriesKey

if TYPE_CHECKING:
    import duckdb

# tables whose ``*_many`` reads are served from memory: small, read every ranking
_CACHED_ROWS: frozenset[TableName] = frozenset({"funding", "open_interest"})


@dataclass
class _SeriesRows:
    """One series' rows (as dicts) and their ts_ms, oldest first."""

    ts: list[int]
    rows: list[dict[str, Any]]


def _append_rows(
    cache: dict[tuple[str, ...], _SeriesRows], spec: _TableSpec, rows: list[dict[str, Any]]
) -> None:
    """Append rows sorted by primary key (each later than its series' cached rows)."""
    cols = _series_columns(spec)
    for row in rows:
        key = tuple(row[c] for c in cols)
        series = cache.get(key)
        if series is None:
            series = cache[key] = _SeriesRows([], [])
        series.ts.append(row["ts_ms"])
        series.rows.append(row)


class MarketStoreReads:
    """Mixin of ``DuckDBMarketStore``: the ``MarketStore`` reads."""

    _con: duckdb.DuckDBPyConnection
    _lock: threading.RLock
    _pending: dict[TableName, list[pa.Table]]
    _pending_first: dict[TableName, dict[tuple[str, ...], int]]
    _rows_cache: dict[TableName, dict[tuple[str, ...], _SeriesRows]]

    if TYPE_CHECKING:  # provided by DuckDBMarketStore (declared for the type checker only)

        def _series_bounds(self, table: TableName) -> dict[tuple[str, ...], tuple[int, int]]: ...

        def _materialize(self, *tables: TableName) -> None: ...

    # ---------------------------------------------------------------------- reads
    def series_keys(self) -> list[SeriesKey]:
        """Every instrument with stored candles, sorted."""
        with self._lock:
            rows = sorted({(k[0], k[1], k[2]) for k in self._series_bounds("candles")})
        return [SeriesKey(e, MarketType(m), s) for e, m, s in rows]

    def candles(self, key: SeriesKey, timeframe: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Candles with ``start_ms <= ts_ms`` and close time ``<= end_ms``, oldest first."""
        return self._series("candles", [key], timeframe, start_ms, end_ms)[key]

    def candles_many(
        self, keys: Sequence[SeriesKey], timeframe: str, start_ms: int, end_ms: int
    ) -> dict[SeriesKey, CandleSeries]:
        """``candles()`` for several instruments in one query (keys in the given order)."""
        return self._series("candles", keys, timeframe, start_ms, end_ms)

    def mark_candles(
        self, key: SeriesKey, timeframe: str, start_ms: int, end_ms: int
    ) -> list[Candle]:
        """Mark-price candles, same window rule as ``candles()`` (not part of the port)."""
        step = TIMEFRAME_MS[timeframe]
        with self._lock:
            self._materialize("mark")
            rows = self._con.sql(
                f"SELECT {', '.join(_CANDLE_SCHEMA.names)} FROM mark WHERE exchange = ? "
                "AND market_type = ? AND symbol = ? AND timeframe = ? AND ts_ms >= ? "
                "AND ts_ms + ? <= ? ORDER BY ts_ms",
                params=[
                    *(key.exchange, key.market_type.value, key.symbol, timeframe),
                    *(start_ms, step, end_ms),
                ],
            ).to_arrow_table()
        return [Candle(**row) for row in rows.to_pylist()]

    def _series(
        self,
        table: TableName,
        keys: Sequence[SeriesKey],
        timeframe: str,
        start_ms: int,
        end_ms: int,
    ) -> dict[SeriesKey, CandleSeries]:
        step = TIMEFRAME_MS[timeframe]
        result = {k: CandleSeries.empty(k.symbol, timeframe) for k in keys}
        if not keys:
            return result
        unique = list(dict.fromkeys(keys))
        cols = (
            "ts_ms, open, high, low, close, volume, "
            "COALESCE(taker_buy_volume, 'NaN'::DOUBLE) AS taker_buy_volume"
        )
        base = (
            f"FROM {table} WHERE timeframe = ? AND ts_ms >= ? AND ts_ms + ? <= ? "
            "AND exchange = ? AND market_type = ?"
        )
        with self._lock:
            if self._pending_covers(table, unique, timeframe, start_ms):
                return self._series_from_pending(table, unique, timeframe, start_ms, end_ms)
            self._materialize(table)
            if len(unique) == 1:
                k = unique[0]
                arrays = self._con.execute(
                    f"SELECT {cols} {base} AND symbol = ? ORDER BY ts_ms",
                    [timeframe, start_ms, step, end_ms, k.exchange, k.market_type.value, k.symbol],
                ).fetchnumpy()
                result[k] = _to_series(k.symbol, timeframe, arrays)
                return result
            # one query per (exchange, market_type) group with the symbols in a list
            groups: dict[tuple[str, str], list[str]] = {}
            for k in unique:
                groups.setdefault((k.exchange, k.market_type.value), []).append(k.symbol)
            for (exchange, market_type), symbols in groups.items():
                arrays = self._con.execute(
                    f"SELECT symbol, {cols} {base} AND list_contains(?, symbol) "
                    "ORDER BY symbol, ts_ms",
                    [timeframe, start_ms, step, end_ms, exchange, market_type, symbols],
                ).fetchnumpy()
                sym = np.asarray(arrays.pop("symbol"), dtype=object)
                if len(sym) == 0:
                    continue
                bounds = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1], True])
                for lo, hi in itertools.pairwise(bounds):
                    name = str(sym[lo])
                    part = {c: v[lo:hi] for c, v in arrays.items()}
                    result[SeriesKey(exchange, MarketType(market_type), name)] = _to_series(
                        name, timeframe, part
                    )
        return result

    def _pending_covers(
        self, table: TableName, keys: Sequence[SeriesKey], timeframe: str, start_ms: int
    ) -> bool:
        """Whether every row of ``keys`` at or after ``start_ms`` is still pending (not yet
        INSERTed): pending rows come after every INSERTed row of their series."""
        firsts = self._pending_first.get(table)
        if not firsts:
            return False
        bounds = self._series_bounds(table)
        for k in keys:
            series = (k.exchange, k.market_type.value, k.symbol, timeframe)
            first = firsts.get(series)
            if first is None:  # nothing pending: only a series with no row that late
                stored = bounds.get(series)
                if stored is not None and stored[1] >= start_ms:
                    return False
            elif start_ms < first:
                return False
        return True

    def _series_from_pending(
        self,
        table: TableName,
        keys: Sequence[SeriesKey],
        timeframe: str,
        start_ms: int,
        end_ms: int,
    ) -> dict[SeriesKey, CandleSeries]:
        """``_series`` answered from the pending rows (see ``_pending_covers``)."""
        step = TIMEFRAME_MS[timeframe]
        pending = self._pending[table]
        data = pending[0] if len(pending) == 1 else pa.concat_tables(pending)
        ts = data.column("ts_ms").to_numpy()
        window = (ts >= start_ms) & (ts + step <= end_ms)
        window &= np.asarray(data.column("timeframe").to_pylist(), dtype=object) == timeframe
        exchanges = np.asarray(data.column("exchange").to_pylist(), dtype=object)
        markets = np.asarray(data.column("market_type").to_pylist(), dtype=object)
        symbols = np.asarray(data.column("symbol").to_pylist(), dtype=object)
        columns = {c: data.column(c).to_numpy() for c in ("open", "high", "low", "close", "volume")}
        columns["taker_buy_volume"] = pc.fill_null(
            data.column("taker_buy_volume"), float("nan")
        ).to_numpy()
        result: dict[SeriesKey, CandleSeries] = {}
        for k in keys:
            rows = np.flatnonzero(
                window
                & (exchanges == k.exchange)
                & (markets == k.market_type.value)
                & (symbols == k.symbol)
            )
            rows = rows[np.argsort(ts[rows], kind="stable")]  # batches by time, rows by symbol
            part = {"ts_ms": ts[rows], **{c: v[rows] for c, v in columns.items()}}
            result[k] = _to_series(k.symbol, timeframe, part)
        return result

    def last_candle_ms(self, key: SeriesKey, timeframe: str) -> int | None:
        """Open time of the newest stored candle, None if none."""
        rng = self.candle_range(key, timeframe)
        return None if rng is None else rng[1]

    def candle_range(self, key: SeriesKey, timeframe: str) -> tuple[int, int] | None:
        """(first, last) candle open times stored, None if none."""
        ranges = self._candle_ranges()
        return ranges.get((key.exchange, key.market_type.value, key.symbol, timeframe))

    def _candle_ranges(self) -> dict[tuple[str, ...], tuple[int, int]]:
        """Every series' (first, last) open time: one query, then kept by the writes (the
        collector asks for each symbol's last bar every minute)."""
        with self._lock:
            return self._series_bounds("candles")

    def _rows(
        self, table: TableName, key: SeriesKey, start_ms: int, end_ms: int, order: str
    ) -> list[dict[str, Any]]:
        with self._lock:
            self._materialize(table)
            data = self._con.sql(
                f"SELECT {', '.join(TABLES[table].columns)} FROM {table} WHERE exchange = ? "
                "AND market_type = ? AND symbol = ? AND ts_ms BETWEEN ? AND ? "
                f"ORDER BY {order}",
                params=[key.exchange, key.market_type.value, key.symbol, start_ms, end_ms],
            ).to_arrow_table()
        rows: list[dict[str, Any]] = data.to_pylist()
        return rows

    def trades(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[Trade]:
        """Trades with ``start_ms <= ts_ms <= end_ms``, ordered by (ts_ms, trade_id)."""
        rows = self._rows("trades", key, start_ms, end_ms, "ts_ms, trade_id")
        return [_trade(r) for r in rows]

    def funding(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[FundingRate]:
        """Funding rates in [start_ms, end_ms], oldest first."""
        return [FundingRate(**r) for r in self._rows("funding", key, start_ms, end_ms, "ts_ms")]

    def open_interest(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[OpenInterest]:
        """Open interest points in [start_ms, end_ms], oldest first."""
        rows = self._rows("open_interest", key, start_ms, end_ms, "ts_ms")
        return [OpenInterest(**r) for r in rows]

    def funding_many(
        self, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[FundingRate]]:
        """``funding`` for several instruments in one query."""
        return {
            k: [FundingRate(**r) for r in rows]
            for k, rows in self._rows_many("funding", keys, start_ms, end_ms).items()
        }

    def open_interest_many(
        self, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[OpenInterest]]:
        """``open_interest`` for several instruments in one query."""
        return {
            k: [OpenInterest(**r) for r in rows]
            for k, rows in self._rows_many("open_interest", keys, start_ms, end_ms).items()
        }

    def _rows_many(
        self, table: TableName, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[dict[str, Any]]]:
        result: dict[SeriesKey, list[dict[str, Any]]] = {k: [] for k in keys}
        if not keys:
            return result
        if table in _CACHED_ROWS:
            with self._lock:
                cache = self._cached_rows(table)
                for k in keys:
                    rows = cache.get((k.exchange, k.market_type.value, k.symbol))
                    if rows is not None:
                        lo = bisect.bisect_left(rows.ts, start_ms)
                        hi = bisect.bisect_right(rows.ts, end_ms)
                        result[k] = rows.rows[lo:hi]
            return result
        wanted = {(k.exchange, k.market_type.value, k.symbol): k for k in keys}
        with self._lock:
            self._materialize(table)
            data = self._con.sql(
                f"SELECT {', '.join(TABLES[table].columns)} FROM {table} "
                "WHERE symbol IN (SELECT unnest(?)) AND ts_ms BETWEEN ? AND ? "
                "ORDER BY exchange, market_type, symbol, ts_ms",
                params=[sorted({k.symbol for k in keys}), start_ms, end_ms],
            ).to_arrow_table()
        for row in data.to_pylist():
            key = wanted.get((row["exchange"], row["market_type"], row["symbol"]))
            if key is not None:
                result[key].append(row)
        return result

    def _cached_rows(self, table: TableName) -> dict[tuple[str, ...], _SeriesRows]:
        """Every row of ``table`` per series, oldest first (one query, then kept)."""
        cache = self._rows_cache.get(table)
        if cache is None:
            self._materialize(table)
            spec = TABLES[table]
            data = self._con.sql(
                f"SELECT {', '.join(spec.columns)} FROM {table} "
                f"ORDER BY {', '.join(spec.primary_key)}"
            ).to_arrow_table()
            cache = self._rows_cache[table] = {}
            _append_rows(cache, spec, data.to_pylist())
        return cache

    def _extend_rows_cache(self, table: TableName, data: pa.Table) -> None:
        """Append a batch that comes after every stored row of its series."""
        cache = self._rows_cache.get(table)
        if cache is not None:
            spec = TABLES[table]
            rows = sorted(data.to_pylist(), key=lambda r: [r[c] for c in spec.primary_key])
            _append_rows(cache, spec, rows)

    def latest_tickers(self, exchange: str, as_of_ms: int) -> list[Ticker]:
        """The newest ticker per (market type, symbol) with ``ts_ms <= as_of_ms``, sorted by
        symbol then market type."""
        with self._lock:
            self._materialize("tickers")
            data = self._con.sql(
                f"SELECT {', '.join(TABLES['tickers'].columns)} FROM tickers "
                "WHERE exchange = ? AND ts_ms <= ? "
                "QUALIFY row_number() OVER (PARTITION BY market_type, symbol "
                "ORDER BY ts_ms DESC) = 1 ORDER BY symbol, market_type",
                params=[exchange, as_of_ms],
            ).to_arrow_table()
        return [Ticker(**r) for r in data.to_pylist()]
