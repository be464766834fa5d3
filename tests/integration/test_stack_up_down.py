"""`stack up` starts emulators, functions and the worker on loopback; `stack down` stops
every one of them (process groups), leaving nothing behind."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from tests.integration.test_emulators import live_group_members
from tests.support import run_cli

pytestmark = pytest.mark.integration


def test_stack_up_serves_functions_and_worker_and_down_stops_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    var = tmp_path / "var"
    up = run_cli("stack", "up", "--seed-demo", "--var", str(var), cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr[-3000:] + up.stdout[-2000:]
        info = json.loads((var / "stack" / "stack.json").read_text())
        # --seed-demo: the demo users in Firestore, the sample under the replay prefix
        assert "seeded 3 demo users" in up.stdout
        for name, value in info["env"].items():
            if name.endswith("_HOST"):
                monkeypatch.setenv(name, value)
        from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore
        from prometheus_trader.adapters.gcp.gcs_blob_store import GcsBlobStore

        state = FirestoreStateStore(project=info["project"])
        try:
            assert len(state.query("users")) == 3
        finally:
            state.close()
        assert GcsBlobStore("prometheus-local").list("replay/")
        assert info["env"]["PROMETHEUS_CLOCK_START"].startswith("2025-05-21T06:00")
        assert {"firestore", "pubsub", "storage", "worker", "function:executor"} <= set(
            info["process_groups"]
        )
        assert all(url.startswith("http://127.0.0.1:") for url in info["function_urls"].values())
        health = info["function_urls"]["api"] + "/api/v1/health"
        with urllib.request.urlopen(health, timeout=30) as response:
            assert response.status == 200
        again = run_cli("stack", "up", "--var", str(var), cwd=tmp_path)
        assert again.returncode == 2 and "already up" in again.stderr
    finally:
        down = run_cli("stack", "down", "--var", str(var), cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    for pgid in info["process_groups"].values():
        assert live_group_members(pgid) == [], pgid
    assert not (var / "stack" / "stack.json").exists()
