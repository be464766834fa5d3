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

import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from prometheus_trader.adapters import ClosesOnExit
from prometheus_trader.adapters.embedded.duckdb_market_reads import MarketStoreReads, _SeriesRows
from prometheus_trader.adapters.embedded.market_tables import (
    _SQL_TYPES,
    DAY_MS,
    TABLES,
    TableName,
    _batch_bounds,
    _candles_table,
    _conform,
    _models_table,
    _Partition,
    _partitions,
    _series_columns,
    _TableSpec,
    read_table,
)
from prometheus_trader.domain.market import (
    TIMEFRAME_MS,
    Candle,
    FundingRate,
    OpenInterest,
    Ticker,
    Trade,
)

# Pending appends of one table are inserted at the latest after this many batches.
_MAX_PENDING_BATCHES = 32


class MarketStoreError(RuntimeError):
    """A market store folder holds a file that cannot be read (e.g. a truncated Parquet)."""


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d")


class DuckDBMarketStore(MarketStoreReads, ClosesOnExit):
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


# TABLES and read_table: re-exported for app/backtest/data.py
__all__ = ["TABLES", "DuckDBMarketStore", "TableName", "read_table"]
