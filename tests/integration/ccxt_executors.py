"""Executor processes for the ccxt acceptance runs: the real ``ExecuteSignalForUser``
wired with ``CcxtExchange`` on a stand-in and a SQLite state store file shared by every
process. Imported by spawned processes (no test state at import)."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.ccxt import CcxtExchange, Credentials, OrderClaims, RetryPolicy
from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import BusMessage
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.execute import ExecuteSignalForUser
from prometheus_trader.usecases.names import Collections, Topics

SYMBOL = "BTC/USDT:USDT"
FAST = RetryPolicy(attempts=5, base_s=0.01, max_wait_s=0.05)


VENUES = ("binance", "bybit")  # the stand-ins: tests/standins/binance_usdm.py, bybit.py


def standin_keys(venue: str) -> Callable[[str], Credentials]:
    """Each stand-in account's key (the secret the stand-in checks signatures with)."""
    return lambda account: Credentials(venue, "demo", account, f"{account}-secret")


def make_exchange(
    urls: dict[str, str],
    state: SqliteStateStore | None = None,
    timeout_ms: int = 300,
    venue: str = "binance",
) -> CcxtExchange:
    """The adapter as deployed: order claims in the shared state store."""
    return CcxtExchange(
        venue,
        "demo",
        standin_keys(venue),
        urls=urls,
        retry=FAST,
        timeout_ms=timeout_ms,
        rate_limit=False,
        claims=OrderClaims(state) if state is not None else None,
    )


def make_executor(
    urls: dict[str, str], state_path: Path, blobs: Path, now_ms: int, venue: str = "binance"
) -> ExecuteSignalForUser:
    """One executor instance: its own exchange client, state connection, clock."""
    clock = SimulatedClock(datetime.fromtimestamp(now_ms / 1000, UTC))
    state = SqliteStateStore(state_path)
    return ExecuteSignalForUser(
        state,
        make_exchange(urls, state, venue=venue),
        DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True),
        InMemoryBus(),
        LocalBlobStore(blobs),
        clock,
    )


def seed(state: SqliteStateStore, user_id: str, price: float, now_ms: int, n: int) -> str:
    """A user and a long BTC signal (stop 1 % below, take-profit 3 % above)."""
    state.create(
        Collections.USERS,
        user_id,
        User.with_profile(user_id, RiskProfile.AGGRESSIVE).model_dump(mode="json"),
    )
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    signal = long_signal(f"sig-{n:04d}-{user_id}", price, now)
    state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
    return signal.id


def long_signal(signal_id: str, price: float, now: datetime) -> OpportunitySignal:
    """A long BTC signal at ``price``: stop 1 % below, take-profit 3 % above."""
    return OpportunitySignal(
        id=signal_id,
        symbol=SYMBOL,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=Direction.LONG,
        entry_price=price,
        entry_low=price * 0.999,
        entry_high=price * 1.001,
        stop_loss=round(price * 0.99, 1),
        stop_loss_pct=1.0,
        take_profits=[TakeProfitLevel(price=round(price * 1.03, 1), pct=3.0, size_fraction=1.0)],
        reward_risk=3.0,
        confidence=0.8,
        created_at=now,
        expires_at=now + timedelta(minutes=20),
        strategy="consensus",
    )


def message(signal_id: str, user_id: str, attempt: int = 1) -> BusMessage:
    return BusMessage(
        topic=Topics.EXECUTIONS,
        message_id=f"m-{signal_id}-{attempt}",
        data=ExecutionRequest(signal_id=signal_id, user_id=user_id).model_dump(mode="json"),
        attributes={"dedupe_key": execution_id(signal_id, user_id)},
        delivery_attempt=attempt,
    )


def racer_process(
    n_threads: int,
    urls: dict[str, str],
    state_path: str,
    blobs: str,
    now_ms: int,
    tasks: list[tuple[str, str]],
    barrier: Any,
    results: Any,
    venue: str = "binance",
) -> None:
    """Run ``n_threads`` executors; for each task all of them handle the same message at
    once (the barrier spans every process)."""
    executors = [
        make_executor(
            urls, Path(state_path), Path(blobs) / f"{threading.get_ident()}-{i}", now_ms, venue
        )
        for i in range(n_threads)
    ]

    def run(ex: ExecuteSignalForUser, signal_id: str, user_id: str, out: list[str]) -> None:
        barrier.wait()
        try:
            done = ex.handle(message(signal_id, user_id))
            out.append(f"{done.outcome}:{done.position_id is not None}")
        except Exception as exc:  # recorded for the test, not swallowed
            out.append(f"error:{type(exc).__name__}:{exc}")
            traceback.print_exc()

    for signal_id, user_id in tasks:
        outcomes: list[str] = []
        threads = [
            threading.Thread(target=run, args=(ex, signal_id, user_id, outcomes))
            for ex in executors
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results.put((signal_id, outcomes))
