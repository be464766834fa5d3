"""Shared world for the executor / monitor / reconciliation failure tests.

The real replay exchange over the bundled sample, its paper ledger in a SQLite file (so a
second exchange instance, like a restarted worker, sees the same accounts), with faults
injected by a thin wrapper (``Faulty``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.adapters.exchange_batch import orders_one_by_one
from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.ids import client_order_id, execution_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import Execution, Order, OrderRequest, OrderStatus
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import BusMessage, Exchange, Filter, OrderRejected
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.execute import ExecuteSignalForUser
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Topics

START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SYMBOL = "ETH/USDT:USDT"


class Crash(BaseException):
    """A process dying mid-way (not an ``Exception``: nothing may catch it)."""


Rule = Callable[[str, OrderRequest], BaseException | None]


@dataclass
class Faulty:
    """The replay exchange with injected faults on ``create_order``.

    ``rules`` see (account, request) and return the exception to raise (None = pass).
    ``partial`` maps a client order id to the fraction that fills (the rest rests until
    cancelled).
    """

    inner: ReplayExchange
    rules: list[Rule] = field(default_factory=list)
    partial: dict[str, float] = field(default_factory=dict)
    _partial_orders: dict[str, Order] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_order(self, account: str, request: OrderRequest) -> Order:
        for rule in self.rules:
            exc = rule(account, request)
            if exc is not None:
                raise exc
        fraction = self.partial.get(request.client_order_id)
        if fraction is None:
            return self.inner.create_order(account, request)
        if request.client_order_id in self._partial_orders:
            return self._partial_orders[request.client_order_id].model_copy()
        part = request.model_copy(update={"amount": request.amount * fraction})
        order = self.inner.create_order(account, part)
        reported = order.model_copy(update={"amount": request.amount, "status": OrderStatus.OPEN})
        self._partial_orders[request.client_order_id] = reported
        return reported.model_copy()

    def create_orders(
        self, requests: Sequence[tuple[str, OrderRequest]]
    ) -> list[Order | OrderRejected]:
        # one by one through the faults (the inner batch would bypass them)
        return orders_one_by_one(self.create_order, requests)

    def cancel_order(self, account: str, order_id: str) -> Order:
        for cid, order in self._partial_orders.items():
            if order.id == order_id:
                self._partial_orders[cid] = order.model_copy(
                    update={"status": OrderStatus.CANCELED}
                )
                return self._partial_orders[cid].model_copy()
        return self.inner.cancel_order(account, order_id)


def leg_is(signal_id: str, user_id: str, leg: str) -> Callable[[OrderRequest], bool]:
    cid = client_order_id(signal_id, user_id, leg)
    return lambda request: request.client_order_id == cid


@dataclass
class World:
    clock: SimulatedClock
    source: DuckDBMarketStore
    exchange: ReplayExchange
    faulty: Faulty
    market: DuckDBMarketStore
    state: SqliteStateStore
    bus: InMemoryBus
    blobs: LocalBlobStore
    executor: ExecuteSignalForUser
    monitor: ExitMonitor

    def add_user(self, user_id: str) -> User:
        user = User.with_profile(user_id, RiskProfile.AGGRESSIVE)
        self.state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        return user

    def signal(self, stop_pct: float = 1.0) -> OpportunitySignal:
        price = self.exchange.fetch_tickers([SYMBOL])[0].last
        tps = [
            TakeProfitLevel(
                price=price * (1 + r * stop_pct / 100), pct=r * stop_pct, size_fraction=f
            )
            for r, f in ((3.0, 0.5), (4.0, 0.3), (5.0, 0.2))
        ]
        now = self.clock.now()
        signal = OpportunitySignal(
            id=f"sig-{self.clock.now_ms()}",
            symbol=SYMBOL,
            exchange="binance",
            market_type=MarketType.PERP,
            direction=Direction.LONG,
            entry_price=price,
            entry_low=price * 0.999,
            entry_high=price * 1.001,
            stop_loss=price * (1 - stop_pct / 100),
            stop_loss_pct=stop_pct,
            take_profits=tps,
            reward_risk=3.7,
            confidence=0.8,
            created_at=now,
            expires_at=now + timedelta(minutes=20),
            strategy="consensus",
        )
        self.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
        return signal

    def message(self, signal: OpportunitySignal, user: User, attempt: int = 1) -> BusMessage:
        data = ExecutionRequest(signal_id=signal.id, user_id=user.user_id).model_dump(mode="json")
        return BusMessage(
            topic=Topics.EXECUTIONS,
            message_id=str(attempt),
            data=data,
            attributes={"dedupe_key": execution_id(signal.id, user.user_id)},
            ordering_key=user.user_id,
            delivery_attempt=attempt,
        )

    def record(self, signal: OpportunitySignal, user: User) -> Execution:
        doc = self.state.get(Collections.EXECUTIONS, execution_id(signal.id, user.user_id))
        assert doc is not None
        return Execution.model_validate(doc)

    def events(self, event_type: EventType) -> list[dict[str, Any]]:
        return self.state.query(Collections.EVENTS, [Filter("type", "==", event_type.value)])

    def open_positions(self) -> list[dict[str, Any]]:
        return self.state.query(Collections.POSITIONS, [Filter("status", "==", "open")])


def make_world(tmp_path: Path) -> Iterator[World]:
    """A world; the state store (and so the paper ledger) is a SQLite file."""
    clock = SimulatedClock(START)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    market = DuckDBMarketStore(tmp_path / "market")
    state = SqliteStateStore(tmp_path / "state.sqlite")
    exchange = ReplayExchange(source, clock, ledger=state)
    faulty = Faulty(exchange)
    bus = InMemoryBus(max_delivery_attempts=5)
    blobs = LocalBlobStore(tmp_path / "blobs")
    CollectMarketData(exchange, market, clock, backfill_minutes=60).run()
    as_exchange = cast(Exchange, faulty)
    yield World(
        clock=clock,
        source=source,
        exchange=exchange,
        faulty=faulty,
        market=market,
        state=state,
        bus=bus,
        blobs=blobs,
        executor=ExecuteSignalForUser(state, as_exchange, market, bus, blobs, clock),
        monitor=ExitMonitor(state, as_exchange, bus, blobs, clock),
    )
    market.close()
    source.close()
    state.close()


def entry_orders(world: World, account: str) -> list[Order]:
    return [o for o in world.exchange.orders(account) if not o.reduce_only]
