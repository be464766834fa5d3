"""The always-on exit-monitor worker (a Cloud Run service with min instances = 1).

The main thread runs the monitor loop: ``ExitMonitor.reconcile()`` at start and every
``reconcile_interval_seconds`` (retried every cycle while it fails: a worker with open
positions must start even when one of them cannot be reconciled), and ``cycle()`` every
``monitor_interval_seconds``. A daemon thread serves ``GET /healthz`` on ``$PORT``
(200 with the last heartbeat's age, 503 once it is older than
``worker_stale_after_seconds``: Cloud Run's liveness probe then restarts the instance).
SIGTERM (Cloud Run's stop signal) lets the current cycle finish, stops the loop, shuts
the HTTP server down and exits 0.

A failing cycle is logged and the loop goes on (a Firestore hiccup must not kill the
worker); if cycles keep failing the heartbeat goes stale and the health check says so.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Protocol

from prometheus_trader.usecases.monitor import CycleReport, ReconcileReport
from prometheus_trader.usecases.names import labels

log = logging.getLogger(__name__)
HEARTBEAT_MESSAGE = "worker heartbeat"  # terraform var.heartbeat_log_message
HEARTBEAT_LOG_SECONDS = 60.0  # one line a minute, not one per 2-second cycle


class Monitor(Protocol):
    """The part of ``ExitMonitor`` the worker drives."""

    def reconcile(self) -> ReconcileReport: ...

    def cycle(self) -> CycleReport: ...


class HasMonitor(Protocol):
    """A runtime with an exit monitor (``CloudRuntime``, or a test double)."""

    @property
    def monitor(self) -> Monitor: ...


@dataclass
class WorkerStatus:
    """Loop progress, shared with the health endpoint (monotonic seconds)."""

    started: float = field(default_factory=time.monotonic)
    last_heartbeat: float | None = None
    cycles: int = 0
    failed_cycles: int = 0
    reconciled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self, ok: bool) -> None:
        """Record one finished cycle."""
        with self._lock:
            if ok:
                self.cycles += 1
                self.last_heartbeat = time.monotonic()
            else:
                self.failed_cycles += 1

    def snapshot(self, stale_after: float) -> tuple[bool, dict[str, Any]]:
        """(healthy, JSON body) for ``/healthz``."""
        with self._lock:
            now = time.monotonic()
            # before the first cycle, count from start-up: a worker that never beats goes stale
            since = self.last_heartbeat if self.last_heartbeat is not None else self.started
            age = now - since
            body = {
                "heartbeat_age_seconds": round(age, 3),
                "cycles": self.cycles,
                "failed_cycles": self.failed_cycles,
                "reconciled": self.reconciled,
            }
        healthy = age <= stale_after
        return healthy, {"status": "ok" if healthy else "stale", **body}


def run_worker(
    runtime: HasMonitor,
    stop: threading.Event,
    interval: float,
    *,
    status: WorkerStatus | None = None,
    sleep: Callable[[float], bool] | None = None,
    heartbeat_log_seconds: float = HEARTBEAT_LOG_SECONDS,
    reconcile_every: float | None = None,
) -> WorkerStatus:
    """Reconcile, then cycle every ``interval`` seconds until ``stop`` is set.

    The cycle in progress when ``stop`` is set runs to its end. ``sleep`` waits up to the
    given seconds and returns True if the loop must stop (default: ``stop.wait``). A
    ``worker heartbeat`` log line goes out at most every ``heartbeat_log_seconds`` (the
    log-based alert of terraform/monitoring.tf watches for it).
    """
    last_logged: float | None = None
    status = status or WorkerStatus()
    wait = sleep or stop.wait
    monitor = runtime.monitor
    next_reconcile: float | None = time.monotonic()
    while not stop.is_set():
        began = time.monotonic()
        if next_reconcile is not None and began >= next_reconcile:
            next_reconcile = _reconcile(monitor, status, began, reconcile_every)
        try:
            cycle = monitor.cycle()
        except Exception:  # keep monitoring: the stale heartbeat reports persistent failure
            status.beat(ok=False)
            log.exception("monitor cycle failed", extra=labels(stage="worker"))
        else:
            status.beat(ok=True)
            now = time.monotonic()
            if last_logged is None or now - last_logged >= heartbeat_log_seconds:
                last_logged = now
                log.info(
                    HEARTBEAT_MESSAGE,
                    extra={
                        **labels(stage="worker"),
                        "json_fields": {
                            "cycles": status.cycles,
                            "failed_cycles": status.failed_cycles,
                            "open_positions": cycle.positions,
                        },
                    },
                )
            if cycle.closed:
                log.info("closed %d positions", len(cycle.closed), extra=labels(stage="worker"))
        if wait(max(0.0, interval - (time.monotonic() - began))):
            break
    log.info("monitor loop stopped after %d cycles", status.cycles, extra=labels(stage="worker"))
    return status


def _reconcile(
    monitor: Monitor, status: WorkerStatus, now: float, every: float | None
) -> float | None:
    """Run one reconciliation; returns when the next is due (None: never again)."""
    try:
        report = monitor.reconcile()
    except Exception:  # never a crash loop: monitor what we can, retry next cycle
        log.exception("reconciliation failed; retrying next cycle", extra=labels(stage="worker"))
        return now
    status.reconciled = True
    log.info(
        "reconciled %d open positions (%d closed while away, %d missing on exchange, "
        "%d untracked, %d errors)",
        report.checked,
        len(report.closed_while_away),
        len(report.unknown_on_exchange),
        len(report.untracked),
        len(report.errors),
        extra=labels(stage="worker"),
    )
    return None if every is None else now + every


def health_server(status: WorkerStatus, port: int, stale_after: float) -> ThreadingHTTPServer:
    """An HTTP server answering ``GET /healthz`` (not started)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/healthz", "/"):
                self._reply(404, {"error": "not found"})
                return
            healthy, body = status.snapshot(stale_after)
            self._reply(200 if healthy else 503, body)

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, sort_keys=True).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds: no access log

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # Cloud Run needs all interfaces
    server.daemon_threads = True
    return server


def serve(
    runtime: HasMonitor,
    *,
    interval: float,
    port: int,
    stale_after: float,
    reconcile_every: float | None = None,
) -> int:
    """Run the worker service until SIGTERM/SIGINT; returns the exit code (0)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info(
            "signal %d: stopping after the current cycle", signum, extra=labels(stage="worker")
        )
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = WorkerStatus()
    server = health_server(status, port, stale_after)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="healthz", daemon=True)
    thread.start()
    log.info("worker listening on :%d", server.server_port, extra=labels(stage="worker"))
    try:
        run_worker(runtime, stop, interval, status=status, reconcile_every=reconcile_every)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return 0


def main() -> int:
    """Entry point of ``prometheus-trader worker``: settings from the environment."""
    from prometheus_trader.app.cloud import get_runtime
    from prometheus_trader.app.logging import configure_logging

    runtime = get_runtime()
    settings = runtime.settings
    configure_logging(settings.log_level)
    port = int(os.environ.get("PORT", settings.worker_port))
    try:
        return serve(
            runtime,
            interval=settings.monitor_interval_seconds,
            port=port,
            stale_after=settings.worker_stale_after_seconds,
            reconcile_every=settings.reconcile_interval_seconds,
        )
    finally:
        runtime.close()


__all__ = ["HasMonitor", "WorkerStatus", "health_server", "main", "run_worker", "serve"]
