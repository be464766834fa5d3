"""Processes for the worker-kill proof (``test_worker_kill.py``).

``python -m tests.integration.kill_harness executor|worker|zygote STORE STATE_DIR T0 [ID]``
(STORE: a SQLite file, or ``firestore:<collection prefix>`` on the emulator)

``zygote`` imports everything once, then forks a fresh worker process for every
``spawn NAME`` line on stdin and answers with its pid (a restart then costs a fork, not
an interpreter start; the forked worker builds its own adapters and connections).

Every process builds its own adapters over one SQLite state file (the paper ledger lives
in it) and the bundled sample, on a shared *scaled* clock: simulated time =
``START + (wall - T0) × SPEED``, the same in every process. The executor publishes a
signal per symbol every ``SIGNAL_EVERY_MIN`` simulated minutes (create-if-absent: racing
executors share it) and executes it for every user; the worker runs the real
``run_worker`` loop (reconcile at start and on a schedule, exit cycles). A file
``STATE_DIR/stop`` ends the executors.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.worker import run_worker
from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import BusMessage, StateStore
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.execute import EntryPending, ExecuteSignalForUser
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Topics

START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SPEED = 300.0  # simulated seconds per wall second
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT")
USERS = ("u1", "u2")
SIGNAL_EVERY_MIN = 5
STOP_PCT = 0.25


class ScaledClock:
    """The shared simulated clock (every process computes the same now)."""

    def __init__(self, t0: float) -> None:
        self._t0 = t0
        self._start_ms = int(START.timestamp() * 1000)

    def now_ms(self) -> int:
        return self._start_ms + int((time.time() - self._t0) * SPEED * 1000)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)


@dataclass
class Parts:
    clock: ScaledClock
    state: StateStore
    exchange: ReplayExchange
    source: DuckDBMarketStore
    bus: InMemoryBus
    blobs: LocalBlobStore


def open_store(spec: str) -> StateStore:
    """``firestore:<prefix>`` (the emulator in the environment) or a SQLite file path."""
    if spec.startswith("firestore:"):
        from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

        return FirestoreStateStore(prefix=spec.removeprefix("firestore:"))
    return SqliteStateStore(Path(spec))


def parts(db: str, state_dir: Path, t0: float, name: str) -> Parts:
    clock = ScaledClock(t0)
    state = open_store(db)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    exchange = ReplayExchange(source, clock, ledger=state)
    return Parts(
        clock, state, exchange, source, InMemoryBus(), LocalBlobStore(state_dir / f"blobs-{name}")
    )


def seed_users(state: StateStore) -> None:
    for user_id in USERS:
        user = User.with_profile(user_id, RiskProfile.AGGRESSIVE)
        # this harness proves crash safety, not the risk rules: breakers that would stop
        # the users trading (and so leave the kills nothing open to hit) are set wide
        user = user.model_copy(
            update={
                "limits": user.limits.model_copy(
                    update={
                        # small positions: a day of stop-outs stays under the drawdown ladder
                        "risk_per_trade_pct": 0.1,
                        "daily_loss_limit_pct": 50.0,
                        "max_consecutive_losses": 1000,
                        "max_drawdown_pct": 90.0,
                        "max_position_pct": 1000.0,
                        "max_exposure_pct": 10_000.0,
                        "max_open_positions": 50,
                    }
                )
            }
        )
        state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))


def signal_id(slot: int, symbol: str) -> str:
    """The deterministic id racing executors share for one slot's signal on a symbol."""
    return f"sig-{slot}-{symbol.split('/')[0]}"


def make_signal(p: Parts, symbol: str, slot: int) -> OpportunitySignal:
    price = p.exchange.fetch_tickers([symbol])[0].last
    direction = Direction.LONG if (slot + len(symbol)) % 2 == 0 else Direction.SHORT
    sign = direction.sign
    tps = [
        TakeProfitLevel(
            price=price * (1 + sign * r * STOP_PCT / 100), pct=r * STOP_PCT, size_fraction=f
        )
        for r, f in ((3.0, 0.5), (4.0, 0.3), (5.0, 0.2))
    ]
    now = p.clock.now()
    return OpportunitySignal(
        id=signal_id(slot, symbol),
        symbol=symbol,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=direction,
        entry_price=price,
        entry_low=price * 0.999,
        entry_high=price * 1.001,
        stop_loss=price * (1 - sign * STOP_PCT / 100),
        stop_loss_pct=STOP_PCT,
        take_profits=tps,
        reward_risk=3.7,
        confidence=0.8,
        created_at=now,
        expires_at=now + timedelta(minutes=20),
        strategy="consensus",
    )


def executor(p: Parts, state_dir: Path) -> None:
    """Publish this slot's signals, then execute each user's executions in signal order,
    one at a time per user: what the ``executions`` ordering key (= user) guarantees.
    Racing executor processes then race on the same execution, never on two of a user's
    executions at once (the risk gate's one-position-per-symbol rule relies on that)."""
    execute = ExecuteSignalForUser(p.state, p.exchange, p.source, p.bus, p.blobs, p.clock)
    slot_ms = SIGNAL_EVERY_MIN * 60_000
    first_slot = int(START.timestamp() * 1000) // slot_ms
    done: set[str] = set()
    while not (state_dir / "stop").exists():
        slot = p.clock.now_ms() // slot_ms
        for symbol in SYMBOLS:
            signal = make_signal(p, symbol, slot)
            p.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
        # signal ids are known, so no scan of the growing collection (under load that scan
        # starved the emulator); a slot a loaded machine skipped has no signal: once no
        # lagging executor can still create it, it is done
        for user_id in USERS:
            for slot_n in range(first_slot, slot + 1):
                for symbol in SYMBOLS:
                    sid = signal_id(slot_n, symbol)
                    key = execution_id(sid, user_id)
                    if key in done:
                        continue
                    if p.state.get(Collections.SIGNALS, sid) is None:
                        if slot_n < slot - 1:
                            done.add(key)
                        continue
                    record = p.state.get(Collections.EXECUTIONS, key)
                    if record is not None and record.get("completed_at"):
                        done.add(key)
                        continue
                    if not _execute(execute, sid, user_id):
                        break  # this user's next execution only once this one is done
                    done.add(key)
                else:
                    continue
                break
        time.sleep(0.1)


def _execute(execute: ExecuteSignalForUser, sid: str, user_id: str) -> bool:
    """Deliver one execution as the bus would; False while its entry is still pending."""
    key = execution_id(sid, user_id)
    data = ExecutionRequest(signal_id=sid, user_id=user_id)
    message = BusMessage(
        topic=Topics.EXECUTIONS,
        message_id=key,
        data=data.model_dump(mode="json"),
        attributes={"dedupe_key": key},
        ordering_key=user_id,
    )
    try:
        execute.handle(message)
    except EntryPending:
        return False
    return True


def worker(p: Parts) -> None:
    # the executors here retry an execution until it completes (nothing is dead-lettered),
    # and one attempt can wait out an emulator lock (30 s wall = 2.5 simulated hours)
    monitor = ExitMonitor(
        p.state,
        p.exchange,
        p.bus,
        p.blobs,
        p.clock,
        abandoned_after=timedelta(days=365),
        close_concurrency=4,  # kills land in the middle of concurrent closes too
    )

    @dataclass
    class Runtime:
        monitor: ExitMonitor

    run_worker(Runtime(monitor), threading.Event(), 0.05, reconcile_every=5.0)


def zygote(db: str, state_dir: Path, t0: float) -> None:
    """Fork one worker per ``spawn NAME`` line; children are reaped automatically."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command != "spawn":
            break
        pid = os.fork()
        if pid == 0:  # the worker: its own adapters, connections and threads
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                worker(parts(db, state_dir, t0, name))
            finally:
                os._exit(0)
        print(pid, flush=True)


def main(argv: list[str]) -> int:
    role, db, state_dir, t0 = argv[0], argv[1], Path(argv[2]), float(argv[3])
    name = argv[4] if len(argv) > 4 else role
    if role == "zygote":
        zygote(db, state_dir, t0)
        return 0
    p = parts(db, state_dir, t0, name)
    if role == "executor":
        executor(p, state_dir)
    elif role == "worker":
        (state_dir / f"{name}.started").write_text(str(time.time()))
        worker(p)

    else:
        raise SystemExit(f"unknown role {role}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
