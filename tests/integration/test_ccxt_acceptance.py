"""Issue-8 acceptance on the Binance USD-M and the Bybit stand-ins through ccxt (exchange side):

(a) 8 executors in 3 processes race on one (signal, user), 20 times: one entry order each;
(b) 20 % injected faults over >= 200 order placements and their exits: no duplicate order,
    and once a position has its stop it is never without exactly one live stop.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.integration.ccxt_executors import (
    SYMBOL,
    VENUES,
    make_exchange,
    make_executor,
    message,
    racer_process,
    seed,
)
from tests.standins.binance_usdm import ORDER_CHANGING as BINANCE_ORDERS
from tests.standins.binance_usdm import serve_binance
from tests.standins.bybit import ORDER_CHANGING as BYBIT_ORDERS
from tests.standins.bybit import serve_bybit
from tests.standins.engine import DEFAULT_NOW_MS, Engine, FaultPlan

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.ids import client_order_id, execution_id
from prometheus_trader.domain.trading import (
    Execution,
    ExitReason,
)
from prometheus_trader.ports import Filter
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration
REPORT_DIR = (
    Path(os.environ.get("PROMETHEUS_ACCEPTANCE_DIR", ""))
    if os.environ.get("PROMETHEUS_ACCEPTANCE_DIR")
    else None
)


def _report(name: str, data: dict[str, Any]) -> None:
    """Numbers for the closing note (written only when asked for)."""
    if REPORT_DIR is not None:
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True))


def serve(venue: str, engine: Engine) -> Any:
    """The venue's stand-in over ``engine`` (a context manager with ``urls``)."""
    return (serve_binance if venue == "binance" else serve_bybit)(engine, timeout_s=0.6)


def order_requests(venue: str, requests: list[tuple[str, str]]) -> int:
    """Order-changing requests (where the stand-ins draw their faults)."""
    if venue == "binance":
        return sum(1 for m, p in requests if p in BINANCE_ORDERS and m in ("POST", "DELETE"))
    return sum(1 for _, p in requests if p in BYBIT_ORDERS)


def creates_by_client_id(engine: Engine) -> Counter[tuple[str, str]]:
    return Counter((e["account"], e["client_id"]) for e in engine.log if e["action"] == "create")


# ------------------------------------------------------------------- (a) races
@dataclass
class Race:
    entries: list[int]
    duplicates: dict[tuple[str, str], int]
    records: list[Execution | None]
    summary: dict[str, Any]


@pytest.fixture(scope="module", params=VENUES)
def race(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Race:
    """20 times: 8 executors (3 + 3 + 2 threads in 3 spawned processes, each executor its
    own adapter, state connection and clock) handle the same (signal, user) at once."""
    venue: str = request.param
    tmp_path = tmp_path_factory.mktemp(f"race-{venue}")
    reps, split = 20, (3, 3, 2)
    users = [f"r{i:02d}" for i in range(reps)]
    engine = Engine(keys={u: f"{u}-secret" for u in users})
    state_path = tmp_path / "state.sqlite"
    state = SqliteStateStore(state_path)
    price = engine.last_price(SYMBOL)
    tasks = [(seed(state, u, price, DEFAULT_NOW_MS, i), u) for i, u in enumerate(users)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(sum(split))
    results = ctx.Queue()
    with serve(venue, engine) as stand:
        procs = [
            ctx.Process(
                target=racer_process,
                args=(
                    n,
                    stand.urls,
                    str(state_path),
                    str(tmp_path / "blobs"),
                    DEFAULT_NOW_MS,
                    tasks,
                    barrier,
                    results,
                    venue,
                ),
            )
            for n in split
        ]
        for p in procs:
            p.start()
        outcomes: dict[str, list[str]] = {}
        for _ in range(reps * len(split)):
            signal_id, got = results.get(timeout=600)
            outcomes.setdefault(signal_id, []).extend(got)
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    creates = creates_by_client_id(engine)
    entries, records = [], []
    for signal_id, user in tasks:
        entries.append(creates[(user, client_order_id(signal_id, user, "entry"))])
        doc = state.get(Collections.EXECUTIONS, execution_id(signal_id, user))
        records.append(Execution.model_validate(doc) if doc else None)
    duplicates = {k: n for k, n in creates.items() if n > 1}
    summary = {
        "venue": venue,
        "executions": reps,
        "racers": sum(split),
        "processes": len(split),
        "entry_orders_per_execution": Counter(entries),
        "orders_in_log": sum(creates.values()),
        "duplicate_client_ids": len(duplicates),
        "records": Counter(
            f"{r.outcome}:{'position' if r.position_id else 'no position'}" if r else "missing"
            for r in records
        ),
        "racer_outcomes": Counter(o.split(":")[0] for v in outcomes.values() for o in v),
    }
    _report(f"racing-{venue}", summary)
    return Race(entries, duplicates, records, summary)


@pytest.mark.timeout(900)
def test_racing_executors_place_exactly_one_entry_per_execution(race: Race) -> None:
    assert race.entries == [1] * len(race.entries), race.summary
    assert race.duplicates == {}, race.summary
    # decided once: however the racers interleave, each record ends accepted with its
    # position (a repeat resumes the first decision instead of re-running the gate)
    assert all(r is not None and r.completed_at is not None for r in race.records)
    assert all(r is not None and r.outcome == "accepted" and r.position_id for r in race.records), (
        race.summary
    )


# ---------------------------------------------------------------- (b) faults
def stop_coverage(engine: Engine) -> dict[str, int]:
    """Replay the stand-in's log: at every event, each open position's live stops."""
    qty: dict[str, float] = {}
    live_stops: dict[str, set[int]] = {}
    had_stop: set[str] = set()
    out = Counter(
        {"events": 0, "gap_before_first_stop": 0, "unprotected_after_stop": 0, "double_stop": 0}
    )
    bad: set[str] = set()
    for e in engine.log:
        if e["action"] == "fault":
            continue
        acct = e["account"]
        if e["action"] == "create" and e["type"] == "STOP_MARKET":
            live_stops.setdefault(acct, set()).add(e["order_id"])
            had_stop.add(acct)
        elif e["action"] in ("cancel", "trigger", "expire") and e["type"] == "STOP_MARKET":
            live_stops.get(acct, set()).discard(e["order_id"])
        elif e["action"] == "fill":
            sign = 1 if e["side"] == "BUY" else -1
            qty[acct] = qty.get(acct, 0.0) + sign * e["amount"]
            if abs(qty[acct]) < 1e-12:
                qty[acct] = 0.0
                had_stop.discard(acct)
        out["events"] += 1
        for a, q in qty.items():
            if not q:
                continue
            n = len(live_stops.get(a, set()))
            if n == 0:
                out["unprotected_after_stop" if a in had_stop else "gap_before_first_stop"] += 1
                if a in had_stop:
                    bad.add(a)
            elif n > 1:
                out["double_stop"] += 1
                bad.add(a)
    out["positions_ever_unprotected_or_double"] = len(bad)
    return dict(out)


BURST = 5  # = the adapter's attempts (ccxt_executors.FAST): the fault outlasts its retries
# execution index % 20 → faults queued before it: on the entry; on the stop (after a
# fault-free entry: an empty entry means "no fault")
BURSTS: dict[int, list[str]] = {5: ["5xx"] * BURST, 15: ["", *["5xx"] * BURST]}


def exit_all(
    monitor: ExitMonitor,
    state: SqliteStateStore,
    rounds: int = 8,
    bursts: int = 0,
    faults: FaultPlan | None = None,
) -> Counter[str]:
    """Close every position through the exit monitor as the worker's kill switch does
    (``close_all``): its reduce-only exit goes in first (again for what a partial fill
    left) and the stop is cancelled only once flat; a failing position is alerted and
    isolated, keeps its stop and is tried again on the next round (cycle). The first
    ``bursts`` rounds start with a fault that outlasts the adapter's retries."""
    tries: Counter[str] = Counter()
    for n in range(rounds):
        still = state.query(Collections.POSITIONS, [Filter("status", "==", "open")])
        if not still:
            break
        tries.update(d["id"] for d in still)
        if n < bursts and faults is not None:
            faults.queue += ["5xx"] * BURST
        monitor.close_all(ExitReason.MAX_HOLD, {"by": "test"})
    left = {d["id"] for d in state.query(Collections.POSITIONS, [Filter("status", "==", "open")])}
    return Counter(
        "still open" if pid in left else "closed" if n == 1 else "closed after a retry"
        for pid, n in tries.items()
    )


def failure_paths(
    engine: Engine,
    state: SqliteStateStore,
    tasks: list[tuple[str, str]],
    exits_from: int,
    bursts: dict[str, set[str]],
) -> dict[str, dict[str, Any]]:
    """Per injected fault kind, the executions (entry phase) or positions (exit phase) it
    hit: what they ended recorded as, and the alerts (``system_error`` events) they got.
    ``bursts``: rows of their own for the users a fault burst was queued for; an exit
    burst is a user with at least ``BURST`` faults while exiting."""
    alerts: dict[str, Counter[str]] = {}
    for e in state.query(Collections.EVENTS, [Filter("type", "==", "system_error")]):
        phase = "exit" if "stop_order_id" in e["payload"] else "entry"
        alerts.setdefault(f"{phase}:{e['user_id']}", Counter())[e["severity"]] += 1
    records: dict[str, str] = {}
    for signal_id, user in tasks:
        doc = state.get(Collections.EXECUTIONS, execution_id(signal_id, user)) or {}
        kind = str(doc.get("outcome", "missing"))
        if doc.get("error"):
            why = re.sub(r"\bpt-[0-9a-f]+", "…", str(doc["error"]).split(":")[1].strip())
            kind += f" ({why[:48]})"
        elif doc.get("position_id"):
            kind += " with its position"
        records[user] = kind if doc.get("completed_at") else f"{kind}, not completed"
    closed = {
        d["user_id"]: f"{d['status']} ({d.get('exit_reason')})"
        for d in state.query(Collections.POSITIONS)
    }
    exit_faults = Counter(
        e["account"] for e in engine.log if e["action"] == "fault" and e["seq"] >= exits_from
    )
    bursts = {
        **bursts,
        f"exit: 5xx x{BURST} (exit order fails)": {u for u, k in exit_faults.items() if k >= BURST},
    }
    in_burst: dict[str, set[str]] = {"entry": set(), "exit": set()}
    for name, hit in bursts.items():
        in_burst["exit" if name.startswith("exit") else "entry"] |= hit
    table: dict[str, dict[str, Any]] = {}
    for e in engine.log:
        if e["action"] != "fault":
            continue
        phase = "exit" if e["seq"] >= exits_from else "entry"
        if e["account"] in in_burst[phase]:
            continue  # counted in its burst's row
        row = table.setdefault(
            f"{phase}: {e['fault']}",
            {"hit": set(), "recorded": Counter(), "alerted": Counter(), "failed_unalerted": 0},
        )
        row["hit"].add(e["account"])
    for name, hit in bursts.items():
        table[name] = {
            "hit": hit,
            "recorded": Counter(),
            "alerted": Counter(),
            "failed_unalerted": 0,
        }
    for row_name, row in table.items():
        phase = "exit" if row_name.startswith("exit") else "entry"
        for user in row["hit"]:
            state_now = records[user] if phase == "entry" else closed.get(user, "no position")
            row["recorded"][state_now] += 1
            got = alerts.get(f"{phase}:{user}", Counter())
            row["alerted"].update(got)
            failed = not (state_now.startswith("accepted") or state_now.startswith("closed"))
            row["failed_unalerted"] += int(failed and not got)
        row["hit"] = len(row["hit"])
        row["recorded"] = dict(row["recorded"])
        row["alerted"] = dict(row["alerted"])
    return dict(sorted(table.items()))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("venue", VENUES)
def test_injected_faults_leave_no_duplicate_and_no_unprotected_position(
    venue: str, tmp_path: Path
) -> None:
    n = int(os.environ.get("PROMETHEUS_FAULT_EXECUTIONS", "200"))
    users = [f"f{i:03d}" for i in range(n)]
    engine = Engine(keys={u: f"{u}-secret" for u in users}, duplicate_scope="open")
    state = SqliteStateStore(tmp_path / "state.sqlite")
    price = engine.last_price(SYMBOL)
    tasks = [(seed(state, u, price, DEFAULT_NOW_MS, i), u) for i, u in enumerate(users)]
    engine.faults = FaultPlan(rate=0.2, seed=8)
    outcomes: Counter[str] = Counter()
    with serve(venue, engine) as stand:
        executor = make_executor(
            stand.urls, tmp_path / "state.sqlite", tmp_path / "b", DEFAULT_NOW_MS, venue
        )
        for i, (signal_id, user) in enumerate(tasks):
            # a few faults that outlast the adapter's 5 attempts: on the entry, on the stop
            engine.faults.queue += BURSTS.get(i % 20, [])
            for attempt in range(1, 6):  # redeliveries, as Pub/Sub would
                try:
                    done = executor.handle(message(signal_id, user, attempt))
                    error = re.sub(r"\bpt-[0-9a-f]+", "…", done.error or "")
                    why = f" ({error.split(':')[1].strip()})" if done.error else ""
                    outcomes[f"{done.outcome}{why}"] += 1
                    break
                except Exception as exc:
                    outcomes_key = f"delivery failed: {type(exc).__name__}"
                    outcomes[outcomes_key] += 1
        ex = make_exchange(stand.urls, state, venue=venue)
        clock = SimulatedClock(datetime.fromtimestamp(DEFAULT_NOW_MS / 1000, UTC))
        monitor = ExitMonitor(state, ex, InMemoryBus(), LocalBlobStore(tmp_path / "m"), clock)
        exits_from = len(engine.log)
        exits = exit_all(monitor, state, bursts=3, faults=engine.faults)
        engine.faults.rate = 0.0
        open_after = {u: engine.positions(u) for u in users if engine.positions(u)}
        live_after = [o for o in engine.live_orders() if o.conditional and o.type == "STOP_MARKET"]
    creates = creates_by_client_id(engine)
    placements = sum(creates.values())
    faults = Counter(e["fault"] for e in engine.log if e["action"] == "fault")
    duplicates = {f"{a}/{c}": k for (a, c), k in creates.items() if k > 1}
    coverage = stop_coverage(engine)
    bursts = {
        f"entry: 5xx x{BURST} (retries exhausted)": {
            u for i, (_, u) in enumerate(tasks) if i % 20 == 5
        },
        f"stop: 5xx x{BURST} (stop placement fails)": {
            u for i, (_, u) in enumerate(tasks) if i % 20 == 15
        },
    }
    paths = failure_paths(engine, state, tasks, exits_from, bursts)
    summary = {
        "venue": venue,
        "executions": n,
        "order_placements": placements,
        "faults_injected": dict(faults),
        "fault_share_of_order_requests": round(
            sum(faults.values()) / max(1, order_requests(venue, engine.requests)),
            3,
        ),
        "duplicate_orders": len(duplicates),
        "execution_outcomes": dict(outcomes),
        "exits": dict(exits),
        "positions_left_open": len(open_after),
        "stop_coverage": coverage,
        "live_stops_left_after_exits": len(live_after),
        "failure_paths": paths,
    }
    _report(f"faults-{venue}", summary)
    assert placements >= 200, summary
    assert duplicates == {}, summary
    assert coverage["unprotected_after_stop"] == 0 and coverage["double_stop"] == 0, summary
    assert open_after == {}, summary
    # every failure path ends recorded (execution complete, position closed) and alerted
    assert all(not r["failed_unalerted"] for r in paths.values()), paths
    assert all("not completed" not in k for r in paths.values() for k in r["recorded"]), paths
    assert exits.get("still open", 0) == 0, summary
