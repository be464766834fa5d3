"""Whole-folder imports of recorded data and the bundled sample's reproducibility.

Each test runs on the committed excerpts, and also on the full shared data folder when it
is present on the machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pytest

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.importers import import_paths
from prometheus_trader.domain.market import MarketType
from prometheus_trader.ports import SeriesKey
from prometheus_trader.sample import SAMPLE_END_MS, SAMPLE_START_MS, SAMPLE_STORE_DIR

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
# the full month, when the provided data folder sits beside the clone (optional)
USDM = ROOT.parent / "shared" / "data" / "binance-usdm-2025-05"
FEATHER_SOURCES = [FIXTURES] + ([USDM] if USDM.is_dir() else [])
SOURCE_IDS = ["fixtures", "shared"][: len(FEATHER_SOURCES)]


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


def test_make_sample_is_byte_reproducible(tmp_path: Path) -> None:
    make_sample = load_make_sample()
    symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    for out in ("a", "b"):
        argv = ["--source", str(FIXTURES), "--out", str(tmp_path / out), "--symbols", *symbols]
        assert make_sample.main(argv) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert files_a
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    if USDM.is_dir():  # the committed sample is exactly what the script builds from it
        assert make_sample.main(["--source", str(USDM), "--out", str(tmp_path / "full")]) == 0
        committed = sorted(
            p.relative_to(SAMPLE_STORE_DIR) for p in SAMPLE_STORE_DIR.rglob("*.parquet")
        )
        rebuilt = tmp_path / "full"
        assert committed == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*.parquet"))
        for rel in committed:
            assert (SAMPLE_STORE_DIR / rel).read_bytes() == (rebuilt / rel).read_bytes()
