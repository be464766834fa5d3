"""The embedded market store's tables: their Arrow schemas and primary keys, how they map
to Parquet partitions, the Arrow conversions of models and bars, and ``read_table`` (one
table straight from the Parquet files). Used by ``DuckDBMarketStore``, the importers and
the backtest's loader."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prometheus_trader.domain.market import (
    TIMEFRAME_MS,
    Candle,
    CandleSeries,
    MarketType,
    Side,
    Trade,
)

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

# (table, exchange, market_type, timeframe or "", day number since the epoch)
_Partition = tuple[str, str, str, str, int]


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
