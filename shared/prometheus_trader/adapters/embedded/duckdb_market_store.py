"""Embedded ``MarketStore``: in-memory DuckDB tables over partitioned Parquet files.

Layout under ``root``: ``<exchange>/<market_type>/<kind>/date=YYYY-MM-DD/data.parquet`` with
kind ``candles_<tf>``, ``mark_<tf>``, ``trades``, ``funding``, ``open_interest``,
``tickers``. Every file also carries its exchange, market type (and timeframe) as columns.

All Parquet files are loaded into in-memory DuckDB tables when the store opens; writes are
``INSERT ... ON CONFLICT DO NOTHING`` on the primary key (so a re-written row adds
nothing) and mark their date partitions dirty; ``flush()`` rewrites only those partitions.
Reads query the in-memory tables, so they see unflushed writes. A batch whose rows all
come after the stored rows of their series (the collector's next minute) is new by
construction: it is counted at once and INSERTed with the other pending rows of its table
before the next read of that table; each series' (first, last) time is kept in memory
and widened by every write, so ``candle_range``/``series_keys`` never scan the table.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prometheus_trader.adapters import ClosesOnExit
from prometheus_trader.domain.market import (
    TIMEFRAME_MS,
    Candle,
    CandleSeries,
    FundingRate,
    MarketType,
    OpenInterest,
    Side,
    Ticker,
    Trade,
)
from prometheus_trader.ports import SeriesKey

DAY_MS = 86_400_000

TableName = Literal["candles", "mark", "trades", "funding", "open_interest", "tickers"]


@dataclass(frozen=True)
class _TableSpec:
    """One in-memory table and how it maps to Parquet partitions."""

    name: TableName
    schema: pa.Schema
    primary_key: tuple[str, ...]
    # Candle-like tables are partitioned per timeframe: kind = f"{kind_prefix}_{timeframe}".
    per_timeframe: bool

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def kind(self, timeframe: str) -> str:
        return f"{self.name}_{timeframe}" if self.per_timeframe else self.name


_KEY_FIELDS = [
    pa.field("exchange", pa.string(), nullable=False),
    pa.field("market_type", pa.string(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
]
_CANDLE_SCHEMA = pa.schema(
    [
        *_KEY_FIELDS,
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("quote_volume", pa.float64()),
        pa.field("taker_buy_volume", pa.float64()),
        pa.field("trades", pa.int64()),
    ]
)
_CANDLE_PK = ("exchange", "market_type", "symbol", "timeframe", "ts_ms")

TABLES: dict[TableName, _TableSpec] = {
    "candles": _TableSpec("candles", _CANDLE_SCHEMA, _CANDLE_PK, True),
    "mark": _TableSpec("mark", _CANDLE_SCHEMA, _CANDLE_PK, True),
    "trades": _TableSpec(
        "trades",
        pa.schema(
            [
                *_KEY_FIELDS,
                pa.field("ts_ms", pa.int64(), nullable=False),
                pa.field("trade_id", pa.string(), nullable=False),
                pa.field("price", pa.float64(), nullable=False),
                pa.field("amount", pa.float64(), nullable=False),
                pa.field("side", pa.string(), nullable=False),
                pa.field("source", pa.string(), nullable=False),
            ]
        ),
        ("exchange", "market_type", "symbol", "ts_ms", "trade_id"),
        False,
    ),
    "funding": _TableSpec(
        "funding",
        pa.schema(
            [
                *_KEY_FIELDS,
                pa.field("ts_ms", pa.int64(), nullable=False),
                pa.field("rate", pa.float64(), nullable=False),
            ]
        ),
        ("exchange", "market_type", "symbol", "ts_ms"),
        False,
    ),
    "open_interest": _TableSpec(
        "open_interest",
        pa.schema(
            [
                *_KEY_FIELDS,
                pa.field("ts_ms", pa.int64(), nullable=False),
                pa.field("amount", pa.float64(), nullable=False),
                pa.field("value", pa.float64()),
            ]
        ),
        ("exchange", "market_type", "symbol", "ts_ms"),
        False,
    ),
    "tickers": _TableSpec(
        "tickers",
        pa.schema(
            [
                *_KEY_FIELDS,
                pa.field("ts_ms", pa.int64(), nullable=False),
                pa.field("last", pa.float64(), nullable=False),
                pa.field("bid", pa.float64()),
                pa.field("ask", pa.float64()),
                pa.field("quote_volume_24h", pa.float64()),
                pa.field("change_24h_pct", pa.float64()),
            ]
        ),
        ("exchange", "market_type", "symbol", "ts_ms"),
        False,
    ),
}

_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
}

# Pending appends of one table are inserted at the latest after this many batches.
_MAX_PENDING_BATCHES = 32

# (table, exchange, market_type, timeframe or "", day number since the epoch)
_Partition = tuple[str, str, str, str, int]


class MarketStoreError(RuntimeError):
    """A market store folder holds a file that cannot be read (e.g. a truncated Parquet)."""


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d")


class DuckDBMarketStore(ClosesOnExit):
    """``MarketStore`` over partitioned Parquet under ``root`` (see module docstring)."""

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        """Open (creating if needed) the store at ``root`` and load its Parquet files.

        ``read_only`` stores refuse writes (e.g. the bundled sample inside the package).
        """
        self._root = Path(root)
        self._read_only = read_only
        if not read_only:
            self._root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._dirty: set[_Partition] = set()
        # per table: (first, last) ts_ms of every series (key columns without ts_ms and
        # trade_id), loaded once and kept up to date by writes, never invalidated
        self._bounds: dict[TableName, dict[tuple[str, ...], tuple[int, int]]] = {}
        # rows known to be new (after every stored row of their series), not yet INSERTed:
        # one INSERT per read instead of one per write (the collector writes every minute)
        self._pending: dict[TableName, list[pa.Table]] = {}
        # per table and series: the first ts_ms among its pending rows; a read starting at
        # or after it (the ranker's "bars since my last read") is answered from the pending
        # rows alone, without an INSERT and a query per read
        self._pending_first: dict[TableName, dict[tuple[str, ...], int]] = {}
        # funding and open interest rows per series, sorted by time, for ``*_many`` reads
        # (the ranker's every few minutes): built by one query, extended by appends,
        # dropped by any other write
        self._rows_cache: dict[TableName, dict[tuple[str, ...], _SeriesRows]] = {}
        import duckdb  # here, not at import: the backtest reads Parquet without DuckDB (~13 MiB)

        self._con = duckdb.connect(":memory:")
        for spec in TABLES.values():
            cols = ", ".join(
                f"{f.name} {_SQL_TYPES[f.type]}{'' if f.nullable else ' NOT NULL'}"
                for f in spec.schema
            )
            self._con.execute(
                f"CREATE TABLE {spec.name} ({cols}, PRIMARY KEY ({', '.join(spec.primary_key)}))"
            ).fetchall()
            self._load(spec)

    # ------------------------------------------------------------------ lifecycle
    @property
    def root(self) -> Path:
        """Folder holding the Parquet partitions."""
        return self._root

    def close(self) -> None:
        """Flush pending writes and release DuckDB."""
        with self._lock:
            self.flush()
            self._con.close()

    def _load(self, spec: _TableSpec) -> None:
        pattern = f"{spec.name}_*" if spec.per_timeframe else spec.name
        # sorted: the load order must not depend on the file system's listing order
        files = sorted(str(p) for p in self._root.glob(f"*/*/{pattern}/date=*/data.parquet"))
        if not files:
            return
        cols = ", ".join(spec.columns)
        import duckdb  # loaded by __init__ already

        try:
            self._con.execute(
                f"INSERT INTO {spec.name} SELECT {cols} FROM read_parquet(?) "
                "ON CONFLICT DO NOTHING",
                [files],
            ).fetchall()
        except duckdb.Error as exc:  # say which store and file, in one line
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MarketStoreError(f"cannot read the market store {self._root}: {reason}") from exc

    # --------------------------------------------------------------------- writes
    def write_arrow(self, table: TableName, data: pa.Table) -> int:
        """Bulk write rows already in the table's column layout; returns how many were new.

        Columns are matched by name; missing nullable columns are filled with nulls. Within
        one batch the first of several rows with the same key wins.
        """
        spec = TABLES[table]
        if self._read_only:
            raise PermissionError(f"market store {self._root} was opened read-only")
        if data.num_rows == 0:
            return 0
        data = _conform(data, spec.schema)
        with self._lock:
            batch = _batch_bounds(spec, data)
            if batch is not None and self._all_after_stored(table, batch):
                pending = self._pending.setdefault(table, [])
                pending.append(data)
                firsts = self._pending_first.setdefault(table, {})
                for key, (lo, _) in batch.items():
                    firsts.setdefault(key, lo)
                self._dirty.update(_partitions(spec, data))
                self._merge_bounds(table, batch)
                self._extend_rows_cache(table, data)
                if len(pending) >= _MAX_PENDING_BATCHES:
                    # a table nobody reads (tickers in a replay) must not pile up batches
                    self._materialize(table)
                return len(data)
            self._materialize(table)
            self._rows_cache.pop(table, None)
            self._con.register("_incoming", data)
            import duckdb  # loaded by __init__ already

            try:
                try:
                    # Fast path for the common case (all rows new, e.g. the collector's next
                    # minute): a plain INSERT is about twice as fast as ON CONFLICT.
                    self._con.execute(f"INSERT INTO {spec.name} SELECT * FROM _incoming").fetchall()
                except duckdb.ConstraintException:
                    count = self._insert_new_only(spec, data)
                else:
                    self._dirty.update(_partitions(spec, data))
                    count = len(data)
            finally:
                self._con.unregister("_incoming")
            widened = batch if batch is not None else _batch_bounds(spec, data, True)
            assert widened is not None  # with duplicates allowed there is always an answer
            self._merge_bounds(table, widened)
        return count

    def _series_bounds(self, table: TableName) -> dict[tuple[str, ...], tuple[int, int]]:
        """(first, last) ts_ms per series of ``table`` (one GROUP BY, then maintained)."""
        bounds = self._bounds.get(table)
        if bounds is None:
            cols = ", ".join(_series_columns(TABLES[table]))
            rows = self._con.execute(
                f"SELECT {cols}, min(ts_ms), max(ts_ms) FROM {table} GROUP BY ALL"
            ).fetchall()
            bounds = self._bounds[table] = {tuple(r[:-2]): (int(r[-2]), int(r[-1])) for r in rows}
        return bounds

    def _all_after_stored(
        self, table: TableName, batch: dict[tuple[str, ...], tuple[int, int]]
    ) -> bool:
        stored = self._series_bounds(table)
        return all(key not in stored or lo > stored[key][1] for key, (lo, _) in batch.items())

    def _merge_bounds(
        self, table: TableName, batch: dict[tuple[str, ...], tuple[int, int]]
    ) -> None:
        # every row of a batch is stored after the write (new, or already there), so the
        # stored bounds simply widen to the batch's
        stored = self._series_bounds(table)
        for key, (lo, hi) in batch.items():
            old = stored.get(key)
            stored[key] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    def _materialize(self, *tables: TableName) -> None:
        """INSERT the pending rows of ``tables`` (all tables when none are named)."""
        for table in tables or tuple(self._pending):
            pending = self._pending.pop(table, None)
            self._pending_first.pop(table, None)
            if not pending:
                continue
            data = pending[0] if len(pending) == 1 else pa.concat_tables(pending)
            self._con.register("_pending", data)
            try:
                self._con.execute(f"INSERT INTO {table} SELECT * FROM _pending").fetchall()
            finally:
                self._con.unregister("_pending")

    def _insert_new_only(self, spec: _TableSpec, data: pa.Table) -> int:
        """INSERT skipping rows whose key is stored (or repeated earlier in ``data``)."""
        cols = ", ".join(spec.columns)
        source = f"SELECT {cols} FROM _incoming"
        if data.group_by(list(spec.primary_key)).aggregate([]).num_rows < len(data):
            # Explicit first-wins dedupe inside the batch: ON CONFLICT alone does not
            # promise which of two equal-key rows in one statement is kept.
            self._con.unregister("_incoming")
            seq = pa.array(np.arange(len(data), dtype=np.int64))
            self._con.register("_incoming", data.append_column("_seq", seq))
            source += (
                f" QUALIFY row_number() OVER (PARTITION BY {', '.join(spec.primary_key)} "
                "ORDER BY _seq) = 1"
            )
        inserted = self._con.execute(
            f"INSERT INTO {spec.name} {source} ON CONFLICT DO NOTHING RETURNING {cols}"
        ).fetchnumpy()
        new_rows = pa.table(
            {c: inserted[c] for c in ("exchange", "market_type", "ts_ms")}
            | ({"timeframe": inserted["timeframe"]} if spec.per_timeframe else {})
        )
        self._dirty.update(_partitions(spec, new_rows))
        return len(new_rows)

    def write_candles(self, candles: Sequence[Candle]) -> int:
        """Store candles; returns how many were new."""
        return self.write_arrow("candles", _candles_table(candles))

    def write_mark_candles(self, candles: Sequence[Candle]) -> int:
        """Store mark-price candles (not part of the port); returns how many were new."""
        return self.write_arrow("mark", _candles_table(candles))

    def write_trades(self, trades: Sequence[Trade]) -> int:
        """Store trades; returns how many were new."""
        return self.write_arrow("trades", _models_table(trades, TABLES["trades"].schema))

    def write_funding(self, rates: Sequence[FundingRate]) -> int:
        """Store funding rates; returns how many were new."""
        return self.write_arrow("funding", _models_table(rates, TABLES["funding"].schema))

    def write_open_interest(self, points: Sequence[OpenInterest]) -> int:
        """Store open interest points; returns how many were new."""
        return self.write_arrow(
            "open_interest", _models_table(points, TABLES["open_interest"].schema)
        )

    def write_tickers(self, tickers: Sequence[Ticker]) -> int:
        """Store ticker snapshots; returns how many were new."""
        return self.write_arrow("tickers", _models_table(tickers, TABLES["tickers"].schema))

    def flush(self) -> None:
        """Rewrite the dirty date partitions as zstd Parquet (atomic per file)."""
        self.flush_partitions()

    def flush_partitions(self) -> list[Path]:
        """``flush()``, returning the Parquet files it rewrote (relative to ``root``, sorted),
        so a wrapper that mirrors the folder elsewhere knows what to upload."""
        with self._lock:
            self._materialize()
            written = [self._write_partition(part) for part in sorted(self._dirty)]
            self._dirty.clear()
        return sorted(path.relative_to(self._root) for path in written)

    def _write_partition(self, part: _Partition) -> Path:
        name, exchange, market_type, timeframe, day = part
        spec = TABLES[name]  # type: ignore[index]
        folder = (
            self._root / exchange / market_type / spec.kind(timeframe) / f"date={_day_label(day)}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "data.parquet"
        tmp = folder / "data.parquet.tmp"
        where = [
            f"exchange = {_quote(exchange)}",
            f"market_type = {_quote(market_type)}",
            f"ts_ms >= {day * DAY_MS}",
            f"ts_ms < {(day + 1) * DAY_MS}",
        ]
        if spec.per_timeframe:
            where.append(f"timeframe = {_quote(timeframe)}")
        # COPY takes no bound parameters; the values above are quoted literals and ints.
        self._con.execute(
            f"COPY (SELECT {', '.join(spec.columns)} FROM {spec.name} "
            f"WHERE {' AND '.join(where)} ORDER BY {', '.join(spec.primary_key)}) "
            f"TO {_quote(str(tmp))} (FORMAT parquet, COMPRESSION zstd)"
        ).fetchall()
        os.replace(tmp, target)
        return target

    def derive_candles_from_trades(self, timeframe: str = "1m") -> int:
        """Candles of ``timeframe`` built from the stored trades, for every bar that has
        trades and no stored candle (recorded candles win); returns how many were new.

        open/close are the first/last trade by (time, trade id), volume the summed amounts,
        ``taker_buy_volume`` the amount of buyer-initiated trades, ``trades`` their count.
        A bar at the edge of a recording holds only the trades recorded in it.
        """
        step = TIMEFRAME_MS[timeframe]
        order = "ORDER BY ts_ms, TRY_CAST(trade_id AS BIGINT), trade_id"
        with self._lock:
            self._materialize("trades", "candles")
            bars = self._con.sql(
                "SELECT exchange, market_type, symbol, ? AS timeframe, "
                f"(ts_ms // {step}) * {step} AS ts_ms, "
                f"first(price {order}) AS open, max(price) AS high, min(price) AS low, "
                f"last(price {order}) AS close, sum(amount) AS volume, "
                "sum(price * amount) AS quote_volume, "
                "sum(CASE WHEN side = 'buy' THEN amount ELSE 0 END) AS taker_buy_volume, "
                "count(*) AS trades "
                "FROM trades WHERE source = 'trade' GROUP BY ALL ORDER BY ALL",
                params=[timeframe],
            ).to_arrow_table()
        return self.write_arrow("candles", bars)

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


# ------------------------------------------------------------------------- helpers
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


def _series_columns(spec: _TableSpec) -> list[str]:
    """The key columns naming one series (the primary key without time and trade id)."""
    return [c for c in spec.primary_key if c not in ("ts_ms", "trade_id")]


def _batch_bounds(
    spec: _TableSpec, data: pa.Table, with_duplicates: bool = False
) -> dict[tuple[str, ...], tuple[int, int]] | None:
    """(first, last) ts_ms per series in ``data``; None when ``data`` repeats a primary
    key (unless ``with_duplicates``): such a batch takes the deduplicating path."""
    cols = _series_columns(spec)
    if len(data) <= 64:  # the collector's batches: plain Python beats a group-by here
        keys = list(zip(*(data.column(c).to_pylist() for c in cols), strict=True))
        stamps = data.column("ts_ms").to_pylist()
        if not with_duplicates:
            rest = [data.column(c).to_pylist() for c in spec.primary_key if c == "trade_id"]
            full = list(zip(keys, stamps, *rest, strict=True))
            if len(set(full)) < len(full):
                return None
        out: dict[tuple[str, ...], tuple[int, int]] = {}
        for key, ts in zip(keys, stamps, strict=True):
            old = out.get(key)
            out[key] = (ts, ts) if old is None else (min(old[0], ts), max(old[1], ts))
        return out
    if not with_duplicates and (
        data.group_by(list(spec.primary_key)).aggregate([]).num_rows < len(data)
    ):
        return None
    grouped = data.group_by(cols).aggregate([("ts_ms", "min"), ("ts_ms", "max")])
    columns = [grouped.column(c).to_pylist() for c in cols]
    lows = grouped.column("ts_ms_min").to_pylist()
    highs = grouped.column("ts_ms_max").to_pylist()
    return {
        tuple(parts): (int(lo), int(hi))
        for *parts, lo, hi in zip(*columns, lows, highs, strict=True)
    }


def _partitions(spec: _TableSpec, rows: pa.Table) -> set[_Partition]:
    """The date partitions that ``rows`` (with key and ts_ms columns) fall in."""
    if len(rows) == 0:
        return set()
    if len(rows) <= 4096:  # small batches (the collector's minute): plain Python is faster
        tfs = rows.column("timeframe").to_pylist() if spec.per_timeframe else [""] * len(rows)
        return {
            (spec.name, ex, mt, tf or "", ts // DAY_MS)
            for ex, mt, tf, ts in zip(
                rows.column("exchange").to_pylist(),
                rows.column("market_type").to_pylist(),
                tfs,
                rows.column("ts_ms").to_pylist(),
                strict=True,
            )
        }
    day = pc.divide(pc.cast(rows.column("ts_ms"), pa.int64()), DAY_MS)
    columns = {
        "exchange": rows.column("exchange"),
        "market_type": rows.column("market_type"),
        "tf": rows.column("timeframe") if spec.per_timeframe else pa.nulls(len(rows), pa.string()),
        "day": day,
    }
    groups = pa.table(columns).group_by(list(columns)).aggregate([])
    return {
        (spec.name, r["exchange"], r["market_type"], r["tf"] or "", int(r["day"]))
        for r in groups.to_pylist()
    }


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select, order and cast ``data``'s columns to ``schema`` (nulls for missing optional)."""
    if data.schema.equals(schema):  # built for this table (e.g. ``_models_table``)
        return data
    columns = []
    for f in schema:
        if f.name in data.column_names:
            columns.append(data.column(f.name).cast(f.type))
        elif f.nullable:
            columns.append(pa.nulls(data.num_rows, type=f.type))
        else:
            raise ValueError(f"missing required column {f.name!r}")
    return pa.Table.from_arrays(columns, schema=schema)


_ENUMS = (MarketType, Side)


def _enum_value(value: object) -> object:
    return value.value if isinstance(value, _ENUMS) else value


def _models_table(models: Iterable[Any], schema: pa.Schema) -> pa.Table:
    items = list(models)
    columns: dict[str, list[Any]] = {}
    for f in schema:
        values = [getattr(m, f.name) for m in items]
        # enum fields (market type, side) hold enums in every row: convert those columns only
        if values and isinstance(values[0], _ENUMS):
            values = [_enum_value(v) for v in values]
        columns[f.name] = values
    return pa.table(columns, schema=schema)


def _candles_table(candles: Sequence[Candle]) -> pa.Table:
    for c in candles:
        if c.timeframe not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {c.timeframe!r}")
    return _models_table(candles, _CANDLE_SCHEMA)


def _to_series(symbol: str, timeframe: str, arrays: dict[str, Any]) -> CandleSeries:
    def f64(name: str) -> Any:
        return np.ascontiguousarray(arrays[name], dtype=np.float64)

    return CandleSeries(
        symbol=symbol,
        timeframe=timeframe,
        ts_ms=np.ascontiguousarray(arrays["ts_ms"], dtype=np.int64),
        open=f64("open"),
        high=f64("high"),
        low=f64("low"),
        close=f64("close"),
        volume=f64("volume"),
        taker_buy_volume=f64("taker_buy_volume"),
    )


def _trade(row: dict[str, Any]) -> Trade:
    return Trade(**row)


__all__ = ["TABLES", "DuckDBMarketStore", "TableName"]


def read_table(
    root: Path | str,
    table: TableName,
    exchange: str,
    market_type: str,
    timeframe: str | None = None,
) -> pa.Table:
    """One table's rows for one exchange and market type, read straight from the Parquet
    partitions in key order, without loading the store's in-memory tables (a one-shot
    reader such as the backtest needs a fraction of the memory)."""
    spec = TABLES[table]
    kind = spec.kind(timeframe or "1m") if spec.per_timeframe else spec.name
    files = sorted(
        str(p) for p in Path(root).glob(f"{exchange}/{market_type}/{kind}/date=*/data.parquet")
    )
    if not files:
        return spec.schema.empty_table()
    # each partition was written by ``flush`` from the keyed table: no duplicate keys, so
    # a plain read and one sort (pyarrow, no DuckDB tables or hash tables) suffice
    data = pa.concat_tables(
        [_conform(pq.read_table(f, columns=spec.columns), spec.schema) for f in files]
    )
    return data.sort_by([(c, "ascending") for c in spec.primary_key])
