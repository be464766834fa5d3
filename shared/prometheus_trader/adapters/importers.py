"""Import recorded market data files into a ``MarketStore``.

Formats (detected by file name, then header):

* freqtrade feather: ``BTC_USDT_USDT-1m-futures.feather`` (perp candles), ``BTC_USDT-1m.feather``
  (spot candles), ``*-8h-funding_rate.feather`` (rate in ``open``), ``*-8h-mark.feather``
  (mark-price candles);
* Binance public data (zip or the CSV inside): ``*-klines-*``/``SYMBOL-1h-DATE`` candles with
  or without header, ``*-aggTrades-*`` and ``*-trades-*`` (``is_buyer_maker`` true means the
  taker sold);
* raw Binance websocket recordings (``<local_ts_ns> <json>`` lines, gzip): ``@trade`` messages
  at the exchange's ``T`` time, and ``@bookTicker`` as one ticker per second whose ``last``
  is the latest recorded trade price
  (spot book tickers carry no ``T``/``E``: the recorder's clock); COIN-M ``BTCUSD_PERP``;
* normalized ``usdm_*_trades.csv`` / ``spot_*_trades.csv``;
* Tardis trade CSV (``side`` is the aggressor);
* trades with ccxt's columns (CSV), freqtrade ``PAIR-trades.feather`` / ``.json.gz``.

The exchange is ``binance`` for all; symbols are ccxt unified (``BTC/USDT:USDT`` perp,
``BTC/USDT`` spot, ``BTC/USD:BTC`` inverse). Nothing is changed but the format: prices and
sizes are copied as read. A line that does not parse is skipped and counted, never the
file; imported trades also become 1m candles (``DuckDBMarketStore``) where none exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.market_tables import TABLES, TableName
from prometheus_trader.adapters.import_common import (
    CorruptFileError,
    DataImportError,
    ImportFailed,
    ImportReport,
    ProgressFn,
    SkippedFile,
    UnsupportedFileError,
    _Batch,
    _key_columns,
    unified_symbol,
)
from prometheus_trader.adapters.import_trades import (
    _PAIR_TRADES_RE,
    _read_freqtrade_trades,
    _read_raw_recording,
    _read_trades_csv,
    _read_zip,
)
from prometheus_trader.domain.market import (
    TIMEFRAME_MS,
    Candle,
    FundingRate,
    MarketType,
    Ticker,
    Trade,
)
from prometheus_trader.ports import MarketStore

# --------------------------------------------------------------------------- feather
_FEATHER_RE = re.compile(
    r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)(?:_(?P<settle>[A-Z0-9]+))?"
    r"-(?P<tf>\d+[mhdw])(?:-(?P<kind>futures|funding_rate|mark|spot))?\.feather$",
    re.IGNORECASE,
)


def _read_feather(path: Path) -> list[_Batch]:
    match = _FEATHER_RE.match(path.name)
    if match is None:
        raise UnsupportedFileError(path, "feather name is not freqtrade's PAIR-TF[-kind]")
    base, quote = match["base"].upper(), match["quote"].upper()
    settle, timeframe, kind = match["settle"], match["tf"], match["kind"] or "spot"
    market_type = MarketType.PERP if settle else MarketType.SPOT
    symbol = f"{base}/{quote}:{settle.upper()}" if settle else f"{base}/{quote}"
    if timeframe not in TIMEFRAME_MS:
        raise UnsupportedFileError(path, f"timeframe {timeframe!r} is not supported")
    try:
        table = feather.read_table(str(path))
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise CorruptFileError(path, f"not a readable feather file ({exc})") from exc
    missing = {"date", "open", "high", "low", "close", "volume"} - set(table.column_names)
    if missing:
        raise CorruptFileError(path, f"missing columns {sorted(missing)}")
    date = table.column("date")
    if not pa.types.is_timestamp(date.type):
        raise CorruptFileError(path, f"'date' column is {date.type}, not a timestamp")
    ts_ms = pc.divide(pc.cast(pc.cast(date, pa.timestamp("ns")), pa.int64()), 1_000_000)
    n = table.num_rows
    keys = _key_columns(n, market_type, symbol)
    if kind == "funding_rate":
        data = pa.table({**keys, "ts_ms": ts_ms, "rate": table.column("open")})
        return [_Batch("funding", data)]
    candles = pa.table(
        {
            **keys,
            "timeframe": pa.array([timeframe] * n, pa.string()),
            "ts_ms": ts_ms,
            **{c: table.column(c) for c in ("open", "high", "low", "close", "volume")},
        }
    )
    return [_Batch("mark" if kind == "mark" else "candles", candles)]


# ---------------------------------------------------------------------------- API
def read_file(path: Path) -> list[tuple[TableName, pa.Table]]:
    """Parse one file into (store table, rows) pairs without writing anything.

    Raises ``UnsupportedFileError`` or ``CorruptFileError`` (both ``DataImportError``).
    """
    path = Path(path)
    if not path.is_file():
        raise UnsupportedFileError(path, "not a file")
    return [(b.table, b.data) for b in _read_batches(path)]


def _read_batches(path: Path) -> list[_Batch]:
    """``read_file`` with each batch's count of skipped bad lines."""
    path = Path(path)
    if not path.is_file():
        raise UnsupportedFileError(path, "not a file")
    name = path.name.lower()
    try:
        if _PAIR_TRADES_RE.match(path.name) and name.endswith((".feather", ".json.gz")):
            batches = _read_freqtrade_trades(path)
        elif name.endswith(".feather"):
            batches = _read_feather(path)
        elif name.endswith(".zip"):
            batches = _read_zip(path)
        elif name.endswith(".csv"):
            batches = _read_trades_csv(path)
        elif name.endswith(".csv.gz") and "bookticker" in name:
            raise UnsupportedFileError(path, "book-ticker CSVs carry no trade price; not imported")
        elif name.endswith(".gz"):
            batches = _read_raw_recording(path)
        else:
            raise UnsupportedFileError(path, "unknown file type")
    except DataImportError:
        raise
    except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        # a value that does not parse (pa.ArrowInvalid is a ValueError) or a missing column
        raise CorruptFileError(path, f"bad value or missing column ({exc})") from exc
    return batches


def _iter_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        p = Path(path)
        if p.is_dir():
            # sorted: import order decides which of two equal-key rows wins
            yield from sorted(f for f in p.rglob("*") if f.is_file())
        else:
            yield p


def _time_filter(data: pa.Table, start_ms: int | None, end_ms: int | None) -> pa.Table:
    ts = data.column("ts_ms")
    mask = None
    if start_ms is not None:
        mask = pc.greater_equal(ts, start_ms)
    if end_ms is not None:
        upper = pc.less(ts, end_ms)
        mask = upper if mask is None else pc.and_(mask, upper)
    return data if mask is None else data.filter(mask)


def _write(store: MarketStore, table: TableName, data: pa.Table) -> int:
    if isinstance(store, DuckDBMarketStore):
        return store.write_arrow(table, data)
    # Any other adapter: go through the port with validated models.
    rows = data.to_pylist()
    if table == "candles":
        return store.write_candles([Candle(**r) for r in rows])
    if table == "trades":
        return store.write_trades([Trade(**r) for r in rows])
    if table == "funding":
        return store.write_funding([FundingRate(**r) for r in rows])
    if table == "tickers":
        return store.write_tickers([Ticker(**r) for r in rows])
    writer = getattr(store, "write_mark_candles", None)
    if table == "mark" and callable(writer):
        return int(writer([Candle(**r) for r in rows]))
    raise UnsupportedFileError("-", f"this store cannot hold {table!r} rows")


def import_paths(
    paths: Sequence[Path],
    store: MarketStore,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    progress: ProgressFn | None = None,
    strict: bool = False,
) -> ImportReport:
    """Import files and folders (recursively) into ``store``, then flush it.

    Rows are kept when ``start_ms <= ts_ms < end_ms`` (open time for candles). Unreadable
    files are listed in ``skipped`` with the reason, or raise when ``strict``. Importing a
    file twice adds no rows.
    """
    files = list(_iter_files(paths))
    if not files:
        raise DataImportError(", ".join(map(str, paths)), "no files to import")
    report = ImportReport(rows={t: 0 for t in TABLES})
    saw_trades = False
    for index, path in enumerate(files, 1):
        try:
            parsed = _read_batches(path)
        except DataImportError as exc:
            if strict:
                raise
            report.skipped.append(SkippedFile(path=str(path), reason=exc.reason))
        else:
            for batch in parsed:
                data = _time_filter(batch.data, start_ms, end_ms)
                report.rows[batch.table] += _write(store, batch.table, data)
                saw_trades = saw_trades or (batch.table == "trades" and data.num_rows > 0)
                if batch.bad_lines:
                    report.bad_lines[str(path)] = (
                        report.bad_lines.get(str(path), 0) + batch.bad_lines
                    )
            report.files_imported.append(str(path))
        if progress is not None:
            progress(str(path), index, len(files))
    if saw_trades and isinstance(store, DuckDBMarketStore):
        # a store of trades only must run too: 1m candles (with taker-buy volume) from them
        report.derived_candles = store.derive_candles_from_trades("1m")
        report.rows["candles"] += report.derived_candles
    store.flush()
    return report


__all__ = [
    "CorruptFileError",
    "DataImportError",
    "ImportFailed",
    "ImportReport",
    "SkippedFile",
    "UnsupportedFileError",
    "import_paths",
    "read_file",
    "unified_symbol",
]
