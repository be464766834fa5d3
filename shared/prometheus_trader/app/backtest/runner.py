"""``prometheus-trader backtest``: load the store once, run the engine, write the results.

Writes into the output folder (recreated): ``summary.json`` (the pipeline's summary
fields), ``ledger.json`` (the pipeline's canonical ledger: same input → same bytes),
``metrics.json`` (``compute_performance`` per user and overall), ``trades.json`` (the
closed trades' journal entries) and the daily report set (JSON, HTML, tax CSV) written by
the same ``DailyReporter`` the pipeline uses, fed once at the end.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.app.backtest.data import MemoryMarketData, release_free_memory
from prometheus_trader.app.backtest.engine import (
    BacktestEngine,
    BacktestResult,
    EngineConfig,
    Progress,
    utc,
)
from prometheus_trader.app.backtest.live import BacktestExchange
from prometheus_trader.app.demo import DEMO_USERS
from prometheus_trader.app.logging import configure_logging
from prometheus_trader.app.pipeline import (
    LEDGER_POSITION_FIELDS,
    REPLAY_TIMEFRAMES,
    DataRangeError,
    canonical_json,
    paper_fills,
    replay_window,
    synthesis_policy,
)
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.market import MINUTE_MS, TIMEFRAME_MS
from prometheus_trader.domain.performance import TradeResult, compute_performance
from prometheus_trader.domain.synthesizer import SignalParams
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import StateStore
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.report import DailyReporter


def users_for(
    users_file: Path | None = None, profiles: list[str] | None = None, count: int = 0
) -> tuple[User, ...]:
    """Users from a JSON file (a list of user documents), or ``count`` users cycling
    through ``profiles``, else the three demo users."""
    if users_file is not None:
        docs = json.loads(users_file.read_text())
        return tuple(User.model_validate(d) for d in docs)
    if profiles or count:
        names = [RiskProfile(p) for p in (profiles or [p.value for p in RiskProfile])]
        n = max(count, len(names))
        return tuple(
            User.with_profile(f"bt-{i:05d}-{names[i % len(names)].value}", names[i % len(names)])
            for i in range(n)
        )
    return DEMO_USERS


def window_for(settings: Settings, data: MemoryMarketData) -> tuple[int, int, int]:
    """(start, trade_until, end) ms, exactly as ``run`` chooses them (``data_window``)."""
    tf, bar_ms = data.timeframe, TIMEFRAME_MS[data.timeframe]
    ranges = [r for k in data.series_keys() if (r := data.candle_range(k, tf)) is not None]
    if not ranges:
        raise DataRangeError(
            f"no {'/'.join(REPLAY_TIMEFRAMES)} candles for {settings.exchange}/"
            f"{settings.market_type} in {settings.data_dir}; import data with "
            "`prometheus-trader data import`"
        )
    first_ms = max(r[0] for r in ranges)
    data_end_ms = min(r[1] for r in ranges) + bar_ms
    if data_end_ms - bar_ms <= first_ms:
        raise DataRangeError(f"the symbols in {settings.data_dir} share no common time range")
    return replay_window(settings, first_ms, data_end_ms, "backtest")


def run_backtest(
    settings: Settings,
    progress: Progress | None = None,
    *,
    users: tuple[User, ...] = DEMO_USERS,
    out_dir: Path | None = None,
    write_reports: bool = True,
) -> dict[str, Any]:
    """Backtest the strategy over ``settings.data_dir``; write the results; the summary."""
    out = out_dir or settings.var_dir / "backtest"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # the live use-cases log as in ``run``; the lines go next to the output folder (they
    # carry wall-clock times, and the folder's files are byte-identical across reruns)
    configure_logging(
        settings.log_level, file=settings.log_file or out.with_name(f"{out.name}.log.jsonl")
    )
    began = time.perf_counter()
    # a store of only coarser candles is backtested at their resolution (docs/data.md)
    settings = settings.model_copy(update={"bar_timeframe": stored_timeframe(settings)})
    data = MemoryMarketData.from_parquet(
        settings.data_dir, settings.exchange, settings.market_type, settings.bar_timeframe or "1m"
    )
    start_ms, trade_until_ms, end_ms = window_for(settings, data)
    loaded = time.perf_counter()
    engine = build_engine(settings, data, users, start_ms, trade_until_ms, end_ms)
    result = engine.run(progress)
    finished = time.perf_counter()
    ledger = build_ledger(engine, users)
    ledger_bytes = canonical_json(ledger)
    (out / "ledger.json").write_bytes(ledger_bytes)
    trades = sorted(result.journal, key=lambda e: (e.closed_at, e.position_id))
    (out / "trades.json").write_text(
        json.dumps([e.model_dump(mode="json") for e in trades], indent=2, sort_keys=True) + "\n"
    )
    metrics = _metrics(result, users, start_ms, end_ms)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    release_free_memory()  # the run's free heap pages, before the reports' large strings
    reports = _reports(result, users, out, start_ms, end_ms) if write_reports else []
    summary = _summary(settings, engine, result, ledger, ledger_bytes, start_ms, end_ms)
    summary["reports"] = reports  # relative to the output folder: reruns compare equal
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    timings = {
        "load_seconds": round(loaded - began, 3),
        "loop_seconds": round(finished - loaded, 3),
        "candles": data.candle_count,
        "simulated_minutes": (end_ms - start_ms) // MINUTE_MS,
        "rankings": result.rankings,
        "monitor_cycles": result.monitor_cycles,
    }
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")  # never hashed
    return summary


def stored_timeframe(settings: Settings) -> str:
    """``settings.bar_timeframe``, else the finest of REPLAY_TIMEFRAMES the store holds for
    the configured market (from its partition folders: the backtest loads no DuckDB)."""
    if settings.bar_timeframe is not None:
        return settings.bar_timeframe
    market = Path(settings.data_dir) / settings.exchange / settings.market_type.value
    for tf in REPLAY_TIMEFRAMES:
        if any(market.glob(f"candles_{tf}/date=*/data.parquet")):
            return tf
    return "1m"  # none: ``window_for`` says so


def build_engine(
    settings: Settings,
    data: MemoryMarketData,
    users: tuple[User, ...],
    start_ms: int,
    trade_until_ms: int,
    end_ms: int,
) -> BacktestEngine:
    """An engine over ``data`` with the configured strategy, fills and cadences."""
    clock = SimulatedClock(utc(start_ms))
    # the paper ledger and the use-cases' documents: one private in-memory store (dicts:
    # the SQLite store's semantics without its SQL and JSON round trips)
    state = MemoryStateStore()
    bars = settings.model_copy(update={"bar_timeframe": data.timeframe})  # the data's bars
    return BacktestEngine(
        data,
        backtest_exchange(bars, data, clock, state),
        clock,
        users,
        synthesis_policy(settings),
        EngineConfig(
            exchange=settings.exchange,
            btc_symbol=settings.btc_symbol,
            start_ms=start_ms,
            trade_until_ms=trade_until_ms,
            end_ms=end_ms,
            warmup_ms=int(settings.warmup_hours * 60) * MINUTE_MS,
            window_hours=settings.analysis_window_hours,
            top_n=settings.top_n,
            signal_ttl_minutes=settings.signal_ttl_minutes,
            strategy=settings.synthesizer,
            signal_params=SignalParams(take_profit_r=settings.take_profit_r),
            rank_interval_minutes=settings.rank_interval_minutes,
            collect_interval_minutes=settings.collect_interval_minutes,
            monitor_interval_ms=int(settings.monitor_interval_seconds * 1000),
            max_delivery_attempts=settings.max_delivery_attempts,
        ),
        state=state,
    )


def backtest_exchange(
    settings: Settings, data: MemoryMarketData, clock: SimulatedClock, state: StateStore
) -> BacktestExchange:
    """``wiring.replay_exchange``'s exchange (same fills, same ledger), as the backtest's
    ``BacktestExchange`` (tickers kept while their bars are the same)."""
    return BacktestExchange(
        data, clock, ledger=state, ledger_exclusive=True, **paper_fills(settings)
    )


def build_ledger(engine: BacktestEngine, users: tuple[User, ...]) -> dict[str, Any]:
    """The pipeline's canonical ledger, from the backtest's memory."""
    exchange = engine.exchange
    accounts = sorted(u.exchange_account for u in users)
    positions = [
        p.model_dump(mode="json")
        for p in sorted(engine.result.positions.values(), key=lambda p: p.id)
    ]
    return {
        "orders": [
            {"account": a, **o.model_dump(mode="json")}
            for a in accounts
            for o in exchange.orders(a)
        ],
        "fills": [f.model_dump(mode="json") for a in accounts for f in exchange.fills(a)],
        "positions": [{f: p.get(f) for f in LEDGER_POSITION_FIELDS} for p in positions],
        "decisions": [
            {
                "signal_id": e.signal_id,
                "user_id": e.user_id,
                "outcome": e.outcome.value if e.outcome else None,
                "reasons": [r.value for r in e.reasons],
            }
            for e in sorted(
                engine.result.executions.values(), key=lambda e: (e.signal_id, e.user_id)
            )
        ],
    }


def _summary(
    settings: Settings,
    engine: BacktestEngine,
    result: BacktestResult,
    ledger: dict[str, Any],
    ledger_bytes: bytes,
    start_ms: int,
    end_ms: int,
) -> dict[str, Any]:
    executions = list(result.executions.values())
    outcomes: dict[str, dict[str, str]] = {}
    for e in executions:
        outcomes.setdefault(e.signal_id, {})[e.user_id] = e.outcome.value if e.outcome else ""
    positions = list(result.positions.values())
    return {
        "run": {
            "data_dir": str(settings.data_dir),
            "start": utc(start_ms).isoformat(),
            "end": utc(end_ms).isoformat(),
            "synthesizer": settings.synthesizer,
            "bar_timeframe": engine.data.timeframe,
        },
        "signals_published": len(result.signals),
        "users": len(engine.users),
        "decisions": dict(
            sorted(Counter(e.outcome.value if e.outcome else "" for e in executions).items())
        ),
        "rejection_reasons": dict(
            sorted(Counter(r.value for e in executions for r in e.reasons).items())
        ),
        "signals_with_divergent_decisions": sum(
            1 for per_user in outcomes.values() if len(set(per_user.values())) > 1
        ),
        "orders": len(ledger["orders"]),
        "positions_opened": len(positions),
        "positions_closed": sum(1 for p in positions if p.status.value == "closed"),
        "closed_by_reason": dict(
            sorted(Counter(p.exit_reason.value for p in positions if p.exit_reason).items())
        ),
        "ledger_sha256": hashlib.sha256(ledger_bytes).hexdigest(),
    }


def _metrics(
    result: BacktestResult, users: tuple[User, ...], start_ms: int, end_ms: int
) -> dict[str, Any]:
    plans = {
        e.id: e.decision.plan.risk_pct
        for e in result.executions.values()
        if e.decision is not None and e.decision.plan is not None
    }
    by_user: dict[str, list[TradeResult]] = {u.user_id: [] for u in users}
    for entry in result.journal:
        by_user.setdefault(entry.user_id, []).append(
            TradeResult.from_journal(entry, plans.get(entry.position_id))
        )
    period = (start_ms, end_ms)
    return {
        "period": {"start": utc(start_ms).isoformat(), "end": utc(end_ms).isoformat()},
        "users": {
            uid: compute_performance(trades, period_ms=period).model_dump(mode="json")
            for uid, trades in sorted(by_user.items())
        },
        "all": compute_performance(
            [t for ts in by_user.values() for t in ts], period_ms=period
        ).model_dump(mode="json"),
    }


def _reports(
    result: BacktestResult, users: tuple[User, ...], out: Path, start_ms: int, end_ms: int
) -> list[str]:
    """The daily report set, by the pipeline's reporter, from the journal (written once)."""
    state = MemoryStateStore()
    blobs = LocalBlobStore(out / "blobs")
    try:
        for user in users:
            state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        for entry in result.journal:
            state.create(Collections.JOURNAL, entry.position_id, entry.model_dump(mode="json"))
        clock = SimulatedClock(utc(end_ms))
        reporter = DailyReporter(state, blobs, InMemoryBus(), clock)
        day: date = utc(start_ms).date()
        last: date = utc(end_ms - 1).date()
        while day <= last:
            reporter.run(day)
            day += timedelta(days=1)
        return sorted(str(blobs.path_for(k).relative_to(out)) for k in blobs.list("reports/"))
    finally:
        state.close()


__all__ = ["build_engine", "build_ledger", "run_backtest", "users_for", "window_for"]
