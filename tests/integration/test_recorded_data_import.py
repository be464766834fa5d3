"""Whole-folder imports of recorded data and the bundled sample's reproducibility.

Each test runs on the excerpts committed in tests/fixtures/data: nothing outside the
repository is read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.importers import import_paths
from prometheus_trader.domain.market import MarketType
from prometheus_trader.ports import SeriesKey
from prometheus_trader.sample import SAMPLE_END_MS, SAMPLE_START_MS, SAMPLE_STORE_DIR

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
FEATHER_SOURCES = [FIXTURES]
SOURCE_IDS = ["fixtures"]


def load_make_sample() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "scripts/make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def perp_symbol(path: Path) -> str:
    base, quote, settle = path.name.split("-")[0].split("_")
    return f"{base}/{quote}:{settle}"


@pytest.mark.parametrize("source", FEATHER_SOURCES, ids=SOURCE_IDS)
def test_every_feather_row_is_imported_once(source: Path, tmp_path: Path) -> None:
    feathers = sorted(source.glob("*.feather"))
    expected = {"candles": 0, "funding": 0, "mark": 0}
    for path in feathers:
        kind = "funding" if "funding" in path.name else "mark" if "mark" in path.name else "candles"
        expected[kind] += feather.read_table(path).num_rows
    report = import_paths(feathers, DuckDBMarketStore(tmp_path), strict=True)
    assert {k: report.rows[k] for k in expected} == expected
    reopened = DuckDBMarketStore(tmp_path)
    symbols = sorted({perp_symbol(p) for p in feathers if p.name.endswith("-1m-futures.feather")})
    assert [k.symbol for k in reopened.series_keys()] == symbols


@pytest.mark.parametrize("source", FEATHER_SOURCES, ids=SOURCE_IDS)
def test_sample_prices_equal_the_source(source: Path) -> None:
    sample = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    checked = 0
    for path in sorted(source.glob("*-1m-futures.feather")):
        key = SeriesKey("binance", MarketType.PERP, perp_symbol(path))
        table = feather.read_table(path)
        ts_ms = pc.divide(
            pc.cast(pc.cast(table.column("date"), pa.timestamp("ns")), pa.int64()), 10**6
        )
        inside = pc.and_(pc.greater_equal(ts_ms, SAMPLE_START_MS), pc.less(ts_ms, SAMPLE_END_MS))
        wanted = dict(
            zip(
                ts_ms.filter(inside).to_pylist(),
                table.column("close").filter(inside).to_pylist(),
                strict=True,
            )
        )
        series = sample.candles(key, "1m", SAMPLE_START_MS, SAMPLE_END_MS)
        got = dict(zip(series.ts_ms.tolist(), series.close.tolist(), strict=True))
        assert {t: got.get(t) for t in wanted} == wanted
        checked += len(wanted)
    assert checked > 0


def content(root: Path) -> dict[Path, pa.Table]:
    """Every Parquet partition under ``root`` as a table sorted by its key columns (the
    comparison is of schema, rows and values, not of bytes that carry a writer version)."""
    tables = {}
    for path in sorted(root.rglob("*.parquet")):
        table = pq.read_table(path)
        keys = [c for c in ("symbol", "ts_ms") if c in table.column_names]
        tables[path.relative_to(root)] = table.sort_by([(k, "ascending") for k in keys])
    return tables


def test_make_sample_is_reproducible_and_matches_the_committed_sample(tmp_path: Path) -> None:
    make_sample = load_make_sample()
    symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    for out in ("a", "b"):
        argv = ["--source", str(FIXTURES), "--out", str(tmp_path / out), "--symbols", *symbols]
        assert make_sample.main(argv) == 0
    built_a, built_b = content(tmp_path / "a"), content(tmp_path / "b")
    assert built_a
    assert built_a.keys() == built_b.keys()
    for rel, table in built_a.items():
        assert table.schema == built_b[rel].schema
        assert table.equals(built_b[rel]), rel
    # the committed sample holds exactly these rows for the excerpt's symbols and hours
    committed = content(SAMPLE_STORE_DIR)
    for rel, table in built_a.items():
        assert rel in committed, rel
        sample = committed[rel]
        assert sample.schema == table.schema
        first, last = pc.min_max(table.column("ts_ms")).values()
        inside = pc.and_(
            pc.is_in(sample.column("symbol"), value_set=pa.array(symbols)),
            pc.and_(
                pc.greater_equal(sample.column("ts_ms"), first),
                pc.less_equal(sample.column("ts_ms"), last),
            ),
        )
        assert sample.filter(inside).equals(table), rel
