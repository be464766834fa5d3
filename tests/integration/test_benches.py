"""Smoke test of every benchmark in ``bench/``: each runs at a tiny size in its own process.

The benches are how the project measures speed, and nothing else runs them, so a refactor
can break one unnoticed (``bench/backtest_state_store.py`` failed at start for several
sessions). Each bench runs as documented (``python bench/<name>.py ...`` from the repository
root) on the bundled sample or the recorded fixtures, one after the other (never in
parallel: the figures are CPU seconds of a shared machine), writing its JSON into a
temporary directory (``PROMETHEUS_BENCH_RESULTS_DIR``). The test checks the exit code, that
the JSON parses, the bench's headline figures are there and positive, and every equality
the bench checks itself (same ledger, same decisions, identical ledgers, equal outcomes)
holds. The figures themselves are not compared with anything: the machine is shared.
jesse is left out by option (``--engines plain-loop,prometheus``), not skipped.
The suite runs with ``--dist loadfile``: this file's benches share one worker, in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "shared/prometheus_trader/sample/store"
# the pipeline and the backtest on the sample's first hours (2.5 simulated hours, with
# signals and positions), not the whole two days: Settings reads these from the environment
SHORT_WINDOW = {"PROMETHEUS_REPLAY_END": "2025-05-21T08:00:00Z", "PROMETHEUS_DRAIN_HOURS": "0.5"}
SHA256_HEX = 64


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _sha(value: Any) -> bool:
    return isinstance(value, str) and len(value) == SHA256_HEX and int(value, 16) >= 0


def check_decision(out: dict[str, Any]) -> None:
    assert out["users"] == 50
    assert _positive(out["us_per_decision_total"])
    assert _positive(out["decisions_per_cpu_second"])
    assert all(_positive(v) for v in out["us_per_decision_by_stage"].values())
    assert sum(out["outcomes"].values()) == 50
    assert _sha(out["records_sha256"])


def _fanout_row(row: dict[str, Any], users: int) -> None:
    assert row["users"] == users
    assert row["decisions"] == users
    assert _positive(row["decisions_per_cpu_second"])
    assert _positive(row["cpu_ms_per_decision"])


def check_fanout(out: dict[str, Any]) -> None:
    for row in (
        *out["runs"],
        *out["mixed_population"]["runs"],
        *out["memory_state_store"],
        out["per_user_path_same_run"],
    ):
        _fanout_row(row, 20)
    assert out["runs"][0]["outcomes"] == {"accepted": 20}
    mixed = out["mixed_population"]["runs"][0]["outcomes"]
    assert len(mixed) > 1, mixed  # the conservative users reject, the others accept
    parts = out["breakdown"]["cpu_ms_per_decision_by_part"]
    assert _positive(sum(parts.values()))
    assert _positive(out["cost_ratio_largest_to_smallest"])


def check_fanout_stages(out: dict[str, Any]) -> None:
    assert out["users"] == 20
    assert out["decisions"] == 20
    assert _positive(out["cpu_ms_per_decision"])
    parts = out["cpu_ms_per_decision_by_part"]
    assert "venue create_orders" in parts
    assert any(name.startswith("step ") for name in parts)
    assert _positive(sum(parts.values()))


def check_paper_venue(out: dict[str, Any]) -> None:
    assert len(out["runs"]) == 3  # one per ledger store
    for row in out["runs"]:
        assert row["accounts"] == 10
        assert row["identical"] is True
        for key in (
            "cpu_us_per_order_one_by_one",
            "cpu_us_per_order_batched",
            "cpu_us_per_balance_one_by_one",
            "cpu_us_per_monitor_cycle",
        ):
            assert _positive(row[key]), key


def check_pipeline(out: dict[str, Any]) -> None:
    assert out["simulated_minutes"] == 150
    for key in ("cpu_seconds", "loop_cpu_seconds", "simulated_minutes_per_cpu_second"):
        assert _positive(out[key]), key
    assert out["positions_opened"] > 0
    assert _sha(out["ledger_sha256"])
    assert {"collect", "rank", "monitor_cycle"} <= set(out["stages"])


def check_backtest(out: dict[str, Any]) -> None:
    engines = out["engines"]
    assert set(engines) == {"plain-loop", "prometheus"}
    for row in engines.values():
        assert "error" not in row, row
        assert _positive(row["candles"])
        assert _positive(row["candles_per_cpu_second"])
    prometheus = engines["prometheus"]
    assert prometheus["candles"] == engines["plain-loop"]["candles"]
    assert prometheus["trades"] > 0
    assert _sha(prometheus["ledger_sha256"])


def check_backtest_state_store(out: dict[str, Any]) -> None:
    assert [r["store"] for r in out["runs"]] == ["sqlite-memory", "memory"]
    assert out["same_ledger"] is True
    assert all(_positive(r["cpu_s"]) for r in out["runs"])
    assert set(out["replay_cpu_s_best"]) == {"sqlite-memory", "memory"}
    assert all(_positive(v) for v in out["replay_cpu_s_best"].values())
    assert out["trace_calls"]["transaction"] > 0


def check_exit_monitor(out: dict[str, Any]) -> None:
    ingestion = out["ingestion"]
    assert ingestion["same_decisions"] is True
    assert _positive(ingestion["worker_path_tick_columns"]["ticks_per_cpu_second"])
    assert _positive(ingestion["trade_objects_per_tick"]["ticks_per_cpu_second"])
    latency = out["latency"]
    assert _positive(latency["ticks"])
    assert _positive(latency["cpu_p50_us"])
    cycles = out["cycle"]
    assert [c["rules"].split(":")[0] for c in cycles] == ["quiet", "default"]
    for c in cycles:
        assert c["positions"] == 10
        assert c["symbols"] == 4
        assert _positive(c["steady_cpu_ms"])
    assert sum(r["closed"] for r in cycles[1]["cycles"]) > 0  # the default rules close


def check_exit_monitor_close_heavy(out: dict[str, Any]) -> None:
    runs = out["close_heavy"]
    assert [r["close_concurrency"] for r in runs] == [1, 2]
    for run in runs:
        assert run["positions"] == 10
        assert run["heaviest"]["closed"] > 0
        assert _positive(run["heaviest"]["cpu_ms"])


def check_close_latency(out: dict[str, Any]) -> None:
    assert out["outcomes_equal"] is True
    assert out["every_position_closed"] is True
    assert [r["concurrency"] for r in out["runs"]] == [1, 2]
    for run in out["runs"]:
        assert run["closes"] == run["positions"] == 1
        assert _positive(run["closes_per_s"])
        assert run["requests"] > 0


def check_ranking_features(out: dict[str, Any]) -> None:
    assert out["rankings"] == 6
    assert out["series"] > 1
    for key in ("cpu_ms_per_ranking", "ranking_at_us", "regime_at_and_veto_us"):
        assert _positive(out[key]), key


@dataclass(frozen=True)
class Bench:
    """One bench run: its script, arguments, extra environment and JSON file."""

    script: str
    args: str  # split on spaces
    results: str
    check: Callable[[dict[str, Any]], None]
    env: dict[str, str] = field(default_factory=dict)


BENCHES = {
    "decision": Bench("decision.py", "50", "decision.json", check_decision),
    "fanout": Bench("fanout.py", "20", "fanout.json", check_fanout),
    "fanout_stages": Bench("fanout_stages.py", "20", "fanout_stages.json", check_fanout_stages),
    "paper_venue": Bench("paper_venue.py", "10", "paper_venue.json", check_paper_venue),
    "pipeline": Bench("bench_pipeline.py", "", "pipeline.json", check_pipeline, SHORT_WINDOW),
    "backtest": Bench(
        "backtest.py",
        f"--store {SAMPLE} --engines plain-loop,prometheus",
        "backtest.json",
        check_backtest,
    ),
    "backtest_state_store": Bench(
        "backtest_state_store.py",
        "--rounds 1",
        "backtest_state_store.json",
        check_backtest_state_store,
        SHORT_WINDOW,
    ),
    "ranking_features": Bench(
        "ranking_features.py",
        f"--store {SAMPLE} --rankings 6 --days-in 1",
        "ranking_features.json",
        check_ranking_features,
    ),
    "exit_monitor": Bench(
        "exit_monitor.py",
        "--laps 1 --latency-laps 1 --positions 10 --stores sqlite --symbols 4",
        "exit_monitor.json",
        check_exit_monitor,
    ),
    "exit_monitor_close_heavy": Bench(
        "exit_monitor.py",
        "--close-heavy --positions 10 --stores sqlite --symbols 4"
        " --repeat 1 --close-concurrency 1 2",
        "exit_monitor_close_heavy.json",
        check_exit_monitor_close_heavy,
    ),
    "close_latency": Bench(
        "close_latency.py",
        # --rate-limit-ms with no latency: the throttled repeat is left out
        "--users 1 --per-user 1 --latency-ms 10 --concurrency 1 2 --rate-limit-ms",
        "close_latency.json",
        check_close_latency,
    ),
}


def test_every_bench_is_covered() -> None:
    """A new bench script needs a row here (bench_decision_compat is decision.py's helper)."""
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")} - {"bench_decision_compat.py"}
    assert scripts == {b.script for b in BENCHES.values()}


@pytest.mark.parametrize("name", list(BENCHES))
def test_bench_runs_and_writes_its_json(name: str, tmp_path: Path) -> None:
    bench = BENCHES[name]
    # the machine's PROMETHEUS_* settings stay out: the benches run on the sample only
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    env.update(bench.env, PROMETHEUS_BENCH_RESULTS_DIR=str(tmp_path / "results"))
    proc = subprocess.run(
        [sys.executable, f"bench/{bench.script}", *bench.args.split()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert written == [bench.results]
    bench.check(json.loads((tmp_path / "results" / bench.results).read_text()))
