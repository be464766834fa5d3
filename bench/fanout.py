"""Benchmark: one signal fanned out to many users through dispatch and execute.

Run: ``.venv/bin/python bench/fanout.py [users ...]`` (default 1000 10000). For each user
count: a fresh embedded world (SQLite state file, in-process bus, replay exchange over the
bundled sample); every user already has closed positions in the store (history) and one
signal is dispatched and executed for all of them. Reports decisions per CPU-second of the
dispatch + execute use-cases and the cost per decision, which must stay flat as users grow
(every decision accepted with 3 paper orders: the worst case), the same for a mixed
population (a signal the conservative third of the users rejects), then repeats the
smallest count with every port behind a timing proxy to say where the CPU time of a
decision goes (state store, paper venue, blob store, bus, market store, the
use-cases + domain). Writes ``bench/results/fanout.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.dispatch import DispatchSignal
from prometheus_trader.usecases.execute import ExecuteSignalForUser
from prometheus_trader.usecases.execute_batch import ExecuteSignalBatch
from prometheus_trader.usecases.names import Collections, Subscriptions, Topics

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(
    os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)
RESULTS = RESULTS_DIR / "fanout.json"
START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SYMBOL = "ETH/USDT:USDT"
HISTORY_PER_USER = 5  # closed positions already stored per user
PROFILES = list(RiskProfile)
BUCKETS = 64  # the batched executor's buckets (app settings' default)


# take-profit levels (% from entry, size fraction): every profile accepts the first set;
# the mixed set's first level (2.2 % for a 1 % stop: reward:risk 2.2) is below the
# conservative profile's minimum 2.5, so a third of the users (the conservative ones)
# are rejected by the risk gate, as in `make run`'s three demo users
ALL_ACCEPTED = ((3.0, 0.5), (4.0, 0.3), (5.0, 0.2))
MIXED = ((2.2, 0.5), (3.0, 0.3), (4.0, 0.2))


def _signal(
    exchange: ReplayExchange,
    clock: SimulatedClock,
    levels: tuple[tuple[float, float], ...] = ALL_ACCEPTED,
) -> OpportunitySignal:
    price = exchange.fetch_tickers([SYMBOL])[0].last
    now = clock.now()
    return OpportunitySignal(
        id="bench-signal",
        symbol=SYMBOL,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=Direction.LONG,
        entry_price=price,
        entry_low=price * 0.999,
        entry_high=price * 1.001,
        stop_loss=price * 0.99,
        stop_loss_pct=1.0,
        take_profits=[
            TakeProfitLevel(price=price * (1 + r / 100), pct=r, size_fraction=f) for r, f in levels
        ],
        reward_risk=sum(r * f for r, f in levels),
        confidence=0.8,
        created_at=now,
        expires_at=now + timedelta(minutes=20),
        strategy="consensus",
    )


class _Timed:
    """A port proxy that books the CPU time spent inside its calls (exclusive of nested
    timed calls) under one name: where the time of a decision goes."""

    stack: ClassVar[list[float]] = []  # CPU time of nested timed calls, per open call
    cpu: ClassVar[dict[str, float]] = {}
    calls: ClassVar[dict[str, int]] = {}

    def __init__(self, name: str, inner: object) -> None:
        self._name = name
        self._inner = inner

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not callable(value):
            return value
        name = self._name

        def timed(*args: Any, **kwargs: Any) -> Any:
            _Timed.stack.append(0.0)
            began = time.process_time()
            try:
                return value(*args, **kwargs)
            finally:
                spent = time.process_time() - began
                nested = _Timed.stack.pop()
                _Timed.cpu[name] = _Timed.cpu.get(name, 0.0) + spent - nested
                _Timed.calls[name] = _Timed.calls.get(name, 0) + 1
                if _Timed.stack:
                    _Timed.stack[-1] += spent

        return timed


def measure(
    users: int,
    tmp: Path,
    breakdown: bool = False,
    mixed: bool = False,
    buckets: int = BUCKETS,
    memory: bool = False,
) -> dict[str, Any]:
    """One fan-out to ``users`` users; CPU seconds of dispatch + execute.

    ``breakdown``: the ports go through timing proxies (a few % slower) and the result
    also says how the CPU time splits between them and the use-case + domain code.
    ``mixed``: the signal the conservative third of the users rejects (``MIXED``).
    ``buckets``: 0 = one message per user (``ExecuteSignalForUser``), else one batch
    message per bucket of users (``ExecuteSignalBatch``).
    ``memory``: the state in a ``MemoryStateStore`` (the backtest's store: no SQL, no
    JSON text) instead of the SQLite file: what the store's encoding and SQL cost.
    """
    clock = SimulatedClock(START)
    with DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True) as source:
        exchange = ReplayExchange(source, clock)
        market = DuckDBMarketStore(tmp / "market")
        CollectMarketData(exchange, market, clock, backfill_minutes=60).run()
        state: Any = MemoryStateStore() if memory else SqliteStateStore(tmp / "state.sqlite")
        bus = InMemoryBus()
        blobs = LocalBlobStore(tmp / "blobs")
        state.transaction(lambda tx: _seed(tx, users))
        signal = _signal(exchange, clock, MIXED if mixed else ALL_ACCEPTED)
        doc = signal.model_dump(mode="json")
        state.create(Collections.SIGNALS, signal.id, doc)
        ports: tuple[Any, Any, Any, Any, Any] = (state, exchange, market, bus, blobs)
        if breakdown:
            names = ("state store (SQLite file)", "exchange (paper venue)", "market store")
            ports = (
                *(_Timed(n, p) for n, p in zip(names, ports[:3], strict=True)),
                _Timed("bus (in-process)", bus),
                _Timed("blob store (audit log)", blobs),
            )
            _Timed.cpu.clear()
            _Timed.calls.clear()
        executor = (ExecuteSignalBatch if buckets else ExecuteSignalForUser)(*ports, clock)
        bus.subscribe(
            Topics.SIGNALS,
            Subscriptions.DISPATCHER,
            DispatchSignal(ports[0], ports[3], clock, buckets=buckets).handle,
        )
        handler = executor.handle_message if buckets else executor.handle  # type: ignore[attr-defined]
        bus.subscribe(Topics.EXECUTIONS, Subscriptions.EXECUTOR, handler)
        # the instruments are inferred from the bars once per exchange (~0.4 s CPU): a
        # warm executor, as in a running pipeline, so the figure is the cost per decision
        exchange.load_markets()
        began_cpu, began_wall = time.process_time(), time.perf_counter()
        bus.publish(Topics.SIGNALS, doc, dedupe_key=signal.id, ordering_key="binance")
        bus.drain_all()
        cpu, wall = time.process_time() - began_cpu, time.perf_counter() - began_wall
        records = state.query(Collections.EXECUTIONS)
        decisions = len(records)
        outcomes: dict[str, int] = {}
        for record in records:
            outcomes[str(record.get("outcome"))] = outcomes.get(str(record.get("outcome")), 0) + 1
        state.close()
        market.close()
    row: dict[str, Any] = {
        "users": users,
        "path": f"batched, {buckets} buckets" if buckets else "per user",
        "state_store": "memory" if memory else "SQLite file",
        "decisions": decisions,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "decisions_per_cpu_second": round(decisions / cpu, 1),
        "cpu_ms_per_decision": round(cpu / decisions * 1000, 4),
        "outcomes": dict(sorted(outcomes.items())),
    }
    if breakdown:
        split = dict(_Timed.cpu)
        split["use-cases + domain (the rest)"] = cpu - sum(split.values())
        row["cpu_ms_per_decision_by_part"] = {
            k: round(v / decisions * 1000, 4) for k, v in sorted(split.items())
        }
        row["port_calls_per_decision"] = {
            k: round(v / decisions, 2) for k, v in sorted(_Timed.calls.items())
        }
        rest = cpu - split["exchange (paper venue)"]
        row["decisions_per_cpu_second_without_the_paper_venue"] = round(decisions / rest, 1)
    return row


def _seed(tx: object, users: int) -> None:
    for i in range(users):
        user = User.with_profile(f"u{i:06d}", PROFILES[i % len(PROFILES)])
        tx.set(Collections.USERS, user.user_id, user.model_dump(mode="json"))  # type: ignore[attr-defined]
        for j in range(HISTORY_PER_USER):
            tx.set(  # type: ignore[attr-defined]
                Collections.POSITIONS,
                f"hist-{i}-{j}",
                {"id": f"hist-{i}-{j}", "user_id": user.user_id, "status": "closed"},
            )


def main(argv: list[str]) -> int:
    """Measure each user count; print and write the results."""
    counts = [int(a) for a in argv] or [1000, 10000]
    rows = []
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(n, Path(tmp))
        rows.append(row)
        print(
            f"{n:6d} users: {row['decisions_per_cpu_second']:8.1f} decisions/CPU-s, "
            f"{row['cpu_ms_per_decision']:.3f} ms CPU per decision"
        )
    mixed_rows = []
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(n, Path(tmp), mixed=True)
        mixed_rows.append(row)
        print(
            f"{n:6d} users, mixed {row['outcomes']}: "
            f"{row['decisions_per_cpu_second']:8.1f} decisions/CPU-s, "
            f"{row['cpu_ms_per_decision']:.3f} ms CPU per decision"
        )
    with tempfile.TemporaryDirectory() as tmp:
        split = measure(counts[0], Path(tmp), breakdown=True)
    memory_rows = []
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(n, Path(tmp), memory=True)
        memory_rows.append(row)
        print(
            f"{n:6d} users, memory state store: "
            f"{row['decisions_per_cpu_second']:8.1f} decisions/CPU-s, "
            f"{row['cpu_ms_per_decision']:.3f} ms CPU per decision"
        )
    with tempfile.TemporaryDirectory() as tmp:
        per_user = measure(counts[0], Path(tmp), buckets=0)
    print(
        f"{counts[0]:6d} users, per-user path (before): "
        f"{per_user['decisions_per_cpu_second']:8.1f} decisions/CPU-s, "
        f"{per_user['cpu_ms_per_decision']:.3f} ms CPU per decision"
    )
    print(f"where the time goes ({counts[0]} users, ms CPU per decision, timed ports):")
    for part, ms in split["cpu_ms_per_decision_by_part"].items():
        print(f"  {part:32s} {ms:7.3f}")
    result = {
        "benchmark": "one signal fanned out to N users through dispatch + execute (embedded), "
        f"batched executor ({BUCKETS} buckets)",
        "python": platform.python_version(),
        "history_positions_per_user": HISTORY_PER_USER,
        "runs": rows,
        "mixed_population": {
            "signal": "first take profit at reward:risk 2.2: the conservative profile "
            "(minimum 2.5) rejects it, moderate and aggressive accept",
            "runs": mixed_rows,
        },
        "breakdown": split,
        "per_user_path_same_run": per_user,
        "memory_state_store": memory_rows,
        "cost_ratio_largest_to_smallest": round(
            rows[-1]["cpu_ms_per_decision"] / rows[0]["cpu_ms_per_decision"], 3
        ),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
