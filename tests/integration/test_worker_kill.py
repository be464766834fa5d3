"""The worker killed with SIGKILL at random moments loses, double-closes and orphans nothing.

Separate processes on one SQLite state file (the paper ledger lives in it), on a shared
scaled clock (``kill_harness.py``): two racing executors open positions for two users on
three symbols; the exit-monitor worker is killed with SIGKILL ``KILLS`` times at random
moments of its loop and restarted each time. Then the executors stop, a last worker
closes everything (kill switch), and the invariants are checked from the ledger:

* 0 lost: every accepted execution has its position; every position ends closed;
* 0 double-closed: each position's filled reduce-only orders add up to its amount
  exactly once, and it has one ``position_closed`` event;
* 0 orphan orders: no resting order and no exchange position is left;
* 0 adopted: reconciliation never found an exchange position without its record.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests.integration.kill_harness import USERS, ScaledClock, open_store, seed_users

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.trading import OrderStatus
from prometheus_trader.ports import Filter, StateStore
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("PROMETHEUS_TEST_WORKER_KILLS", "20"))
REPO = Path(__file__).resolve().parents[2]
LEGS = ("sl", "tp1", "tp2", "tp3", "exit", "flatten")


def spawn(
    role: str, db: str, state_dir: Path, t0: float, name: str, stdin: int | None = None
) -> subprocess.Popen[bytes]:
    log = (state_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.kill_harness",
            role,
            str(db),
            str(state_dir),
            repr(t0),
            name,
        ],
        cwd=REPO,
        stdin=stdin,
        stdout=subprocess.PIPE if stdin is not None else log,
        stderr=log if stdin is not None else subprocess.STDOUT,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def heartbeat_cycles(state: StateStore) -> int:
    doc = state.get(Collections.HEARTBEATS, "exit-monitor")
    return int(doc["cycles"]) if doc else -1


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("backend", ["sqlite", "firestore-emulator"])
def test_worker_killed_at_random_moments_loses_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        db = str(tmp_path / "state.sqlite")
    else:
        request.getfixturevalue("emulators")  # the processes inherit its environment
        db = f"firestore:k{uuid.uuid4().hex[:10]}-"
    state = open_store(db)
    seed_users(state)
    t0 = time.time()
    rng = random.Random(20261128)
    executors = [spawn("executor", db, tmp_path, t0, f"executor{i}") for i in range(2)]
    zygote = spawn("zygote", db, tmp_path, t0, "zygote", stdin=subprocess.PIPE)
    assert zygote.stdin is not None and zygote.stdout is not None
    kills_with_open_positions = 0
    first_cycle_s: list[float] = []
    try:
        for n in range(KILLS):
            before = heartbeat_cycles(state)
            zygote.stdin.write(f"spawn worker{n}\n".encode())
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            spawned = time.monotonic()
            # a random moment once the loop runs: mid-reconcile, mid-cycle, mid-exit...
            try:
                wait_until(
                    lambda b=before: heartbeat_cycles(state) != b,  # type: ignore[misc]
                    180,
                    f"worker {n} cycling",
                )
            except AssertionError as exc:  # say why: the workers' log (the zygote's stderr)
                log_tail = (tmp_path / "zygote.log").read_text(errors="replace")[-4000:]
                raise AssertionError(f"{exc}; first cycles {first_cycle_s}\n{log_tail}") from exc
            first_cycle_s.append(round(time.monotonic() - spawned, 2))
            print(f"worker {n}: first cycle after {first_cycle_s[-1]} s", flush=True)
            # kill while something is at stake: wait (bounded) for an open position first
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not state.query(
                Collections.POSITIONS, [Filter("status", "==", "open")]
            ):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
            open_now = state.query(Collections.POSITIONS, [Filter("status", "==", "open")])
            kills_with_open_positions += bool(open_now)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda p=pid: not alive(p), 30, f"worker {n} killed")  # type: ignore[misc]
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
        (tmp_path / "stop").write_text("stop")
        for proc in executors:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert all(p.returncode == 0 for p in executors), (tmp_path / "executor0.log").read_text()
    # the last worker closes everything (kill switch) and then stops
    for user_id in USERS:
        state.update(Collections.USERS, user_id, {"kill_switch": True})
    final = spawn("worker", db, tmp_path, t0, "final")
    try:
        wait_until(
            lambda: not state.query(Collections.POSITIONS, [Filter("status", "==", "open")]),
            180,
            "every position closed",
        )
        time.sleep(0.5)  # one more cycle and reconciliation pass
    finally:
        final.send_signal(signal.SIGTERM)
        final.wait(timeout=30)
    try:
        summary = check_invariants(state, t0)
    except AssertionError:
        import json

        dump = {
            "reconciliations": [
                r for r in state.query(Collections.RECONCILIATIONS) if not r.get("clean")
            ],
            "errors": state.query(Collections.EVENTS, [Filter("type", "==", "system_error")]),
        }
        (Path("/tmp/i8p-kill-dump.json")).write_text(json.dumps(dump, default=str, indent=1))
        raise
    print(f"worker kills: {KILLS}, with open positions: {kills_with_open_positions}; {summary}")
    assert kills_with_open_positions >= KILLS // 2, "the kills hit a loop with open positions"
    getattr(state, "close", lambda: None)()


def check_invariants(state: StateStore, t0: float) -> dict[str, object]:
    # a fresh reader of the shared ledger, at a time after everything happened
    clock = SimulatedClock(ScaledClock(t0).now())
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    exchange = ReplayExchange(source, clock, ledger=state)
    executions = state.query(Collections.EXECUTIONS)
    positions = {d["id"]: d for d in state.query(Collections.POSITIONS)}
    accepted = [e for e in executions if e.get("outcome") == "accepted"]
    assert accepted, "the executors opened positions"
    assert all(e.get("completed_at") for e in executions)
    lost = [e["id"] for e in accepted if e.get("position_id") not in positions]
    assert lost == []
    assert all(p["status"] == "closed" for p in positions.values())
    # 0 adopted: every exchange position had its record (reconciliation never found one
    # that no executor recorded or was still recording)
    adopted = [p for p in positions if p.startswith("adopted-")]
    assert adopted == [], adopted
    closed_events: dict[str, int] = {}
    for event in state.query(Collections.EVENTS, [Filter("type", "==", "position_closed")]):
        pid = event["payload"]["position_id"]
        closed_events[pid] = closed_events.get(pid, 0) + 1
    assert closed_events == dict.fromkeys(positions, 1)
    for user_id in USERS:
        orders = exchange.orders(user_id)
        assert exchange.fetch_positions(user_id) == []
        assert exchange.fetch_open_orders(user_id) == []  # 0 orphan orders
        filled_reducing: dict[str, float] = {}
        for order in orders:
            if order.reduce_only and order.status is OrderStatus.FILLED:
                filled_reducing[order.client_order_id] = order.filled
        # account level: per symbol, what every filled order opened was reduced exactly
        # once (reduce-only fills never overshoot, and the account ends flat)
        net: dict[str, float] = {}
        for order in orders:
            if order.status is OrderStatus.FILLED:
                sign = -1.0 if order.reduce_only else 1.0
                net[order.symbol] = net.get(order.symbol, 0.0) + sign * order.filled
        assert all(abs(v) < 1e-6 for v in net.values()), net
        for position in (p for p in positions.values() if p["user_id"] == user_id):
            cids = {client_order_id(position["signal_id"], user_id, leg) for leg in LEGS}
            closed_amount = sum(v for c, v in filled_reducing.items() if c in cids)
            # closed exactly once: all of it, not twice
            detail = {k: position[k] for k in ("id", "exit_reason", "exit_order_id", "exit_detail")}
            mine = [o for o in orders if o.client_order_id in cids]
            assert closed_amount == pytest.approx(position["amount"]), (detail, mine)
            exits = [o for o in orders if o.id == position["exit_order_id"]]
            assert [o.status for o in exits] == [OrderStatus.FILLED], position["id"]
    source.close()
    reasons: dict[str, int] = {}
    for p in positions.values():
        reasons[p["exit_reason"]] = reasons.get(p["exit_reason"], 0) + 1
    outcomes: dict[str, int] = {}
    for e in executions:
        outcomes[e["outcome"]] = outcomes.get(e["outcome"], 0) + 1
        for r in e.get("reasons", []):
            outcomes[f"reason:{r}"] = outcomes.get(f"reason:{r}", 0) + 1
    return {
        "executions": outcomes,
        "positions": len(positions),
        "adopted": len(adopted),
        "closed_by": reasons,
        "lost": 0,
        "double_closed": 0,
        "orphan_orders": 0,
    }
