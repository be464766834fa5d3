"""What every importer shares: errors, the report, symbols, timestamps and a CSV reader
that skips (and counts) the lines that do not parse."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import BaseModel, Field

from prometheus_trader.adapters.embedded.market_tables import TableName
from prometheus_trader.domain.market import MarketType

EXCHANGE = "binance"
# Longest first so that e.g. FDUSD is not read as ...USD.
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")

ProgressFn = Callable[[str, int, int], None]


class DataImportError(ValueError):
    """A file could not be imported; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


ImportFailed = DataImportError
"""Alias of ``DataImportError`` (the name the CLI catches)."""


class UnsupportedFileError(DataImportError):
    """The file is not in a format we import."""


class CorruptFileError(DataImportError):
    """The file looks like a supported format but cannot be read."""


class SkippedFile(BaseModel):
    """A file that was not imported, and why."""

    path: str
    reason: str


class ImportReport(BaseModel):
    """Outcome of ``import_paths``: rows are *new* rows per store kind."""

    files_imported: list[str] = Field(default_factory=list)
    rows: dict[str, int] = Field(default_factory=dict)
    skipped: list[SkippedFile] = Field(default_factory=list)
    bad_lines: dict[str, int] = Field(
        default_factory=dict, description="file -> lines skipped because they did not parse"
    )
    derived_candles: int = Field(default=0, description="new 1m candles built from trades")

    @property
    def total_rows(self) -> int:
        """New rows over all kinds."""
        return sum(self.rows.values())


@dataclass(frozen=True)
class _Batch:
    """Rows of one store table, in that table's column layout."""

    table: TableName
    data: pa.Table
    bad_lines: int = 0  # lines of the file skipped because they did not parse


# --------------------------------------------------------------------------- symbols
def unified_symbol(exchange_symbol: str, market_type: MarketType) -> str:
    """``BTCUSDT`` -> ``BTC/USDT`` (spot) or ``BTC/USDT:USDT`` (linear perp); COIN-M
    ``BTCUSD_PERP`` -> ``BTC/USD:BTC`` (inverse perp, settled in the base coin)."""
    raw = exchange_symbol.upper()
    if raw.endswith("_PERP") and raw[:-5].endswith("USD") and len(raw) > 8:
        base = raw[:-8]
        return f"{base}/USD:{base}"
    for quote in _QUOTES:
        if raw.endswith(quote) and len(raw) > len(quote):
            base = raw[: -len(quote)]
            return (
                f"{base}/{quote}:{quote}" if market_type is MarketType.PERP else f"{base}/{quote}"
            )
    raise ValueError(f"cannot split {exchange_symbol!r} into base and quote")


def _key_columns(n: int, market_type: MarketType, symbol: str) -> dict[str, pa.Array]:
    return {
        "exchange": pa.array([EXCHANGE] * n, pa.string()),
        "market_type": pa.array([market_type.value] * n, pa.string()),
        "symbol": pa.array([symbol] * n, pa.string()),
    }


def _to_ms(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Epoch integers in s/ms/µs/ns (Binance spot moved to µs in 2025) to milliseconds."""
    arr = np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    out = arr.copy()
    out[arr >= 10**17] //= 1_000_000
    out[(arr >= 10**14) & (arr < 10**17)] //= 1_000
    out[arr < 10**11] *= 1_000
    return pa.array(out, pa.int64())


def _bool_column(values: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Binance writes booleans as true/false or True/False."""
    if pa.types.is_boolean(values.type):
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)
    text = pc.utf8_lower(pc.cast(values, pa.string()))
    return np.asarray(pc.equal(text, "true").to_numpy(zero_copy_only=False), dtype=bool)


# ------------------------------------------------------------------ tolerant CSV
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_INTEGER = r"^\s*[-+]?\d+\s*$"


def _tolerant_csv(
    path: Path,
    raw: bytes,
    types: dict[str, pa.DataType],
    names: list[str] | None = None,
    skip_rows: int = 0,
) -> tuple[pa.Table, int]:
    """Read a CSV, skipping (and counting) rows that do not parse: wrong column count, or
    a non-number where the column holds numbers. One bad line never costs the file."""
    bad = 0

    def skip(_row: object) -> str:
        nonlocal bad
        bad += 1
        return "skip"

    header = names or [
        c.strip() for c in raw.split(b"\n", 1)[0].decode("utf-8", "replace").split(",")
    ]
    # read as text, then keep the rows whose numbers parse (type inference would turn a
    # whole block into strings, or fail the file, for one bad value)
    try:
        text = pacsv.read_csv(
            io.BytesIO(raw),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip_rows),
            parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
        )
    except (pa.ArrowInvalid, ValueError) as exc:
        raise CorruptFileError(path, f"unreadable CSV ({exc})") from exc
    # a column is numeric when most of its values are numbers (the rest are bad lines)
    numeric = [
        c
        for c in text.column_names
        if types.get(c) != pa.string()
        and 2 * (pc.sum(pc.match_substring_regex(text.column(c), _NUMBER)).as_py() or 0)
        > text.num_rows
    ]
    keep = None
    for c in numeric:
        ok = pc.fill_null(pc.match_substring_regex(text.column(c), _NUMBER), False)
        keep = ok if keep is None else pc.and_(keep, ok)
    if keep is not None:
        before = text.num_rows
        text = text.filter(keep)
        bad += before - text.num_rows
    columns = {}
    for c in text.column_names:
        col = text.column(c)
        if c in numeric:
            integral = pc.all(pc.match_substring_regex(col, _INTEGER)).as_py()
            col = pc.cast(pc.utf8_trim_whitespace(col), pa.int64() if integral else pa.float64())
        columns[c] = col
    return pa.table(columns), bad
