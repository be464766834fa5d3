"""`backtest` and `run` decide the same: same decisions, orders, fills and closed trades.

Both replay the bundled sample over the same window (the first hours, where the demo users
open and close positions and the breakers start rejecting); the ledgers are compared
section by section and row by row, so a difference names its field. A second backtest
must write byte-identical results (reports included).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prometheus_trader.app.backtest.runner import run_backtest
from prometheus_trader.app.pipeline import run_pipeline
from prometheus_trader.app.settings import Settings

pytestmark = pytest.mark.integration

WINDOW = {
    "replay_end": datetime(2025, 5, 21, 10, 0, tzinfo=UTC),
    "drain_hours": 1.0,
}


def _settings(var: Path) -> Settings:
    return Settings(var_dir=var, **WINDOW)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    pipe = _settings(tmp_path_factory.mktemp("run"))
    run_pipeline(pipe)
    back = _settings(tmp_path_factory.mktemp("backtest"))
    run_backtest(back)
    return (
        json.loads((pipe.run_dir / "ledger.json").read_text()),
        json.loads((back.var_dir / "backtest" / "ledger.json").read_text()),
    )


def test_the_window_exercises_the_strategy(ledgers: tuple[dict[str, Any], dict[str, Any]]) -> None:
    pipeline, _ = ledgers
    outcomes = {d["outcome"] for d in pipeline["decisions"]}
    assert {"accepted", "rejected"} <= outcomes
    closed = [p for p in pipeline["positions"] if p["status"] == "closed"]
    assert len(closed) >= 5 and len(pipeline["fills"]) >= 2 * len(closed)


@pytest.mark.parametrize("section", ["decisions", "orders", "fills", "positions"])
def test_same_rows_field_by_field(
    ledgers: tuple[dict[str, Any], dict[str, Any]], section: str
) -> None:
    pipeline, backtest = ledgers
    assert len(backtest[section]) == len(pipeline[section]), section
    for i, (want, got) in enumerate(zip(pipeline[section], backtest[section], strict=True)):
        assert got.keys() == want.keys(), f"{section}[{i}] fields"
        for name in want:
            assert got[name] == want[name], f"{section}[{i}].{name}: {got[name]} != {want[name]}"


def test_reruns_are_byte_identical(tmp_path: Path) -> None:
    outputs = []
    for n in (1, 2):
        settings = _settings(tmp_path / str(n))
        run_backtest(settings)
        root = settings.var_dir / "backtest"
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "timings.json")
        assert any(p.suffix == ".html" for p in files) and any(p.suffix == ".csv" for p in files)
        outputs.append({str(p.relative_to(root)): p.read_bytes() for p in files})
    assert outputs[0] == outputs[1]
