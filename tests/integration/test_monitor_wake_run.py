"""`run` skips the exit monitor's quiet cycles (app/monitor_wake.py) and decides exactly
what a cycle every 2 simulated seconds decides: same ledger bytes, same state documents
(the worker's heartbeat aside: it counts the cycles), same notifications.

The window is the backtest equivalence test's (the demo users open and close positions,
the breakers trip and the drawdown ladder acts).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prometheus_trader.app import pipeline
from prometheus_trader.app.settings import Settings

pytestmark = pytest.mark.integration

WINDOW = {"replay_end": datetime(2025, 5, 21, 10, 0, tzinfo=UTC), "drain_hours": 1.0}


def _run(var: Path) -> tuple[Settings, dict[str, Any]]:
    settings = Settings(var_dir=var, **WINDOW)  # type: ignore[arg-type]
    return settings, pipeline.run_pipeline(settings)


def _documents(settings: Settings) -> dict[tuple[str, str], Any]:
    with sqlite3.connect(settings.run_dir / "state.sqlite") as con:
        rows = con.execute("SELECT collection, id, data FROM documents").fetchall()
    return {(c, i): json.loads(d) for c, i, d in rows if c != "heartbeats"}


def test_skipping_quiet_cycles_changes_no_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skipping, summary = _run(tmp_path / "skipping")
    with monkeypatch.context() as m:  # the next cycle is always due at the next step
        m.setattr(pipeline, "next_wake_ms", lambda _s, _t, _c, now_ms, _u: now_ms + 1)
        every, every_summary = _run(tmp_path / "every")

    assert summary["positions_closed"] >= 5  # the window exercises the exits
    ledger = (skipping.run_dir / "ledger.json").read_bytes()
    assert ledger == (every.run_dir / "ledger.json").read_bytes()
    assert summary["ledger_sha256"] == every_summary["ledger_sha256"]
    docs, every_docs = _documents(skipping), _documents(every)
    assert sorted(docs) == sorted(every_docs)
    assert [k for k in docs if docs[k] != every_docs[k]] == []
    outbox = (skipping.run_dir / "outbox.jsonl").read_bytes()
    assert outbox == (every.run_dir / "outbox.jsonl").read_bytes()

    def cycles(settings: Settings) -> int:
        timings = json.loads((settings.run_dir / "timings.json").read_text())
        return int(timings["stages"]["monitor_cycle"]["calls"])

    assert cycles(skipping) * 2 < cycles(every)  # and it did skip
