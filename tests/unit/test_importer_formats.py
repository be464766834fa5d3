"""Importer formats and tolerance: one bad line costs that line (counted), never the file;
COIN-M symbols, 3m candles, ccxt-column CSVs and freqtrade trades (feather, json.gz);
an empty import is an error; trades become 1m candles. Inputs are rows of the committed
real excerpts (tests/fixtures/data), rewritten into the other formats here."""

from __future__ import annotations

import csv
import gzip
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.importers import DataImportError, import_paths, unified_symbol
from prometheus_trader.domain.market import MarketType
from prometheus_trader.ports import SeriesKey

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
TARDIS = FIXTURES / "tardis_trades.csv"
BTC = SeriesKey("binance", MarketType.PERP, "BTC/USDT:USDT")
ALL = (0, 2**62)


def tardis_rows() -> list[dict[str, str]]:
    with TARDIS.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def store(tmp_path: Path) -> DuckDBMarketStore:
    return DuckDBMarketStore(tmp_path / "store")


def test_coin_m_symbols_are_inverse_perps() -> None:
    assert unified_symbol("BTCUSD_PERP", MarketType.PERP) == "BTC/USD:BTC"
    assert unified_symbol("ETHUSD_PERP", MarketType.PERP) == "ETH/USD:ETH"
    assert unified_symbol("BTCUSDT", MarketType.PERP) == "BTC/USDT:USDT"


def test_a_bad_csv_line_is_skipped_and_counted(tmp_path: Path, store: DuckDBMarketStore) -> None:
    lines = TARDIS.read_text().splitlines()
    broken = [*lines[:10], "binance-futures,BTCUSDT,not-a-time,1,2,buy,9682,0.1", *lines[10:50]]
    broken.insert(20, "binance-futures,BTCUSDT,1582329602111000")  # too few columns
    path = tmp_path / "tardis_trades.csv"
    path.write_text("\n".join(broken) + "\n")
    report = import_paths([path], store)
    assert report.files_imported == [str(path)]
    assert report.bad_lines == {str(path): 2}
    assert report.rows["trades"] == 49


def test_a_bad_websocket_line_is_skipped_and_counted(
    tmp_path: Path, store: DuckDBMarketStore
) -> None:
    with gzip.open(FIXTURES / "btcusdt_20240808.gz", "rt") as handle:
        lines = handle.read().splitlines()
    trades = sum('@trade"' in line for line in lines)
    lines.insert(7, "garbage")
    lines.insert(9, '1723161254087896568 {"stream":"btcusdt@trade","data":{"e":"trade"')
    path = tmp_path / "btcusdt_20240808.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    report = import_paths([path], store)
    assert report.bad_lines == {str(path): 2}
    assert report.rows["trades"] == trades


def test_trades_become_1m_candles_with_taker_buy_volume(store: DuckDBMarketStore) -> None:
    report = import_paths([TARDIS], store)
    rows = tardis_rows()
    minutes: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        minutes.setdefault(int(row["timestamp"]) // 1000 // 60_000 * 60_000, []).append(row)
    assert report.derived_candles == len(minutes)
    bars = store.candles(BTC, "1m", *ALL)
    assert bars.ts_ms.tolist() == sorted(minutes)
    for i, ts in enumerate(bars.ts_ms.tolist()):
        group = minutes[ts]
        assert bars.open[i] == float(group[0]["price"])
        assert bars.close[i] == float(group[-1]["price"])
        assert bars.high[i] == max(float(r["price"]) for r in group)
        assert bars.volume[i] == pytest.approx(sum(float(r["amount"]) for r in group))
        buys = sum(float(r["amount"]) for r in group if r["side"] == "buy")
        assert bars.taker_buy_volume[i] == pytest.approx(buys)
    again = import_paths([TARDIS], store)
    assert again.total_rows == 0  # idempotent, derived candles included


def test_three_minute_candles_import(tmp_path: Path, store: DuckDBMarketStore) -> None:
    source = feather.read_table(FIXTURES / "BTC_USDT_USDT-1m-futures.feather")
    every_third = source.take(list(range(0, source.num_rows, 3)))
    path = tmp_path / "BTC_USDT_USDT-3m-futures.feather"
    feather.write_feather(every_third, path)
    report = import_paths([path], store)
    assert report.rows["candles"] == every_third.num_rows
    assert len(store.candles(BTC, "3m", *ALL)) == every_third.num_rows


def _ccxt_trades(rows: list[dict[str, str]]) -> dict[str, list[object]]:
    return {
        "timestamp": [int(r["timestamp"]) // 1000 for r in rows],
        "id": [r["id"] for r in rows],
        "type": [None for _ in rows],
        "side": [r["side"] for r in rows],
        "price": [float(r["price"]) for r in rows],
        "amount": [float(r["amount"]) for r in rows],
        "cost": [float(r["price"]) * float(r["amount"]) for r in rows],
    }


def test_freqtrade_trades_feather_and_json_gz(tmp_path: Path) -> None:
    rows = tardis_rows()[:40]
    columns = _ccxt_trades(rows)
    as_feather = tmp_path / "BTC_USDT_USDT-trades.feather"
    feather.write_feather(pa.table(columns), as_feather)
    as_json = tmp_path / "json" / "BTC_USDT_USDT-trades.json.gz"
    as_json.parent.mkdir()
    listed = [[columns[c][i] for c in columns] for i in range(len(rows))]
    with gzip.open(as_json, "wt") as handle:
        json.dump([*listed, ["not", "a", "trade"]], handle)
    for path in (as_feather, as_json):
        store = DuckDBMarketStore(tmp_path / f"store-{path.suffix}")
        report = import_paths([path], store)
        assert report.rows["trades"] == len(rows), path
        trades = store.trades(BTC, *ALL)
        assert [t.price for t in trades] == [float(r["price"]) for r in rows]
        assert [t.side.value for t in trades] == [r["side"] for r in rows]
    assert report.bad_lines == {str(as_json): 1}


def test_ccxt_column_trade_csv(tmp_path: Path, store: DuckDBMarketStore) -> None:
    rows = tardis_rows()[:30]
    columns = _ccxt_trades(rows)
    path = tmp_path / "trades.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "timestamp", "datetime", "symbol", "side", "price", "amount"])
        for i in range(len(rows)):
            writer.writerow(
                [
                    columns["id"][i],
                    columns["timestamp"][i],
                    "",
                    "BTC/USDT:USDT",
                    columns["side"][i],
                    columns["price"][i],
                    columns["amount"][i],
                ]
            )
    report = import_paths([path], store)
    assert report.rows["trades"] == len(rows)
    assert [t.amount for t in store.trades(BTC, *ALL)] == [float(r["amount"]) for r in rows]


def test_an_empty_import_is_an_error(tmp_path: Path, store: DuckDBMarketStore) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataImportError, match="no files to import"):
        import_paths([empty], store)


def test_a_zip_with_a_bad_row_keeps_the_rest(tmp_path: Path, store: DuckDBMarketStore) -> None:
    source = FIXTURES / "futures-APEUSDT-aggTrades-2024-10-18.zip"
    with zipfile.ZipFile(source) as archive:
        member = archive.namelist()[0]
        lines = archive.read(member).decode().splitlines()
    lines.insert(5, "171927999,oops,19.0,1,1,1729209603958,false")
    path = tmp_path / source.name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, "\n".join(lines) + "\n")
    report = import_paths([path], store)
    assert report.bad_lines == {str(path): 1}
    assert report.rows["trades"] == len(lines) - 2  # header and the bad row
