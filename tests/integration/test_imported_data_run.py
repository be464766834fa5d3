"""`data import` then `run --data`: the pipeline over an imported store is deterministic.

Uses the real excerpts committed in ``tests/fixtures/data`` (two hours of BTC and ETH,
so a shorter warm-up); the tests read nothing outside the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support import FIXTURE_DATA, run_cli

pytestmark = pytest.mark.integration


def _source() -> tuple[list[str], list[str], dict[str, str]]:
    """(import args, run args, env) for the committed excerpts."""
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
