"""Every store that imports also runs: `data import` then `run --data` through the CLI on
stores that hold trades only (Binance aggTrades zips, raw websocket recordings of USD-M and
spot, a Tardis CSV). The import builds 1m candles (with taker-buy volume) from the trades;
short windows keep each run to a few seconds. Excerpts: tests/fixtures/data/runs/."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tests.support import FIXTURE_DATA, run_cli

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.domain.market import MarketType
from prometheus_trader.ports import SeriesKey

pytestmark = pytest.mark.integration

RUNS = FIXTURE_DATA / "runs"

CASES = {
    "aggtrades-usdm": (
        "futures-APEUSDT-aggTrades-2024-10-18.zip",
        "perp",
        "APE/USDT:USDT",
        ("2024-10-18T00:03Z", "2024-10-18T00:06Z"),
    ),
    "aggtrades-spot": (
        "spot-PEPEUSDT-aggTrades-2024-10-27.zip",
        "spot",
        "PEPE/USDT",
        ("2024-10-27T00:03Z", "2024-10-27T00:06Z"),
    ),
    "websocket-usdm": (
        "ethusdt_20240808.gz",
        "perp",
        "ETH/USDT:USDT",
        ("2024-08-08T23:55Z", "2024-08-08T23:56Z"),
    ),
    "websocket-spot": (
        "spot_ethusdt_20240808.gz",
        "spot",
        "ETH/USDT",
        ("2024-08-08T23:55Z", "2024-08-08T23:56Z"),
    ),
    "tardis": (
        "tardis_trades.csv",
        "perp",
        "BTC/USDT:USDT",
        ("2020-02-22T00:03Z", "2020-02-22T00:06Z"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_trades_only_store_imports_and_runs(case: str, tmp_path: Path) -> None:
    name, market, symbol, (start, end) = CASES[case]
    imported = run_cli("data", "import", str(RUNS / name), "--store", "store", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert "new 1m candles from the trades" in imported.stdout
    assert ", 0 skipped" in imported.stdout
    assert "unreadable" not in imported.stderr

    with DuckDBMarketStore(tmp_path / "store", read_only=True) as store:
        key = SeriesKey("binance", MarketType(market), symbol)
        assert store.series_keys() == [key]
        bars = store.candles(key, "1m", 0, 2**62)
        trades = store.trades(key, 0, 2**62)
    assert len(bars) >= 2
    assert all(math.isfinite(v) for v in bars.taker_buy_volume)
    buys = sum(t.amount for t in trades if t.side.value == "buy")
    assert math.isclose(float(sum(bars.taker_buy_volume)), buys, rel_tol=1e-9)
    first = min(trades, key=lambda t: (t.ts_ms, int(t.trade_id)))
    assert float(bars.open[0]) == first.price

    env = {"PROMETHEUS_MARKET_TYPE": market, "PROMETHEUS_DRAIN_HOURS": "0.02"}
    done = run_cli(
        "run", "--quiet", "--data", "store", "--var", "var", "--start", start, "--end", end,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "var" / "run" / "summary.json").read_text())
    assert summary["users"] == 3
    assert summary["run"]["start"].startswith(start.replace("Z", ""))
    assert summary["positions_closed"] == summary["positions_opened"]
