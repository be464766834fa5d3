"""Importers of Binance public-data CSVs/zips, raw websocket recordings and trade files
(normalized, Tardis, ccxt columns, freqtrade trades); see ``importers`` for the list."""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from prometheus_trader.adapters.import_common import (
    EXCHANGE,
    CorruptFileError,
    UnsupportedFileError,
    _Batch,
    _bool_column,
    _key_columns,
    _to_ms,
    _tolerant_csv,
    unified_symbol,
)
from prometheus_trader.domain.market import TIMEFRAME_MS, MarketType

# ------------------------------------------------------------------- binance vision
_KLINE_COLUMNS = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
]
_AGG_COLUMNS = [
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "transact_time",
    "is_buyer_maker",
    "is_best_match",
]
_TRADE_COLUMNS = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]
_VISION_RE = re.compile(
    r"(?P<symbol>[A-Z0-9]+)-(?P<what>aggTrades|trades|\d+[mhdw])-\d{4}-\d{2}(?:-\d{2})?\.csv$"
)


def _vision_market_type(path: Path, has_header: bool) -> MarketType:
    """Binance's own folder names say futures/um or spot; freqtrade's fixtures prefix the
    zip name the same way. Without either, the format itself tells (spot files have no
    header row)."""
    words = {w.lower() for w in re.split(r"[-_/\\.]", str(path))}
    if "um" in words or "futures" in words:
        return MarketType.PERP
    if "spot" in words:
        return MarketType.SPOT
    return MarketType.PERP if has_header else MarketType.SPOT


def _read_vision_csv(path: Path, member: str, raw: bytes) -> list[_Batch]:
    match = _VISION_RE.search(Path(member).name)
    if match is None:
        raise UnsupportedFileError(path, f"{member!r} is not a Binance public-data CSV name")
    first_line = raw.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    if not first_line:
        raise CorruptFileError(path, "empty CSV")
    has_header = not first_line.split(",")[0].strip().lstrip("-").isdigit()
    n_columns = len(first_line.split(","))
    what = match["what"]
    market_type = _vision_market_type(path, has_header)
    symbol = unified_symbol(match["symbol"], market_type)
    if what == "aggTrades":
        names = _AGG_COLUMNS[:n_columns]
    elif what == "trades":
        names = _TRADE_COLUMNS[:n_columns]  # futures files have no is_best_match
    else:
        names = _KLINE_COLUMNS[:n_columns]
        if what not in TIMEFRAME_MS:
            raise UnsupportedFileError(path, f"timeframe {what!r} is not supported")
    table, bad = _tolerant_csv(
        path,
        raw,
        {"is_buyer_maker": pa.string(), "is_best_match": pa.string()},
        names=names,
        skip_rows=1 if has_header else 0,
    )
    n = table.num_rows
    keys = _key_columns(n, market_type, symbol)
    if what in ("aggTrades", "trades"):
        id_col, qty_col, ts_col = (
            ("agg_trade_id", "quantity", "transact_time")
            if what == "aggTrades"
            else ("id", "qty", "time")
        )
        for col in (id_col, "price", qty_col, ts_col, "is_buyer_maker"):
            if col not in table.column_names:
                raise CorruptFileError(path, f"missing column {col!r}")
        sold = _bool_column(table.column("is_buyer_maker"))
        data = pa.table(
            {
                **keys,
                "ts_ms": _to_ms(table.column(ts_col)),
                "trade_id": pc.cast(table.column(id_col), pa.string()),
                "price": table.column("price"),
                "amount": table.column(qty_col),
                "side": pa.array(np.where(sold, "sell", "buy"), pa.string()),
                "source": pa.array(["trade"] * n, pa.string()),
            }
        )
        return [_Batch("trades", data, bad)]
    if n_columns < 6:
        raise CorruptFileError(path, f"kline rows have {n_columns} columns, expected 12")
    columns: dict[str, Any] = {
        **keys,
        "timeframe": pa.array([what] * n, pa.string()),
        "ts_ms": _to_ms(table.column("open_time")),
        **{c: table.column(c) for c in ("open", "high", "low", "close", "volume")},
    }
    for src, dst in (
        ("quote_volume", "quote_volume"),
        ("taker_buy_volume", "taker_buy_volume"),
        ("count", "trades"),
    ):
        if src in table.column_names:
            columns[dst] = table.column(src)
    return [_Batch("candles", pa.table(columns), bad)]


def _read_zip(path: Path) -> list[_Batch]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(m for m in archive.namelist() if m.lower().endswith(".csv"))
            if len(members) != 1:
                raise UnsupportedFileError(path, f"expected one CSV in the zip, found {members}")
            raw = archive.read(members[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptFileError(path, f"not a readable zip ({exc})") from exc
    return _read_vision_csv(path, members[0], raw)


# ------------------------------------------------------------- raw websocket records
def _read_raw_recording(path: Path) -> list[_Batch]:
    trades: dict[str, list[Any]] = {c: [] for c in ("symbol", "ts_ms", "trade_id", "p", "q", "m")}
    tickers: dict[tuple[str, int], tuple[int, float, float, float]] = {}
    last_price: dict[str, float] = {}
    market_type = MarketType.PERP
    bad = good = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                local_ts, _, payload = line.strip().partition(" ")
                if not local_ts.isdigit() or not payload.startswith("{"):
                    bad += 1  # one broken line costs that line, never the file
                    continue
                good += 1
                # depth diffs are most of the bytes: skip them before parsing the JSON
                if '@trade"' not in payload and '@bookTicker"' not in payload:
                    continue
                try:
                    message = json.loads(payload)
                    data = message.get("data", message)
                    if data.get("e") == "trade":
                        if "M" in data:  # only the spot trade stream carries "M" (best match)
                            market_type = MarketType.SPOT
                        row = (
                            str(data["s"]),
                            int(data["T"]),
                            str(data["t"]),
                            float(data["p"]),
                            float(data["q"]),
                            bool(data["m"]),
                        )
                        for column, value in zip(trades, row, strict=True):
                            trades[column].append(value)
                        last_price[row[0]] = row[3]
                    elif "b" in data and "a" in data and data["s"] in last_price:
                        # spot book tickers carry neither T nor E: the recorder's clock
                        ts = int(data.get("T") or data.get("E") or int(local_ts) // 1_000_000)
                        # one ticker per symbol and second: the last book ticker in it wins
                        tickers[(data["s"], ts // 1000)] = (
                            ts,
                            last_price[data["s"]],
                            float(data["b"]),
                            float(data["a"]),
                        )
                except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    bad += 1
    except (OSError, EOFError) as exc:
        raise CorruptFileError(path, f"unreadable websocket recording ({exc})") from exc
    if not good:
        raise CorruptFileError(path, "no '<local_ts_ns> <json>' line in the recording")
    batches: list[_Batch] = []
    if trades["ts_ms"]:
        n = len(trades["ts_ms"])
        batches.append(
            _Batch(
                "trades",
                pa.table(
                    {
                        "exchange": pa.array([EXCHANGE] * n, pa.string()),
                        "market_type": pa.array([market_type.value] * n, pa.string()),
                        "symbol": [unified_symbol(s, market_type) for s in trades["symbol"]],
                        "ts_ms": pa.array(trades["ts_ms"], pa.int64()),
                        "trade_id": trades["trade_id"],
                        "price": trades["p"],
                        "amount": trades["q"],
                        "side": ["sell" if m else "buy" for m in trades["m"]],
                        "source": ["trade"] * n,
                    }
                ),
                bad,
            )
        )
        bad = 0
    if tickers:
        items = sorted(tickers.items())
        batches.append(
            _Batch(
                "tickers",
                pa.table(
                    {
                        "exchange": [EXCHANGE] * len(items),
                        "market_type": [market_type.value] * len(items),
                        "symbol": [unified_symbol(s, market_type) for (s, _), _v in items],
                        "ts_ms": pa.array([v[0] for _k, v in items], pa.int64()),
                        "last": [v[1] for _k, v in items],
                        "bid": [v[2] for _k, v in items],
                        "ask": [v[3] for _k, v in items],
                    }
                ),
                bad,
            )
        )
    if not batches:
        raise UnsupportedFileError(path, "recording holds no @trade or @bookTicker messages")
    return batches


# ------------------------------------------------------------------ CSV trade files
_NORMALIZED_HEADER = (
    "local_ts_ns,event_time_ms,trade_time_ms,symbol,trade_id,price,qty,is_buyer_maker"
)
_TARDIS_HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
_TARDIS_MARKETS = {"binance-futures": MarketType.PERP, "binance": MarketType.SPOT}


def _read_csv_table(path: Path, raw: bytes, types: dict[str, pa.DataType]) -> tuple[pa.Table, int]:
    return _tolerant_csv(path, raw, types)


def _trades_batch(
    path: Path,
    market_types: list[MarketType],
    exchange_symbols: pa.ChunkedArray,
    ts_ms: pa.Array,
    trade_ids: pa.ChunkedArray,
    price: pa.ChunkedArray,
    amount: pa.ChunkedArray,
    sides: list[str],
    bad_lines: int = 0,
) -> _Batch:
    cache: dict[tuple[str, MarketType], str] = {}
    symbols = []
    for raw_symbol, market_type in zip(exchange_symbols.to_pylist(), market_types, strict=True):
        key = (str(raw_symbol), market_type)
        if key not in cache:
            try:
                cache[key] = unified_symbol(key[0], market_type)
            except ValueError as exc:
                raise CorruptFileError(path, str(exc)) from exc
        symbols.append(cache[key])
    n = len(symbols)
    return _Batch(
        "trades",
        pa.table(
            {
                "exchange": pa.array([EXCHANGE] * n, pa.string()),
                "market_type": [m.value for m in market_types],
                "symbol": symbols,
                "ts_ms": ts_ms,
                "trade_id": pc.cast(trade_ids, pa.string()),
                "price": pc.cast(price, pa.float64()),
                "amount": pc.cast(amount, pa.float64()),
                "side": sides,
                "source": ["trade"] * n,
            }
        ),
        bad_lines,
    )


def _read_trades_csv(path: Path) -> list[_Batch]:
    raw = path.read_bytes()
    header = raw.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    if header == _NORMALIZED_HEADER:
        name = path.name.lower()
        if name.startswith("usdm_"):
            market_type = MarketType.PERP
        elif name.startswith("spot_"):
            market_type = MarketType.SPOT
        else:
            raise UnsupportedFileError(path, "normalized trades need a usdm_ or spot_ name prefix")
        table, bad = _read_csv_table(
            path, raw, {"is_buyer_maker": pa.string(), "symbol": pa.string()}
        )
        sold = _bool_column(table.column("is_buyer_maker"))
        return [
            _trades_batch(
                path,
                [market_type] * table.num_rows,
                table.column("symbol"),
                _to_ms(table.column("trade_time_ms")),
                table.column("trade_id"),
                table.column("price"),
                table.column("qty"),
                ["sell" if s else "buy" for s in sold],
                bad,
            )
        ]
    if header == _TARDIS_HEADER:
        table, bad = _read_csv_table(
            path, raw, {"exchange": pa.string(), "symbol": pa.string(), "side": pa.string()}
        )
        venues = set(table.column("exchange").to_pylist()) - set(_TARDIS_MARKETS)
        if venues:
            raise UnsupportedFileError(path, f"Tardis exchange(s) {sorted(venues)} not supported")
        # a row whose side is neither buy nor sell is a bad line: skip it, count it
        valid = pc.is_in(pc.utf8_lower(table.column("side")), pa.array(["buy", "sell"]))
        bad += table.num_rows - (pc.sum(valid).as_py() or 0)
        table = table.filter(valid)
        markets = [_TARDIS_MARKETS[v] for v in table.column("exchange").to_pylist()]
        sides = [str(s).lower() for s in table.column("side").to_pylist()]
        return [
            _trades_batch(
                path,
                markets,
                table.column("symbol"),
                _to_ms(table.column("timestamp")),
                table.column("id"),
                table.column("price"),
                table.column("amount"),
                sides,
                bad,
            )
        ]
    if _VISION_RE.search(path.name):
        return _read_vision_csv(path, path.name, raw)
    if {c.strip() for c in header.split(",")} >= _CCXT_TRADE_COLUMNS:
        table, bad = _read_csv_table(
            path, raw, {"side": pa.string(), "symbol": pa.string(), "id": pa.string()}
        )
        return [_ccxt_trades(path, table, bad)]
    raise UnsupportedFileError(path, f"unknown CSV header {header[:80]!r}")


# ------------------------------------------------- ccxt-shaped trades (freqtrade too)
# ccxt's trade fields; freqtrade stores trades with these columns (feather, json.gz)
_CCXT_TRADE_COLUMNS = {"timestamp", "side", "price", "amount"}
_FREQTRADE_TRADES = ["timestamp", "id", "type", "side", "price", "amount", "cost"]
_PAIR_TRADES_RE = re.compile(
    r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)(?:_(?P<settle>[A-Z0-9]+))?-trades\.",
    re.IGNORECASE,
)


def _pair_from_name(path: Path) -> str | None:
    """freqtrade's ``BTC_USDT_USDT-trades.*`` (perp) / ``BTC_USDT-trades.*`` (spot)."""
    match = _PAIR_TRADES_RE.match(path.name)
    if match is None:
        return None
    base, quote, settle = match["base"].upper(), match["quote"].upper(), match["settle"]
    return f"{base}/{quote}:{settle.upper()}" if settle else f"{base}/{quote}"


def _ccxt_trades(path: Path, table: pa.Table, bad: int) -> _Batch:
    """Trades with ccxt's columns (timestamp ms, side, price, amount; id and symbol
    optional: the symbol then comes from a freqtrade file name)."""
    missing = _CCXT_TRADE_COLUMNS - set(table.column_names)
    if missing:
        raise CorruptFileError(path, f"missing columns {sorted(missing)}")
    if "symbol" in table.column_names:
        symbols = [str(v) for v in table.column("symbol").to_pylist()]
    else:
        pair = _pair_from_name(path)
        if pair is None:
            raise UnsupportedFileError(
                path, "trades without a symbol column need a freqtrade name (PAIR-trades.*)"
            )
        symbols = [pair] * table.num_rows
    sides = [str(v).lower() for v in table.column("side").to_pylist()]
    keep = [s in ("buy", "sell") and "/" in sym for s, sym in zip(sides, symbols, strict=True)]
    if not all(keep):
        bad += keep.count(False)
        table = table.filter(pa.array(keep))
        symbols = [sym for sym, k in zip(symbols, keep, strict=True) if k]
        sides = [side for side, k in zip(sides, keep, strict=True) if k]
    n = table.num_rows
    ts_ms = _to_ms(table.column("timestamp"))
    ids = (
        pc.cast(table.column("id"), pa.string())
        if "id" in table.column_names
        else pa.array([f"{t}-{i}" for i, t in enumerate(ts_ms.to_pylist())], pa.string())
    )
    market = [(MarketType.PERP if ":" in sym else MarketType.SPOT).value for sym in symbols]
    data = pa.table(
        {
            "exchange": pa.array([EXCHANGE] * n, pa.string()),
            "market_type": pa.array(market, pa.string()),
            "symbol": pa.array(symbols, pa.string()),
            "ts_ms": ts_ms,
            "trade_id": ids,
            "price": pc.cast(table.column("price"), pa.float64()),
            "amount": pc.cast(table.column("amount"), pa.float64()),
            "side": pa.array(sides, pa.string()),
            "source": pa.array(["trade"] * n, pa.string()),
        }
    )
    return _Batch("trades", data, bad)


def _read_freqtrade_trades(path: Path) -> list[_Batch]:
    """freqtrade's trades: ``PAIR-trades.feather`` or ``PAIR-trades.json.gz`` (a JSON list
    of [timestamp, id, type, side, price, amount, cost])."""
    if path.name.lower().endswith(".feather"):
        try:
            table = feather.read_table(str(path))
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise CorruptFileError(path, f"not a readable feather file ({exc})") from exc
        if pa.types.is_timestamp(table.column("timestamp").type):
            ms = pc.cast(pc.cast(table.column("timestamp"), pa.timestamp("ms")), pa.int64())
            table = table.set_column(table.column_names.index("timestamp"), "timestamp", ms)
        return [_ccxt_trades(path, table, 0)]
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            rows = json.load(handle)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(path, f"unreadable freqtrade trades file ({exc})") from exc
    if not isinstance(rows, list):
        raise CorruptFileError(path, "freqtrade trades must be a JSON list")
    good = [r for r in rows if isinstance(r, list) and len(r) >= 6]
    good = [r for r in good if all(isinstance(r[i], int | float) for i in (0, 4, 5))]
    columns = {
        name: [r[i] for r in good] for i, name in enumerate(_FREQTRADE_TRADES[:6]) if name != "type"
    }
    columns["id"] = [str(v) for v in columns["id"]]
    columns["side"] = [str(v) for v in columns["side"]]
    table = pa.table(
        {
            "timestamp": pa.array(columns["timestamp"], pa.int64()),
            "id": pa.array(columns["id"], pa.string()),
            "side": pa.array(columns["side"], pa.string()),
            "price": pa.array(columns["price"], pa.float64()),
            "amount": pa.array(columns["amount"], pa.float64()),
        }
    )
    return [_ccxt_trades(path, table, len(rows) - len(good))]
