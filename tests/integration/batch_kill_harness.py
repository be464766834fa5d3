"""A batch of executions killed mid-way, in its own process (``test_execute_batch_kill.py``).

``python -m tests.integration.batch_kill_harness DIR METHOD N`` runs the batch of
``DIR/state.sqlite`` (users and signal seeded by the test) and dies (``os._exit``, no
cleanup, as SIGKILL) right after the N-th call of ``METHOD`` on the state store or the
exchange returned: the side effects of that call are done, nothing after it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.users import RiskProfile, TradingMode, User
from prometheus_trader.ports import BusMessage, Exchange, StateStore
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.dispatch import ExecutionBatchRequest
from prometheus_trader.usecases.execute_batch import BatchReport, ExecuteSignalBatch
from prometheus_trader.usecases.names import Collections, Topics

START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SYMBOL = "ETH/USDT:USDT"
SIGNAL_ID = "sig-kill"
PROFILES = list(RiskProfile)
# the batch's calls a kill may follow (state store and exchange)
WATCHED = ("get_many", "create_many", "set_many", "create_orders", "fetch_balances")


def users() -> list[User]:
    """Mixed profiles (the conservative third rejects the 2.2R signal) and an adviser."""
    mixed = [User.with_profile(f"k{i:02d}", PROFILES[i % 3]) for i in range(9)]
    return [*mixed, User.with_profile("adviser", RiskProfile.MODERATE, mode=TradingMode.ADVISORY)]


class Killer:
    """Proxies a port; the process dies right after the N-th call of ``method``."""

    def __init__(self, inner: object, method: str, nth: int, calls: dict[str, int]) -> None:
        self._inner, self._method, self._nth, self._calls = inner, method, nth, calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in WATCHED:
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            self._calls[name] = self._calls.get(name, 0) + 1
            if name == self._method and self._calls[name] == self._nth:
                os._exit(137)  # killed: no cleanup, no commit of anything later
            return result

        return call


@contextmanager
def world(folder: Path) -> Iterator[tuple[SqliteStateStore, ReplayExchange, DuckDBMarketStore]]:
    """The state file (the paper ledger lives in it) and the sample as market and venue."""
    clock = SimulatedClock(START)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    state = SqliteStateStore(folder / "state.sqlite")
    try:
        yield state, ReplayExchange(source, clock, ledger=state), source
    finally:
        state.close()
        source.close()


def seed(folder: Path) -> None:
    """Users and the signal."""
    with world(folder) as (state, exchange, _):
        for user in users():
            state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        price = exchange.fetch_tickers([SYMBOL])[0].last
        levels = ((2.2, 0.5), (3.0, 0.3), (4.0, 0.2))
        signal = OpportunitySignal(
            id=SIGNAL_ID,
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
                TakeProfitLevel(price=price * (1 + r / 100), pct=r, size_fraction=f)
                for r, f in levels
            ],
            reward_risk=sum(r * f for r, f in levels),
            confidence=0.8,
            created_at=START,
            expires_at=START + timedelta(minutes=20),
            strategy="consensus",
        )
        state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))


def run_batch(
    folder: Path,
    attempt: int,
    wrap: Callable[[object], object] = lambda port: port,
) -> BatchReport:
    """Deliver the batch message (``attempt``) to a fresh executor over ``folder``."""
    with world(folder) as (state, exchange, market):
        executor = ExecuteSignalBatch(
            cast(StateStore, wrap(state)),
            cast(Exchange, wrap(exchange)),
            market,
            InMemoryBus(),
            LocalBlobStore(folder / "blobs"),
            SimulatedClock(START),
        )
        request = ExecutionBatchRequest(signal_id=SIGNAL_ID, user_ids=[u.user_id for u in users()])
        message = BusMessage(
            topic=Topics.EXECUTIONS,
            message_id=f"batch-{attempt}",
            data=request.model_dump(mode="json"),
            ordering_key="bucket-0-of-1",
            delivery_attempt=attempt,
        )
        return executor.handle_batch(message)


def main(argv: list[str]) -> int:
    folder, method, nth = Path(argv[0]), argv[1], int(argv[2])
    calls: dict[str, int] = {}
    run_batch(folder, 1, lambda port: Killer(port, method, nth, calls))
    return 3  # the kill point was never reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
