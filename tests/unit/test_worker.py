"""The exit-monitor worker: loop, graceful stop, health endpoint, SIGTERM in a real process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.emulators import free_port
from prometheus_trader.app.worker import WorkerStatus, health_server, run_worker
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.monitor import CycleReport, ExitMonitor, ReconcileReport
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.unit

START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)


@dataclass
class EmbeddedWorld:
    clock: SimulatedClock
    state: SqliteStateStore
    monitor: ExitMonitor


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EmbeddedWorld]:
    clock = SimulatedClock(START)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    state = SqliteStateStore()
    monitor = ExitMonitor(
        state, ReplayExchange(source, clock), InMemoryBus(), LocalBlobStore(tmp_path), clock
    )
    yield EmbeddedWorld(clock, state, monitor)
    state.close()
    source.close()


def heartbeat(state: SqliteStateStore) -> dict[str, object]:
    doc = state.get(Collections.HEARTBEATS, "exit-monitor")
    assert doc is not None
    return doc


def test_loop_cycles_until_stopped_and_heartbeats_advance(world: EmbeddedWorld) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def fake_sleep(seconds: float) -> bool:  # the simulated clock moves instead of waiting
        seen.append(int(heartbeat(world.state)["at_ms"]))  # type: ignore[call-overload]
        world.clock.advance(2.0)
        if len(seen) == 3:
            stop.set()  # what the SIGTERM handler does
        return stop.is_set()

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    worker_log = logging.getLogger("prometheus_trader.app.worker")
    worker_log.addHandler(handler)
    level = worker_log.level
    worker_log.setLevel(logging.INFO)
    try:
        status = run_worker(world, stop, 2.0, sleep=fake_sleep, heartbeat_log_seconds=3600)
    finally:
        worker_log.removeHandler(handler)
        worker_log.setLevel(level)

    # one heartbeat line for the first cycle, then none within the hour
    assert [r.getMessage() for r in records].count("worker heartbeat") == 1
    assert status.reconciled
    assert status.cycles == 3
    assert seen == [seen[0], seen[0] + 2000, seen[0] + 4000]
    assert heartbeat(world.state)["cycles"] == 3


def test_stop_from_another_thread_ends_the_loop(world: EmbeddedWorld) -> None:
    stop = threading.Event()
    status = WorkerStatus()
    loop = threading.Thread(target=run_worker, args=(world, stop, 0.01), kwargs={"status": status})
    loop.start()
    deadline = time.monotonic() + 30
    while status.cycles < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    loop.join(timeout=30)
    assert not loop.is_alive()
    assert status.cycles >= 3
    assert heartbeat(world.state)["cycles"] == status.cycles


@dataclass
class ScriptedMonitor:
    """Cycles that fail or ask to stop on given calls."""

    stop: threading.Event
    fail_on: set[int] = field(default_factory=set)
    stop_on: int = 99
    calls: list[str] = field(default_factory=list)

    def reconcile(self) -> ReconcileReport:
        self.calls.append("reconcile")
        return ReconcileReport()

    def cycle(self) -> CycleReport:
        n = sum(1 for c in self.calls if c.startswith("cycle")) + 1
        if n == self.stop_on:
            self.stop.set()  # SIGTERM arrives mid-cycle: the cycle still finishes
        self.calls.append(f"cycle{n}")
        if n in self.fail_on:
            raise ConnectionError("firestore unavailable")
        return CycleReport()


@dataclass
class Holder:
    monitor: ScriptedMonitor


def test_failed_cycle_is_survived_and_counted() -> None:
    stop = threading.Event()
    monitor = ScriptedMonitor(stop, fail_on={2}, stop_on=4)
    status = run_worker(Holder(monitor), stop, 0.0)
    assert monitor.calls == ["reconcile", "cycle1", "cycle2", "cycle3", "cycle4"]
    assert (status.cycles, status.failed_cycles) == (3, 1)


def test_signal_mid_cycle_finishes_that_cycle_and_starts_no_other() -> None:
    stop = threading.Event()
    monitor = ScriptedMonitor(stop, stop_on=2)
    status = run_worker(Holder(monitor), stop, 0.0)
    assert monitor.calls == ["reconcile", "cycle1", "cycle2"]
    assert status.cycles == 2


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_healthz_reports_heartbeat_and_goes_stale() -> None:
    status = WorkerStatus()
    status.beat(ok=True)
    server = health_server(status, 0, stale_after=3600)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        code, body = get_json(base + "/healthz")
        assert (code, body["status"], body["cycles"]) == (200, "ok", 1)
        assert 0 <= float(body["heartbeat_age_seconds"]) < 3600  # type: ignore[arg-type]
        assert get_json(base + "/nope")[0] == 404
        # a heartbeat far in the past (monotonic seconds): stale
        status.last_heartbeat = time.monotonic() - 7200
        code, body = get_json(base + "/healthz")
        assert (code, body["status"]) == (503, "stale")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_worker_process_exits_zero_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "PROMETHEUS_BACKEND": "embedded",
        "PROMETHEUS_VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MONITOR_INTERVAL_SECONDS": "0.05",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "prometheus_trader", "worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        body: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and int(body.get("cycles", 0)) < 3:  # type: ignore[call-overload]
            assert proc.poll() is None, proc.communicate()
            try:
                body = get_json(f"http://127.0.0.1:{port}/healthz")[1]
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert int(body["cycles"]) >= 3  # type: ignore[call-overload]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()
        assert b"monitor loop stopped" in err
        assert b'"message":"worker heartbeat"' in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class FlakyReconcile(ScriptedMonitor):
    """Reconciliation fails the first time (an order the exchange no longer knows...)."""

    def reconcile(self) -> ReconcileReport:
        self.calls.append("reconcile")
        if self.calls.count("reconcile") == 1:
            raise RuntimeError("order not found")
        return ReconcileReport()


def test_a_failing_reconciliation_never_stops_the_worker_and_is_retried() -> None:
    stop = threading.Event()
    monitor = FlakyReconcile(stop, stop_on=3)
    status = run_worker(Holder(monitor), stop, 0.0, reconcile_every=3600.0)
    assert monitor.calls == ["reconcile", "cycle1", "reconcile", "cycle2", "cycle3"]
    assert status.reconciled and status.cycles == 3


def test_reconciliation_runs_on_a_schedule() -> None:
    stop = threading.Event()
    monitor = ScriptedMonitor(stop, stop_on=3)
    run_worker(Holder(monitor), stop, 0.0, reconcile_every=0.0)
    assert monitor.calls == ["reconcile", "cycle1", "reconcile", "cycle2", "reconcile", "cycle3"]
