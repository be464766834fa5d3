"""`prometheus-trader stack up`, the worker killed with SIGKILL at random moments and
restarted each time: 0 lost, 0 double-closed positions, 0 orphan orders.

The real emulated stack (``app/stack.py``): Firestore, Pub/Sub and Cloud Storage
emulators, every function served by functions-framework behind push subscriptions, the
worker, each its own process group, on one clock (``--seed-demo`` pins it to the bundled
sample; ``PROMETHEUS_CLOCK_SPEED`` runs it faster than real time and ``stack.json``'s
anchor keeps a restarted worker on the same time). The paper ledger lives in Firestore.

The test is the outside world: it publishes signals on ``signals`` (what the ranker
does), so the dispatcher and executor functions open positions for two users; it kills
the worker process (its pid is its process group in ``stack.json``) at ``KILLS`` random
moments of its loop and restarts it each time with ``stack restart worker``'s Python
entry (what Cloud Run does to a crashed instance). Then it stops publishing, turns both
users' kill switch on, lets the last worker close everything and checks the ledger:

* 0 lost: every accepted execution has its position; every position ends closed;
* 0 double-closed: each position's filled reduce-only orders add up to its amount
  exactly once, and it has one ``position_closed`` event;
* 0 orphan orders: no resting order and no exchange position is left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.support import run_cli

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.app.cloud import ShiftedClock
from prometheus_trader.app.emulators import live_members
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.stack import StackInfo, restart
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import OrderStatus
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import Filter, StateStore
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.rank import publish_signal

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("PROMETHEUS_TEST_WORKER_KILLS", "20"))
# simulated seconds per wall second: a signal's 30 minutes must outlast the trip through
# Pub/Sub, dispatcher and executor functions on a loaded 2-core machine
SPEED = 20.0
SIGNAL_EVERY_MIN = 10
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT")
USERS = ("k1", "k2")
STOP_PCT = 0.25
LEGS = ("sl", "tp1", "tp2", "tp3", "exit", "flatten")
# the stack's own knobs (PROMETHEUS_* of the `stack up` process are the stack's)
STACK_ENV = {
    "PROMETHEUS_CLOCK_SPEED": repr(SPEED),
    "PROMETHEUS_MONITOR_INTERVAL_SECONDS": "0.2",
    "PROMETHEUS_RECONCILE_INTERVAL_SECONDS": "1.5",
    # the executor's data-freshness check reads the market store: the sample is it
    "PROMETHEUS_MARKET_PREFIX": "replay",
    "PROMETHEUS_LOG_LEVEL": "WARNING",
}


# ----------------------------------------------------------------------- the stack
def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, StackInfo]]:
    """`stack up --seed-demo` in its own process (it exits; the stack stays up); down
    after the test, whatever happened."""
    var = tmp_path / "var"
    env = {**STACK_ENV, "PROMETHEUS_MARKET_CACHE_DIR": str(tmp_path / "market-cache")}
    up = run_cli("stack", "up", "--seed-demo", "--var", str(var), cwd=tmp_path, env=env)
    try:
        assert up.returncode == 0, up.stderr[-3000:] + up.stdout[-2000:]
        info = StackInfo.model_validate_json((var / "stack" / "stack.json").read_text())
        for name, value in info.env.items():
            if name.endswith("_HOST") or name == "GOOGLE_CLOUD_PROJECT":
                monkeypatch.setenv(name, value)
        yield Settings(var_dir=var), info
    finally:
        down = run_cli("stack", "down", "--var", str(var), cwd=tmp_path)
        assert down.returncode == 0, down.stderr


def seed_users(state: StateStore) -> None:
    """Two paper users who trade every signal; the demo users step aside."""
    for doc in state.query(Collections.USERS):
        state.update(Collections.USERS, doc["user_id"], {"active": False})
    for user_id in USERS:
        user = User.with_profile(user_id, RiskProfile.AGGRESSIVE)
        # this proves crash safety, not the risk rules: the breakers are set wide
        limits = user.limits.model_copy(
            update={
                "risk_per_trade_pct": 0.1,
                "daily_loss_limit_pct": 50.0,
                "max_consecutive_losses": 1000,
                "max_drawdown_pct": 90.0,
                "max_position_pct": 1000.0,
                "max_exposure_pct": 10_000.0,
                "max_open_positions": 50,
            }
        )
        user = user.model_copy(update={"limits": limits})
        state.create(Collections.USERS, user_id, user.model_dump(mode="json"))


def stack_clock(info: StackInfo) -> ShiftedClock:
    """The services' clock, computed as they compute it."""
    env = info.env
    return ShiftedClock(
        datetime.fromisoformat(env["PROMETHEUS_CLOCK_START"]),
        speed=float(env["PROMETHEUS_CLOCK_SPEED"]),
        anchor=datetime.fromisoformat(env["PROMETHEUS_CLOCK_ANCHOR"]),
    )


class Publisher:
    """The ranker's step, from outside: every 10 simulated minutes one signal per symbol
    (stored, then published on ``signals``), alternating long and short."""

    def __init__(self, info: StackInfo, state: StateStore) -> None:
        from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus

        self._clock = stack_clock(info)
        self._source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
        self._prices = ReplayExchange(self._source, self._clock)
        self._bus = PubSubBus(info.project)
        self._state = state
        self._stop = threading.Event()
        self.published = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._bus.close()
        self._source.close()

    def _run(self) -> None:
        done: set[int] = set()
        try:
            while not self._stop.is_set():
                slot = self._clock.now_ms() // (SIGNAL_EVERY_MIN * 60_000)
                if slot not in done:
                    done.add(slot)
                    for symbol in SYMBOLS:
                        publish_signal(self._state, self._bus, self._signal(symbol, slot))
                        self.published += 1
                self._stop.wait(0.2)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _signal(self, symbol: str, slot: int) -> OpportunitySignal:
        price = self._prices.fetch_tickers([symbol])[0].last
        direction = Direction.LONG if (slot + len(symbol)) % 2 == 0 else Direction.SHORT
        sign = direction.sign
        now = self._clock.now()
        return OpportunitySignal(
            id=f"stk-{slot}-{symbol.split('/')[0]}",
            symbol=symbol,
            exchange="binance",
            market_type=MarketType.PERP,
            direction=direction,
            entry_price=price,
            entry_low=price * 0.999,
            entry_high=price * 1.001,
            stop_loss=price * (1 - sign * STOP_PCT / 100),
            stop_loss_pct=STOP_PCT,
            take_profits=[
                TakeProfitLevel(
                    price=price * (1 + sign * r * STOP_PCT / 100), pct=r * STOP_PCT, size_fraction=f
                )
                for r, f in ((3.0, 0.5), (4.0, 0.3), (5.0, 0.2))
            ],
            reward_risk=3.7,
            confidence=0.8,
            created_at=now,
            expires_at=now + timedelta(minutes=30),
            strategy="consensus",
        )


def heartbeat_cycles(state: StateStore) -> int:
    doc = state.get(Collections.HEARTBEATS, "exit-monitor")
    return int(doc["cycles"]) if doc else -1


def open_positions(state: StateStore) -> list[dict[str, Any]]:
    return state.query(Collections.POSITIONS, [Filter("status", "==", "open")])


# ------------------------------------------------------------------------ the test
@pytest.mark.timeout(900)
def test_stack_worker_killed_at_random_moments_loses_nothing(
    stack: tuple[Settings, StackInfo], tmp_path: Path
) -> None:
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

    settings, info = stack
    state = FirestoreStateStore(project=info.project)
    seed_users(state)
    rng = random.Random(20261129)
    pid = info.process_groups["worker"]
    kills_with_open_positions = 0
    with Publisher(info, state) as publisher:
        for n in range(KILLS):
            before = heartbeat_cycles(state)
            # a random moment of the loop: mid-reconcile, mid-cycle, mid-exit ...
            wait_until(lambda b=before: heartbeat_cycles(state) != b, 120, f"worker {n} cycling")  # type: ignore[misc]
            # ... while something is at stake: wait (bounded) for an open position first
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not open_positions(state):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
            kills_with_open_positions += bool(open_positions(state))
            os.killpg(pid, signal.SIGKILL)
            wait_until(lambda p=pid: not live_members(p), 30, f"worker {n} killed")  # type: ignore[misc]
            pid = restart(settings, "worker", wait=False)
        assert publisher.error is None, publisher.error
    published = publisher.published
    # the last worker closes everything (kill switch), and every execution completes
    for user_id in USERS:
        state.update(Collections.USERS, user_id, {"kill_switch": True})

    def settled() -> bool:
        executions = state.query(Collections.EXECUTIONS)
        return not open_positions(state) and all(e.get("completed_at") for e in executions)

    try:
        wait_until(settled, 240, "every position closed and every execution completed")
        time.sleep(2.0)  # one more reconciliation pass, late redeliveries
        summary = check_invariants(state, stack_clock(info).now())
    except AssertionError:
        dump = {
            "reconciliations": [
                r for r in state.query(Collections.RECONCILIATIONS) if not r.get("clean")
            ],
            "errors": state.query(Collections.EVENTS, [Filter("type", "==", "system_error")]),
            "open": open_positions(state),
            "executions": state.query(Collections.EXECUTIONS),
        }
        (tmp_path / "dump.json").write_text(json.dumps(dump, default=str, indent=1))
        raise
    finally:
        state.close()
    restarted = StackInfo.model_validate_json(
        (settings.var_dir / "stack" / "stack.json").read_text()
    )
    print(
        f"stack worker kills: {KILLS}, with open positions: {kills_with_open_positions}; "
        f"signals published: {published}; {summary}"
    )
    assert restarted.restarts == {"worker": KILLS}
    assert kills_with_open_positions >= KILLS // 2, "the kills hit a loop with open positions"


def check_invariants(state: StateStore, now: datetime) -> dict[str, object]:
    """The ledger after everything happened (a fresh reader of the shared paper ledger)."""
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    exchange = ReplayExchange(source, SimulatedClock(now), ledger=state)
    executions = [e for e in state.query(Collections.EXECUTIONS) if e["user_id"] in USERS]
    positions = {d["id"]: d for d in state.query(Collections.POSITIONS)}
    accepted = [e for e in executions if e.get("outcome") == "accepted"]
    assert accepted, "the executor functions opened positions"
    lost = [e["id"] for e in accepted if e.get("position_id") not in positions]
    assert lost == []
    assert all(p["status"] == "closed" for p in positions.values())
    closed_events: Counter[str] = Counter(
        event["payload"]["position_id"]
        for event in state.query(Collections.EVENTS, [Filter("type", "==", "position_closed")])
    )
    assert dict(closed_events) == dict.fromkeys(positions, 1)
    for user_id in USERS:
        orders = exchange.orders(user_id)
        assert exchange.fetch_positions(user_id) == []
        assert exchange.fetch_open_orders(user_id) == []  # 0 orphan orders
        filled_reducing = {
            o.client_order_id: o.filled
            for o in orders
            if o.reduce_only and o.status is OrderStatus.FILLED
        }
        for position in (p for p in positions.values() if p["user_id"] == user_id):
            cids = {client_order_id(position["signal_id"], user_id, leg) for leg in LEGS}
            closed_amount = sum(v for c, v in filled_reducing.items() if c in cids)
            # closed exactly once: all of it, not twice
            mine = [o for o in orders if o.client_order_id in cids]
            assert closed_amount == pytest.approx(position["amount"]), (position["id"], mine)
            exits = [o for o in orders if o.id == position["exit_order_id"]]
            assert [o.status for o in exits] == [OrderStatus.FILLED], position["id"]
    source.close()
    outcomes = Counter(str(e["outcome"]) for e in executions)
    outcomes.update(f"reason:{r}" for e in executions for r in e.get("reasons", []))
    return {
        "executions": dict(outcomes),
        "positions": len(positions),
        "closed_by": dict(Counter(str(p["exit_reason"]) for p in positions.values())),
        "lost": 0,
        "double_closed": 0,
        "orphan_orders": 0,
    }
