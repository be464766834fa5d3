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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.console_notifier import ConsoleNotifier
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.encrypted_secret_store import EncryptedFileSecretStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.demo import DEMO_USERS
from prometheus_trader.app.logging import configure_logging
from prometheus_trader.app.monitor_wake import next_cycle_ms, next_wake_ms
from prometheus_trader.app.run_folder import fresh_run_folder, relocate
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.summary import performance_summary
from prometheus_trader.domain.analysts import default_panel
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.market import MINUTE_MS, TIMEFRAME_MS
from prometheus_trader.domain.synthesizer import (
    SignalParams,
    SynthesisPolicy,
    policy_from_name,
)
from prometheus_trader.domain.trading import ExitReason
from prometheus_trader.domain.users import User
from prometheus_trader.ports import (
    BlobStore,
    Bus,
    BusMessage,
    Clock,
    Exchange,
    MarketStore,
    Notifier,
    SecretStore,
    StateStore,
    TickSource,
)
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.dispatch import DispatchSignal
from prometheus_trader.usecases.evaluate import EvaluateClosedPosition
from prometheus_trader.usecases.execute_batch import ExecuteSignalBatch
from prometheus_trader.usecases.execution_steps import ExecutorConfig
from prometheus_trader.usecases.housekeeping import Housekeeping, TopLiquidConfig
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Subscriptions, Topics
from prometheus_trader.usecases.notify import NotifyEvent
from prometheus_trader.usecases.rank import RankAndPublishSignals, RankerConfig
from prometheus_trader.usecases.report import DailyReporter

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


class DataRangeError(ValueError):
    """The market store has no usable data for the requested run."""


@dataclass
class Adapters:
    """The adapters one run uses (embedded, or the cloud ones against emulators)."""

    clock: SimulatedClock
    source: MarketStore
    exchange: ReplayExchange
    market: MarketStore
    state: StateStore
    bus: Bus
    blobs: BlobStore
    notifier: Notifier
    secrets: SecretStore


@dataclass
class Runtime:
    """Every adapter and use-case of one run, wired together.

    ``settle`` returns once everything published so far has been handled.
    """

    settings: Settings
    adapters: Adapters
    usecases: UseCases
    settle: Callable[[], None]
    dead_letters: Callable[[], int]
    locate: Callable[[str], str]
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def clock(self) -> SimulatedClock:
        """The simulated clock."""
        return self.adapters.clock

    @property
    def state(self) -> StateStore:
        """The state store."""
        return self.adapters.state

    @property
    def exchange(self) -> ReplayExchange:
        """The replay exchange."""
        return self.adapters.exchange

    def close(self) -> None:
        """Release everything (last opened, first closed)."""
        for closer in reversed(self.closers):
            closer()


def data_window(
    store: DuckDBMarketStore, settings: Settings, timeframe: str = "1m"
) -> tuple[int, int]:
    """(first, end) ms of the ``timeframe`` data shared by the configured exchange's
    symbols."""
    ranges = [
        r
        for k in store.series_keys()
        if k.exchange == settings.exchange and k.market_type == settings.market_type
        if (r := store.candle_range(k, timeframe)) is not None
    ]
    if not ranges:
        raise DataRangeError(_no_1m_candles(store, settings, timeframe))
    first = max(r[0] for r in ranges)
    last = min(r[1] for r in ranges)
    if last <= first:
        raise DataRangeError(f"the symbols in {store.root} share no common time range")
    return first, last + TIMEFRAME_MS[timeframe]


# the timeframes a run can replay, finest first (a store of only coarser bars cannot run)
REPLAY_TIMEFRAMES = ("1m", "3m", "5m", "15m", "1h")


def replay_timeframe(store: DuckDBMarketStore, settings: Settings) -> str:
    """The bars a run replays: ``settings.bar_timeframe`` if set, else the finest timeframe
    every symbol of the configured market holds, else the finest any of them holds (those
    without it sit the run out). 1m whenever every symbol has 1m candles."""
    if settings.bar_timeframe is not None:
        return settings.bar_timeframe
    keys = [
        k
        for k in store.series_keys()
        if k.exchange == settings.exchange and k.market_type == settings.market_type
    ]
    held = [{tf for tf in REPLAY_TIMEFRAMES if store.candle_range(k, tf) is not None} for k in keys]
    for tf in REPLAY_TIMEFRAMES:
        if held and all(tf in h for h in held):
            return tf
    for tf in REPLAY_TIMEFRAMES:
        if any(tf in h for h in held):
            return tf
    return "1m"  # nothing to replay: ``data_window`` says why


def _no_1m_candles(store: DuckDBMarketStore, settings: Settings, timeframe: str = "1m") -> str:
    """Why a store cannot be replayed, and what to do, in one line."""
    wanted = f"{settings.exchange}/{settings.market_type}"
    keys = store.series_keys()
    if not keys:
        return (
            f"no 1m candles in {store.root} (it holds no data): import recorded data with "
            "`prometheus-trader data import <files or folders> --store <folder>`"
        )
    markets = sorted({f"{k.exchange}/{k.market_type}" for k in keys})
    if wanted not in markets:
        return (
            f"{store.root} holds {', '.join(markets)} data, not {wanted}: set "
            "PROMETHEUS_EXCHANGE / PROMETHEUS_MARKET_TYPE to match it"
        )
    coarse = sorted(
        {tf for k in keys for tf in TIMEFRAME_MS if store.candle_range(k, tf) is not None},
        key=TIMEFRAME_MS.__getitem__,
    )
    if any(tf in REPLAY_TIMEFRAMES for tf in coarse):  # so a forced timeframe is missing
        return (
            f"{store.root} holds {'/'.join(coarse)} candles for {wanted}, not {timeframe}: "
            "unset PROMETHEUS_BAR_TIMEFRAME or set it to one of those"
        )
    return (
        f"{store.root} holds {'/'.join(coarse) or 'no'} candles for {wanted}, none of "
        f"{'/'.join(REPLAY_TIMEFRAMES)}: a run replays one of those (see docs/data.md)"
    )


def replay_exchange(
    settings: Settings, source: MarketStore, clock: SimulatedClock, ledger: StateStore
) -> ReplayExchange:
    """The replay exchange over recorded data with the configured paper fills; the paper
    accounts persist in ``ledger`` (the run's state store). One process writes them (the
    run's, or ``stack run``'s in-process functions), so reads trust the exchange's cache."""
    return ReplayExchange(
        source, clock, ledger=ledger, ledger_exclusive=True, **paper_fills(settings)
    )


def paper_fills(settings: Settings) -> dict[str, Any]:
    """The paper exchange's settings (venue, fees, slippage, latency, balance, bars): one
    place for the run, the backtest and the deployed runtime."""
    return {
        "exchange_id": settings.exchange,
        "market_type": settings.market_type,
        "taker_fee": settings.taker_fee_pct / 100,
        "maker_fee": settings.maker_fee_pct / 100,
        "slippage_bps": settings.slippage_bps,
        "latency_ms": settings.latency_ms,
        "starting_balance": settings.paper_starting_balance,
        "bar_timeframe": settings.bar_timeframe or "1m",  # PROMETHEUS_BAR_TIMEFRAME
    }


@dataclass(frozen=True)
class UseCases:
    """Every use-case, wired to one set of adapters."""

    collector: CollectMarketData
    ranker: RankAndPublishSignals
    dispatcher: DispatchSignal
    executor: ExecuteSignalBatch  # both message kinds: per user and per bucket
    evaluator: EvaluateClosedPosition
    notifier: NotifyEvent
    monitor: ExitMonitor
    reporter: DailyReporter
    housekeeping: Housekeeping

    def handlers(self) -> dict[tuple[str, str], Callable[[BusMessage], object]]:
        """(topic, subscription) → the handler that consumes it."""
        return {
            (Topics.SIGNALS, Subscriptions.DISPATCHER): self.dispatcher.handle,
            (Topics.EXECUTIONS, Subscriptions.EXECUTOR): self.executor.handle_message,
            (Topics.EVENTS, Subscriptions.EVALUATOR): self.evaluator.handle,
            (Topics.EVENTS, Subscriptions.NOTIFIER): self.notifier.handle,
        }


def wire(
    settings: Settings,
    *,
    clock: Clock,
    exchange: Exchange,
    market: MarketStore,
    state: StateStore,
    bus: Bus,
    blobs: BlobStore,
    notifier: Notifier,
    ticks: TickSource | None = None,
) -> UseCases:
    """The use-cases over these adapters (the one place they are wired). ``ticks``: the
    worker's live trade stream (``app/streaming.py``); None = the exchange's poll."""
    bars = settings.bar_timeframe or "1m"  # coarse-only stores: their own bars (docs/data.md)
    return UseCases(
        collector=CollectMarketData(
            exchange,
            market,
            clock,
            backfill_minutes=int(settings.warmup_hours * 60),
            timeframe=bars,
        ),
        ranker=RankAndPublishSignals(
            market,
            state,
            bus,
            clock,
            default_panel(),
            synthesis_policy(settings),
            RankerConfig(
                exchange=settings.exchange,
                market_type=settings.market_type,
                btc_symbol=settings.btc_symbol,
                window_hours=settings.analysis_window_hours,
                top_n=settings.top_n,
                signal_ttl_minutes=settings.signal_ttl_minutes,
                strategy=settings.synthesizer,
                signal_params=SignalParams(take_profit_r=settings.take_profit_r),
                timeframe=bars,
            ),
        ),
        dispatcher=DispatchSignal(state, bus, clock, buckets=settings.execution_buckets),
        executor=ExecuteSignalBatch(
            state, exchange, market, bus, blobs, clock, ExecutorConfig(bar_timeframe=bars)
        ),
        evaluator=EvaluateClosedPosition(state, clock),
        notifier=NotifyEvent(notifier, state),
        monitor=ExitMonitor(
            state,
            exchange,
            bus,
            blobs,
            clock,
            exit_config(settings),
            ticks=ticks,
            close_concurrency=settings.monitor_close_concurrency,
        ),
        reporter=DailyReporter(
            state,
            blobs,
            bus,
            clock,
            market,
            exchange=settings.exchange,
            market_type=settings.market_type,
        ),
        housekeeping=Housekeeping(
            state, market, bus, clock, notifier, TopLiquidConfig(exchange=settings.exchange)
        ),
    )


def exit_config(settings: Settings) -> ExitConfig:
    """The exit monitor's rules (the run's worker also schedules its cycles by them)."""
    return ExitConfig()


def wire_adapters(settings: Settings, a: Adapters) -> UseCases:
    """``wire`` over a run's adapters."""
    return wire(
        settings,
        clock=a.clock,
        exchange=a.exchange,
        market=a.market,
        state=a.state,
        bus=a.bus,
        blobs=a.blobs,
        notifier=a.notifier,
    )


def run_outbox_and_secrets(
    settings: Settings, run_dir: Path
) -> tuple[ConsoleNotifier, EncryptedFileSecretStore]:
    """The run's notifier (an outbox file) and secret store (an encrypted local file);
    every runtime keeps these in its run folder."""
    return (
        ConsoleNotifier(run_dir / "outbox.jsonl"),
        EncryptedFileSecretStore(
            run_dir / "secrets.enc", key_file=settings.secret_key_file or run_dir / "secrets.key"
        ),
    )


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


def synthesis_policy(settings: Settings) -> SynthesisPolicy:
    """The configured synthesizer policy."""
    return policy_from_name(
        settings.synthesizer,
        min_confidence=settings.min_confidence,
        min_agreeing=settings.min_agreeing_analysts,
        scale_to_available=settings.consensus_scale_to_available,
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


LEDGER_POSITION_FIELDS = (
    "id",
    "user_id",
    "signal_id",
    "symbol",
    "direction",
    "amount",
    "entry_price",
    "stop_loss",
    "stop_order_id",
    "entry_order_id",
    "opened_ms",
    "closed_ms",
    "exit_price",
    "exit_reason",
    "realized_pnl",
    "pnl_pct",
    "status",
)


def build_ledger(rt: Runtime) -> dict[str, Any]:
    """The canonical trade ledger: every order, fill and position, in a stable order."""
    accounts = sorted(u["exchange_account"] for u in rt.state.query(Collections.USERS))
    orders = [
        {"account": a, **o.model_dump(mode="json")} for a in accounts for o in rt.exchange.orders(a)
    ]
    fills = [f.model_dump(mode="json") for a in accounts for f in rt.exchange.fills(a)]
    positions = [
        {f: p.get(f) for f in LEDGER_POSITION_FIELDS}
        for p in sorted(rt.state.query(Collections.POSITIONS), key=lambda d: d["id"])
    ]
    decisions = [
        {
            "signal_id": e["signal_id"],
            "user_id": e["user_id"],
            "outcome": e.get("outcome"),
            "reasons": e.get("reasons", []),
        }
        for e in sorted(
            rt.state.query(Collections.EXECUTIONS), key=lambda d: (d["signal_id"], d["user_id"])
        )
    ]
    return {"orders": orders, "fills": fills, "positions": positions, "decisions": decisions}


def canonical_json(data: Any) -> bytes:
    """Stable serialization for hashing (sorted keys, no whitespace)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def replay_window(
    settings: Settings, first_ms: int, data_end_ms: int, what: str = "replay"
) -> tuple[int, int, int]:
    """(start, trade_until, end) ms of a run over data in ``[first_ms, data_end_ms)``:
    signals from the warm-up's end (or ``replay_start``) until ``replay_end`` (default:
    data end − drain); then open positions run to their exits for at most
    ``drain_hours``, on data that exists. ``DataRangeError`` when nothing would trade."""
    start_ms = _floor_minute(
        _ms(settings.replay_start)
        if settings.replay_start
        else first_ms + int(settings.warmup_hours * 3600_000)
    )
    trade_until_ms = (
        _ms(settings.replay_end)
        if settings.replay_end
        else data_end_ms - int(settings.drain_hours * 3600_000)
    )
    end_ms = min(data_end_ms, trade_until_ms + int(settings.drain_hours * 3600_000))
    if trade_until_ms <= start_ms:
        raise DataRangeError(
            f"nothing to {what}: trading would run from {_iso(start_ms)} to "
            f"{_iso(trade_until_ms)} (data {_iso(first_ms)} → {_iso(end_ms)}, warm-up "
            f"{settings.warmup_hours} h, drain {settings.drain_hours} h)"
        )
    return start_ms, trade_until_ms, end_ms


def _ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _floor_minute(ms: int) -> int:
    return ms - ms % MINUTE_MS


def _day(ms: int) -> int:
    return ms // 86_400_000


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat()


__all__ = ["Adapters", "Runtime", "UseCases", "build_runtime", "run_pipeline", "wire"]
