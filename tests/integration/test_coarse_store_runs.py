"""A store of only coarse candles runs at its own resolution: a freqtrade folder of 5m
futures candles (resampled here from the committed 1m excerpts, in freqtrade's layout)
goes through `data import`, `run --data` and `backtest --data` on the CLI; both replay 5m
bars, say so, and agree. docs/data.md ("Coarse-resolution runs")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pytest
from tests.support import FIXTURE_DATA, run_cli

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.market import MarketType
from prometheus_trader.ports import SeriesKey
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration

PAIRS = ("BTC_USDT_USDT", "ETH_USDT_USDT")


def resample_feather(source: Path, target: Path, minutes: int) -> int:
    """freqtrade 1m candles → ``minutes`` candles (complete buckets only), same columns."""
    table = feather.read_table(source)
    step = minutes * 60 * 10**9
    ns = pc.cast(table.column("date"), pa.int64())
    table = table.append_column("bucket", pc.multiply(pc.divide(ns, step), step))
    grouped = (
        table.group_by("bucket", use_threads=False)
        .aggregate(
            [
                ("open", "first"),
                ("high", "max"),
                ("low", "min"),
                ("close", "last"),
                ("volume", "sum"),
                ("date", "count"),
            ]
        )
        .sort_by("bucket")
    )
    grouped = grouped.filter(pc.equal(grouped.column("date_count"), minutes))
    out = pa.table(
        {
            "date": pc.cast(grouped.column("bucket"), table.schema.field("date").type),
            "open": grouped.column("open_first"),
            "high": grouped.column("high_max"),
            "low": grouped.column("low_min"),
            "close": grouped.column("close_last"),
            "volume": grouped.column("volume_sum"),
        }
    )
    feather.write_feather(out, str(target), compression="uncompressed")
    return out.num_rows


def freqtrade_5m_folder(root: Path) -> Path:
    """``user_data/data/binance/futures`` with 5m candles, 8h funding and mark per pair."""
    folder = root / "user_data" / "data" / "binance" / "futures"
    folder.mkdir(parents=True)
    for pair in PAIRS:
        rows = resample_feather(
            FIXTURE_DATA / f"{pair}-1m-futures.feather", folder / f"{pair}-5m-futures.feather", 5
        )
        assert rows == 24  # the 120 committed 1m bars from 00:00Z
        for kind in ("8h-funding_rate", "8h-mark"):
            shutil.copy(FIXTURE_DATA / f"{pair}-{kind}.feather", folder)
    return folder


def test_a_5m_only_freqtrade_folder_imports_and_runs_at_5m(tmp_path: Path) -> None:
    folder = freqtrade_5m_folder(tmp_path)
    imported = run_cli("data", "import", str(folder), "--store", "store", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert ", 0 skipped" in imported.stdout
    key = SeriesKey("binance", MarketType.PERP, "BTC/USDT:USDT")
    with DuckDBMarketStore(tmp_path / "store", read_only=True) as store:
        assert store.candle_range(key, "1m") is None
        assert store.candle_range(key, "5m") is not None

    env = {
        "PROMETHEUS_WARMUP_HOURS": "1",
        "PROMETHEUS_DRAIN_HOURS": "0.25",
        "PROMETHEUS_ANALYSIS_WINDOW_HOURS": "2",
    }
    done = run_cli("run", "--quiet", "--data", "store", "--var", "var", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resolution: 5m bars" in done.stdout
    run_dir = tmp_path / "var" / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["bar_timeframe"] == "5m"
    assert summary["run"]["start"].startswith("2025-05-21T01:00")
    assert summary["run"]["end"].startswith("2025-05-21T02:00")
    assert summary["users"] == 3
    assert summary["positions_closed"] == summary["positions_opened"]
    assert sum(summary["decisions"].values()) == 3 * summary["signals_published"]

    # the collector gathered the store's 5m bars (and made up no 1m ones) ...
    with DuckDBMarketStore(run_dir / "market", read_only=True) as market:
        assert market.candle_range(key, "1m") is None
        collected = market.candle_range(key, "5m")
    # the last bar that closed before the end (02:00) opened at 01:50
    assert collected == (_ms("2025-05-21T00:00Z"), _ms("2025-05-21T01:50Z"))
    # ... and the ranker judged both symbols on them as usable data every 5 minutes
    state = SqliteStateStore(run_dir / "state.sqlite")
    try:
        docs = state.query(Collections.RANKINGS)  # also holds housekeeping's liquid list
        rankings = sorted((d for d in docs if "ranked" in d), key=lambda d: d["as_of_ms"])
    finally:
        state.close()
    stamps = [r["created_at"][11:16] for r in rankings]
    assert stamps == [f"01:{m:02d}" for m in range(0, 45, 5)], stamps  # trading ends 01:45
    for ranking in rankings:
        assert ranking["excluded"] == [], ranking["excluded"]
        assert sorted(r["symbol"] for r in ranking["ranked"]) == ["BTC/USDT:USDT", "ETH/USDT:USDT"]

    # the backtest replays the same 5m bars and decides the same (docs/backtest.md)
    tested = run_cli(
        "backtest", "--quiet", "--data", "store", "--var", "var", cwd=tmp_path, env=env
    )
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "resolution: 5m bars" in tested.stdout
    backtest = json.loads((tmp_path / "var" / "backtest" / "summary.json").read_text())
    assert backtest["run"]["bar_timeframe"] == "5m"
    assert backtest["ledger_sha256"] == summary["ledger_sha256"]


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
