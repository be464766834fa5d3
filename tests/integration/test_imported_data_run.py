"""`data import` then `run --data`: the pipeline over an imported store is deterministic.

Uses the provided recorded data (``../shared/data/binance-usdm-2025-05``, one day that
is not in the bundled sample) when it is beside the repo; otherwise the real excerpts in
``tests/fixtures/data`` (a few hours, so a shorter warm-up).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support import FIXTURE_DATA, SHARED_DATA, run_cli

pytestmark = pytest.mark.integration

USDM = SHARED_DATA / "binance-usdm-2025-05"


def _source() -> tuple[list[str], list[str], dict[str, str]]:
    """(import args, run args, env) for the data available on this machine."""
    if USDM.is_dir():
        window = ["--start", "2025-05-25T00:00Z", "--end", "2025-05-26T00:00Z"]
        return [str(USDM), *window], [], {}
    feathers = sorted(str(p) for p in FIXTURE_DATA.glob("*USDT_USDT-*.feather"))
    env = {"PROMETHEUS_WARMUP_HOURS": "1", "PROMETHEUS_DRAIN_HOURS": "0.5"}
    return feathers, [], env


def test_run_on_imported_data_is_deterministic(tmp_path: Path) -> None:
    import_args, run_args, env = _source()
    store = tmp_path / "store"
    imported = run_cli("data", "import", *import_args, "--store", str(store), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert list(store.rglob("*.parquet")), "the import wrote no Parquet partition"
    again = run_cli("data", "import", *import_args, "--store", str(store), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 new rows" in again.stdout, "re-importing the same files must add nothing"

    hashes = []
    for n in (1, 2):
        var = tmp_path / f"var{n}"
        done = run_cli(
            "run",
            "--quiet",
            "--data",
            str(store),
            "--var",
            str(var),
            *run_args,
            cwd=tmp_path,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        summary = json.loads((var / "run" / "summary.json").read_text())
        assert summary["users"] == 3
        assert summary["positions_closed"] == summary["positions_opened"]
        hashes.append(summary["ledger_sha256"])
    assert hashes[0] == hashes[1]


def test_import_of_an_unreadable_file_says_which_and_why(tmp_path: Path) -> None:
    bad = tmp_path / "BTC_USDT_USDT-1m-futures.feather"
    bad.write_bytes(b"this is not a feather file")
    done = run_cli("data", "import", str(bad), "--store", str(tmp_path / "s"), cwd=tmp_path)
    assert done.returncode == 2
    assert bad.name in done.stderr
    assert "Traceback" not in done.stderr
