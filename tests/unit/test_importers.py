"""Importers on real data: the committed excerpts in tests/fixtures/data (the tests read
nothing outside the repository)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import zipfile
from pathlib import Path

import pyarrow.feather as feather
import pytest

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.importers import (
    CorruptFileError,
    DataImportError,
    UnsupportedFileError,
    import_paths,
    read_file,
    unified_symbol,
)
from prometheus_trader.domain.market import MarketType, Side
from prometheus_trader.ports import SeriesKey

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
BTC = SeriesKey("binance", MarketType.PERP, "BTC/USDT:USDT")
BTC_SPOT = SeriesKey("binance", MarketType.SPOT, "BTC/USDT")
ALL_TIME = (0, 2**62)


def sources(*relative: str) -> list[Path]:
    """The committed excerpt of a recorded file (``relative`` names where the full file
    sits in the recorded data folder; see tests/fixtures/data/README.md)."""
    return [FIXTURES / Path(relative[-1]).name]


def ids(paths: list[Path]) -> list[str]:
    return ["fixture" for _ in paths]


def csv_rows(path: Path) -> list[list[str]]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            text = archive.read(archive.namelist()[0]).decode()
    else:
        text = path.read_text()
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    return rows[1:] if not rows[0][0].isdigit() else rows


@pytest.fixture
def store(tmp_path: Path) -> DuckDBMarketStore:
    return DuckDBMarketStore(tmp_path / "store")


FEATHER_1M = sources("binance-usdm-2025-05", "BTC_USDT_USDT-1m-futures.feather")


@pytest.mark.parametrize("path", FEATHER_1M, ids=ids(FEATHER_1M))
def test_freqtrade_candles_are_copied_as_read(path: Path, store: DuckDBMarketStore) -> None:
    report = import_paths([path], store)
    source = feather.read_table(path)
    assert report.rows["candles"] == source.num_rows
    series = store.candles(BTC, "1m", *ALL_TIME)
    assert series.close.tolist() == source.column("close").to_pylist()
    assert series.volume.tolist() == source.column("volume").to_pylist()
    first = source.column("date")[0].as_py()
    assert series.ts_ms[0] == int(first.timestamp() * 1000)
    assert not series.has_taker_volume


FUNDING = sources("binance-usdm-2025-05", "BTC_USDT_USDT-8h-funding_rate.feather")


@pytest.mark.parametrize("path", FUNDING, ids=ids(FUNDING))
def test_freqtrade_funding_rate_comes_from_open_column(
    path: Path, store: DuckDBMarketStore
) -> None:
    import_paths([path], store)
    rates = store.funding(BTC, *ALL_TIME)
    assert [r.rate for r in rates] == feather.read_table(path).column("open").to_pylist()
    assert store.series_keys() == []  # funding is not a candle series


def test_freqtrade_mark_prices_go_to_mark_candles(store: DuckDBMarketStore) -> None:
    path = FIXTURES / "BTC_USDT_USDT-8h-mark.feather"
    report = import_paths([path], store)
    assert report.rows["mark"] == 6
    marks = store.mark_candles(BTC, "8h", *ALL_TIME)
    assert [m.close for m in marks] == feather.read_table(path).column("close").to_pylist()


KLINES_PERP = sources("binance-vision-2024-10", "futures-um-klines-BTCUSDT-1h-2024-10-28.zip")
KLINES_SPOT = sources("binance-vision-2024-10", "spot-klines-BTCUSDT-1h-2024-10-28.zip")


@pytest.mark.parametrize(
    ("path", "key"),
    [(p, BTC) for p in KLINES_PERP] + [(p, BTC_SPOT) for p in KLINES_SPOT],
    ids=[f"perp-{i}" for i in ids(KLINES_PERP)] + [f"spot-{i}" for i in ids(KLINES_SPOT)],
)
def test_binance_klines_with_and_without_header(
    path: Path, key: SeriesKey, store: DuckDBMarketStore
) -> None:
    rows = csv_rows(path)
    report = import_paths([path], store)
    assert report.rows["candles"] == len(rows)
    assert store.series_keys() == [key]
    series = store.candles(key, "1h", *ALL_TIME)
    assert series.ts_ms.tolist() == [int(r[0]) for r in rows]
    assert series.close.tolist() == [float(r[4]) for r in rows]
    assert series.taker_buy_volume.tolist() == [float(r[9]) for r in rows]
    table = read_file(path)[0][1]
    assert table.column("quote_volume").to_pylist() == [float(r[7]) for r in rows]
    assert table.column("trades").to_pylist() == [int(r[8]) for r in rows]


AGG_PERP = sources("binance-vision-2024-10", "futures-APEUSDT-aggTrades-2024-10-18.zip")
AGG_SPOT = sources("binance-vision-2024-10", "spot-PEPEUSDT-aggTrades-2024-10-27.zip")


@pytest.mark.parametrize(
    ("path", "key"),
    [(p, SeriesKey("binance", MarketType.PERP, "APE/USDT:USDT")) for p in AGG_PERP]
    + [(p, SeriesKey("binance", MarketType.SPOT, "PEPE/USDT")) for p in AGG_SPOT],
    ids=[f"perp-{i}" for i in ids(AGG_PERP)] + [f"spot-{i}" for i in ids(AGG_SPOT)],
)
def test_binance_agg_trades_side_is_the_aggressor(
    path: Path, key: SeriesKey, store: DuckDBMarketStore
) -> None:
    rows = csv_rows(path)
    report = import_paths([path], store)
    assert report.rows["trades"] == len(rows)
    trades = store.trades(key, *ALL_TIME)
    by_id = {t.trade_id: t for t in trades}
    for row in rows[:50]:
        got = by_id[row[0]]
        assert got.price == float(row[1]) and got.amount == float(row[2])
        assert got.ts_ms == int(row[5])
        assert got.side == (Side.SELL if row[6].lower() == "true" else Side.BUY)


NORMALIZED = sources("binance-ticks-2024-08", "normalized", "usdm_btcusdt_20240808_trades.csv")


@pytest.mark.parametrize("path", NORMALIZED, ids=ids(NORMALIZED))
def test_normalized_trades_use_trade_time(path: Path, store: DuckDBMarketStore) -> None:
    rows = csv_rows(path)
    import_paths([path], store)
    trades = store.trades(BTC, *ALL_TIME)
    assert len(trades) == len(rows)
    first = min(rows, key=lambda r: (int(r[2]), r[4]))
    assert (trades[0].ts_ms, trades[0].trade_id) == (int(first[2]), first[4])
    sells = sum(1 for r in rows if r[7] == "True")
    assert sum(1 for t in trades if t.side is Side.SELL) == sells


def test_normalized_spot_prefix_gives_spot_symbol(store: DuckDBMarketStore) -> None:
    import_paths([FIXTURES / "spot_ethusdt_20240809_trades.csv"], store)
    key = SeriesKey("binance", MarketType.SPOT, "ETH/USDT")
    assert len(store.trades(key, *ALL_TIME)) == 200


RAW = sources("binance-ticks-2024-08", "raw", "btcusdt_20240808.gz")


@pytest.mark.parametrize("path", RAW, ids=ids(RAW))
def test_raw_recording_trades_and_tickers(path: Path, store: DuckDBMarketStore) -> None:
    messages = []
    with gzip.open(path, "rt") as lines:
        for line in lines:
            if '@trade"' in line:
                messages.append(json.loads(line.split(" ", 1)[1])["data"])
    report = import_paths([path], store)
    assert report.rows["trades"] == len(messages)
    trades = store.trades(BTC, *ALL_TIME)
    assert {(t.trade_id, t.ts_ms, t.price) for t in trades} == {
        (str(m["t"]), m["T"], float(m["p"])) for m in messages
    }
    prices = {float(m["p"]) for m in messages}
    tickers = store.latest_tickers("binance", 2**62)
    assert [t.symbol for t in tickers] == ["BTC/USDT:USDT"]
    assert tickers[0].last in prices
    assert tickers[0].bid is not None and tickers[0].ask is not None
    assert tickers[0].bid < tickers[0].ask


def test_raw_and_normalized_copies_of_the_same_trades_merge(store: DuckDBMarketStore) -> None:
    raw_table = dict(read_file(FIXTURES / "btcusdt_20240808.gz"))["trades"]
    raw_ids = set(raw_table.column("trade_id").to_pylist())
    csv_ids = {r[4] for r in csv_rows(FIXTURES / "usdm_btcusdt_20240808_trades.csv")}
    import_paths([FIXTURES / "btcusdt_20240808.gz"], store)
    import_paths([FIXTURES / "usdm_btcusdt_20240808_trades.csv"], store)
    assert len(store.trades(BTC, *ALL_TIME)) == len(raw_ids | csv_ids)
    assert raw_ids & csv_ids  # the excerpts overlap, so the merge is really exercised


TARDIS = sources("tardis-binance-futures-2020-02", "tardis_trades.csv")


@pytest.mark.parametrize("path", TARDIS, ids=ids(TARDIS))
def test_tardis_trades(path: Path, store: DuckDBMarketStore) -> None:
    rows = csv_rows(path)
    import_paths([path], store)
    trades = store.trades(BTC, *ALL_TIME)
    assert len(trades) == len(rows)
    first = rows[0]
    assert trades[0].ts_ms == int(first[2]) // 1000
    assert trades[0].side == Side(first[5])
    assert trades[0].price == float(first[6]) and trades[0].amount == float(first[7])


def test_folder_import_is_idempotent_and_reports_skips(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path / "s")
    seen: list[tuple[str, int, int]] = []
    first = import_paths([FIXTURES], store, progress=lambda name, i, n: seen.append((name, i, n)))
    files = sorted(p for p in FIXTURES.rglob("*") if p.is_file())
    assert [s[0] for s in seen] == [str(p) for p in files]
    assert [s[1] for s in seen] == list(range(1, len(files) + 1))
    skipped = {Path(s.path).name: s.reason for s in first.skipped}
    assert set(skipped) == {"README.md", "usdm_btcusdt_20240808_bookticker.csv.gz"}
    assert all(skipped.values())
    assert len(first.files_imported) == len(files) - 2
    assert first.total_rows > 0
    again = import_paths([FIXTURES], DuckDBMarketStore(tmp_path / "s"))
    assert again.total_rows == 0


def test_time_filter_is_half_open(store: DuckDBMarketStore) -> None:
    path = FIXTURES / "BTC_USDT_USDT-1m-futures.feather"
    start = int(feather.read_table(path).column("date")[10].as_py().timestamp() * 1000)
    report = import_paths([path], store, start_ms=start, end_ms=start + 5 * 60_000)
    assert report.rows["candles"] == 5
    assert store.candle_range(BTC, "1m") == (start, start + 4 * 60_000)


def test_import_flushes_to_parquet(tmp_path: Path) -> None:
    import_paths([FIXTURES / "tardis_trades.csv"], DuckDBMarketStore(tmp_path))
    assert len(DuckDBMarketStore(tmp_path).trades(BTC, *ALL_TIME)) == 200


def test_unreadable_files_give_clear_errors(tmp_path: Path, store: DuckDBMarketStore) -> None:
    broken_zip = tmp_path / "futures-um-klines-BTCUSDT-1h-2024-10-28.zip"
    broken_zip.write_bytes((FIXTURES / broken_zip.name).read_bytes()[:100])
    broken_feather = tmp_path / "BTC_USDT_USDT-1m-futures.feather"
    broken_feather.write_bytes(b"not a feather file")
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    with pytest.raises(CorruptFileError, match=r"klines-BTCUSDT.*not a readable zip"):
        read_file(broken_zip)
    with pytest.raises(CorruptFileError, match=r"BTC_USDT_USDT-1m-futures\.feather"):
        read_file(broken_feather)
    with pytest.raises(UnsupportedFileError, match=r"notes\.txt: unknown file type"):
        read_file(unknown)
    report = import_paths([broken_zip, unknown], store)
    assert [Path(s.path).name for s in report.skipped] == [broken_zip.name, "notes.txt"]
    with pytest.raises(DataImportError):
        import_paths([broken_zip], store, strict=True)


def test_a_corrupt_csv_row_costs_that_row_only(tmp_path: Path) -> None:
    path = tmp_path / "tardis_trades.csv"
    text = (FIXTURES / "tardis_trades.csv").read_text().splitlines()
    path.write_text("\n".join([*text[:3], "binance-futures,BTCUSDT,oops,1,2,buy,1,1"]) + "\n")
    [(table, data)] = read_file(path)
    assert table == "trades"
    assert data.num_rows == 2


def test_normalized_trades_need_a_market_prefix(tmp_path: Path) -> None:
    path = tmp_path / "btcusdt_trades.csv"
    shutil.copy(FIXTURES / "usdm_btcusdt_20240808_trades.csv", path)
    with pytest.raises(UnsupportedFileError, match="usdm_ or spot_"):
        read_file(path)


@pytest.mark.parametrize(
    ("raw", "market", "expected"),
    [
        ("BTCUSDT", MarketType.PERP, "BTC/USDT:USDT"),
        ("1000PEPEUSDT", MarketType.PERP, "1000PEPE/USDT:USDT"),
        ("ethfdusd", MarketType.SPOT, "ETH/FDUSD"),
        ("ETHBTC", MarketType.SPOT, "ETH/BTC"),
    ],
)
def test_unified_symbol(raw: str, market: MarketType, expected: str) -> None:
    assert unified_symbol(raw, market) == expected


def test_unified_symbol_rejects_unknown_quote() -> None:
    with pytest.raises(ValueError, match="XYZ"):
        unified_symbol("XYZ", MarketType.SPOT)
