"""The embedded run: the whole pipeline over recorded data on a simulated clock.

One process plays every box of SPEC §1: the scheduler (collector every minute, ranker
every few minutes, reporter at 00:00 UTC), the in-process bus (dispatcher, executors,
evaluator, notifier) and the exit-monitor worker (every 2 simulated seconds while a
position is open). Same input, same output: the run is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.demo import DEMO_USERS
from prometheus_trader.app.ledger import LEDGER_POSITION_FIELDS, build_ledger, canonical_json
from prometheus_trader.app.logging import configure_logging
from prometheus_trader.app.monitor_wake import next_cycle_ms, next_wake_ms
from prometheus_trader.app.run_folder import fresh_run_folder, relocate
from prometheus_trader.app.run_window import (
    REPLAY_TIMEFRAMES,
    DataRangeError,
    _iso,
    data_window,
    replay_timeframe,
    replay_window,
)
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.summary import performance_summary
from prometheus_trader.app.wiring import (
    Adapters,
    Runtime,
    exit_config,
    paper_fills,
    replay_exchange,
    run_outbox_and_secrets,
    synthesis_policy,
    wire_adapters,
)
from prometheus_trader.domain.market import MINUTE_MS
from prometheus_trader.domain.trading import ExitReason
from prometheus_trader.domain.users import User
from prometheus_trader.usecases.names import Collections

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def build_runtime(settings: Settings, start_ms: int, run_dir: Path) -> Runtime:
    """The embedded runtime: DuckDB, SQLite, the in-process bus, local folders."""
    clock = SimulatedClock(datetime.fromtimestamp(start_ms / 1000, UTC))
    source = DuckDBMarketStore(settings.data_dir, read_only=True)
    market = DuckDBMarketStore(run_dir / "market")
    state = SqliteStateStore(run_dir / "state.sqlite")
    exchange = replay_exchange(settings, source, clock, state)
    bus = InMemoryBus(max_delivery_attempts=settings.max_delivery_attempts)
    blobs = LocalBlobStore(run_dir / "blobs")
    notifier, secrets = run_outbox_and_secrets(settings, run_dir)
    adapters = Adapters(
        clock=clock,
        source=source,
        exchange=exchange,
        market=market,
        state=state,
        bus=bus,
        blobs=blobs,
        notifier=notifier,
        secrets=secrets,
    )
    usecases = wire_adapters(settings, adapters)
    for (topic, subscription), handler in usecases.handlers().items():
        bus.subscribe(topic, subscription, handler)
    return Runtime(
        settings=settings,
        adapters=adapters,
        usecases=usecases,
        settle=bus.drain_all,
        dead_letters=lambda: len(bus.dead_letters),
        locate=lambda key: str(blobs.path_for(key)),
        closers=[source.close, state.close, market.close],
    )


def seed_users(rt: Runtime, users: tuple[User, ...] = DEMO_USERS) -> None:
    """Create the demo users (create-if-absent)."""
    for user in users:
        rt.state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))


def run_pipeline(
    settings: Settings,
    progress: Progress | None = None,
    runtime_factory: Callable[[Settings, int, Path], Runtime] = build_runtime,
    run_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline; write ``<var>/run/summary.json`` and return the summary.

    The run writes into a fresh folder that replaces ``<var>/run`` only when it completes
    (a failed run leaves the previous results as they were); a second run on the same
    ``<var>`` is refused while this one holds it (``RunFolderBusy``).
    """
    with fresh_run_folder(settings.run_dir) as staging:
        try:
            summary = _run_into(settings, staging, progress, runtime_factory)
        except BaseException:
            log.exception("run failed; the previous results in %s are unchanged", settings.run_dir)
            raise
        summary = dict(relocate(summary, staging, settings.run_dir))
        summary["run"].update(run_fields or {})
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _run_into(
    settings: Settings,
    run_dir: Path,
    progress: Progress | None,
    runtime_factory: Callable[[Settings, int, Path], Runtime],
) -> dict[str, Any]:
    configure_logging(settings.log_level, file=settings.log_file or run_dir / "log.jsonl")
    with DuckDBMarketStore(settings.data_dir, read_only=True) as probe:
        bars = replay_timeframe(probe, settings)
        first_ms, data_end_ms = data_window(probe, settings, bars)
    if bars != "1m":  # a coarse-only store runs at its own resolution (docs/data.md)
        log.warning("coarse resolution: the run replays %s bars of %s", bars, settings.data_dir)
    settings = settings.model_copy(update={"bar_timeframe": bars})
    start_ms, trade_until_ms, data_end_ms = replay_window(settings, first_ms, data_end_ms)
    rt = runtime_factory(settings, start_ms, run_dir)
    try:
        seed_users(rt)
        timer = StageTimer()
        began, began_cpu = time.perf_counter(), time.process_time()
        _replay(rt, start_ms, trade_until_ms, data_end_ms, progress, timer)
        summary = _summarize(rt, run_dir, start_ms, data_end_ms)
        timings = {
            "total_seconds": round(time.perf_counter() - began, 3),
            "total_cpu_seconds": round(time.process_time() - began_cpu, 3),
            "simulated_minutes": (data_end_ms - start_ms) // MINUTE_MS,
            "stages": timer.as_dict(),
        }
        (run_dir / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    finally:
        rt.close()
    return summary


class StageTimer:
    """Wall-clock and CPU seconds and calls per stage (written to timings.json, never
    hashed). On a shared machine the CPU seconds are the comparable figure."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one call of ``name``."""
        began, began_cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - began_cpu
            self.calls[name] = self.calls.get(name, 0) + 1

    def as_dict(self) -> dict[str, dict[str, float]]:
        """{stage: {seconds, cpu_seconds, calls, ms_per_call}} sorted by stage."""
        return {
            name: {
                "seconds": round(self.seconds[name], 3),
                "cpu_seconds": round(self.cpu[name], 3),
                "calls": self.calls[name],
                "ms_per_call": round(self.seconds[name] / self.calls[name] * 1000, 3),
            }
            for name in sorted(self.seconds)
        }


def _replay(
    rt: Runtime,
    start_ms: int,
    trade_until_ms: int,
    end_ms: int,
    progress: Progress | None,
    timer: StageTimer,
) -> None:
    s = rt.settings
    monitor_step = int(s.monitor_interval_seconds * 1000)
    exits = exit_config(s)
    total = (end_ms - start_ms) // MINUTE_MS
    rt.usecases.monitor.reconcile()
    day = _day(start_ms)
    t = start_ms
    while t < end_ms:
        rt.clock.set_ms(t)
        minute = t // MINUTE_MS
        if _day(t) != day:  # reporter at 00:00 UTC for the day that ended
            with timer.stage("report"):
                rt.usecases.reporter.run(datetime.fromtimestamp(day * 86_400, UTC).date())
                rt.settle()
            day = _day(t)
        if minute % s.collect_interval_minutes == 0:
            with timer.stage("collect"):
                rt.usecases.collector.run()
        with timer.stage("housekeeping"):
            rt.usecases.housekeeping.run()
        if t < trade_until_ms and minute % s.rank_interval_minutes == 0:
            with timer.stage("rank"):
                rt.usecases.ranker.run()
            with timer.stage("dispatch+execute"):
                rt.settle()
        # the worker: a cycle every monitor step while positions are open, minus the
        # steps that cannot decide anything new (app/monitor_wake.py)
        step = t
        while step < t + MINUTE_MS:
            rt.clock.set_ms(step)
            with timer.stage("monitor_cycle"):
                report = rt.usecases.monitor.cycle()
            with timer.stage("evaluate+notify"):
                rt.settle()
            if report.positions == 0 or report.positions == len(report.closed):
                break
            if report.closed or report.failed:
                step += monitor_step
                continue
            with timer.stage("monitor_wake"):
                wake = next_wake_ms(rt.state, rt.exchange, exits, step, t + MINUTE_MS)
            step = next_cycle_ms(step, wake, monitor_step, t)
            rt.usecases.monitor.skipped_until(step - monitor_step)
        t += MINUTE_MS
        if progress is not None:
            progress((t - start_ms) // MINUTE_MS, total, f"replay {_iso(t)[:16]}Z")
    rt.clock.set_ms(max(end_ms, rt.clock.now_ms()))
    rt.usecases.monitor.close_all(ExitReason.END_OF_DATA, {"end_ms": end_ms})
    rt.settle()
    rt.usecases.reporter.run(datetime.fromtimestamp(day * 86_400, UTC).date())
    rt.settle()
    rt.adapters.market.flush()


def _summarize(rt: Runtime, run_dir: Path, start_ms: int, end_ms: int) -> dict[str, Any]:
    state = rt.state
    signals = state.query(Collections.SIGNALS)
    executions = state.query(Collections.EXECUTIONS)
    positions = state.query(Collections.POSITIONS)
    users = state.query(Collections.USERS)
    outcomes: dict[str, dict[str, str]] = {}
    for e in executions:
        outcomes.setdefault(e["signal_id"], {})[e["user_id"]] = e.get("outcome") or "incomplete"
    ledger = build_ledger(rt)
    ledger_bytes = canonical_json(ledger)
    (run_dir / "ledger.json").write_bytes(ledger_bytes)
    blobs = rt.adapters.blobs
    reports = sorted(rt.locate(k) for k in blobs.list("reports/"))
    return {
        "run": {
            "data_dir": str(rt.settings.data_dir),
            "start": _iso(start_ms),
            "end": _iso(end_ms),
            "synthesizer": rt.settings.synthesizer,
            # the bars replayed: 1m, or a coarse-only store's own (exits see that bar's path)
            "bar_timeframe": rt.settings.bar_timeframe or "1m",
        },
        "signals_published": len(signals),
        "users": len(users),
        "decisions": dict(
            sorted(Counter(e.get("outcome") or "incomplete" for e in executions).items())
        ),
        "signals_with_divergent_decisions": sum(
            1 for per_user in outcomes.values() if len(set(per_user.values())) > 1
        ),
        "orders": len(ledger["orders"]),
        "positions_opened": len(positions),
        "positions_closed": sum(1 for p in positions if p["status"] == "closed"),
        "closed_by_reason": dict(
            sorted(Counter(p["exit_reason"] for p in positions if p.get("exit_reason")).items())
        ),
        "dead_letters": rt.dead_letters(),
        "ledger_sha256": hashlib.sha256(ledger_bytes).hexdigest(),
        "ledger_path": str(run_dir / "ledger.json"),
        "reports": reports,
        "audit_log": sorted(rt.locate(k) for k in blobs.list("audit/")),
        # PnL, fees, win rate, drawdown per user; breakers; rejections explained (i13)
        **performance_summary(
            state, rt.adapters.market, rt.settings, ledger=ledger, run_dir=run_dir
        ),
    }


def _day(ms: int) -> int:
    return ms // 86_400_000


# DataRangeError, LEDGER_POSITION_FIELDS, REPLAY_TIMEFRAMES, canonical_json, paper_fills,
# replay_window and synthesis_policy: re-exported for app/backtest/runner.py
__all__ = [
    "LEDGER_POSITION_FIELDS",
    "REPLAY_TIMEFRAMES",
    "DataRangeError",
    "Progress",
    "build_runtime",
    "canonical_json",
    "paper_fills",
    "replay_window",
    "run_pipeline",
    "seed_users",
    "synthesis_policy",
]
