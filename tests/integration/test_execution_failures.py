"""Every failure path of the executor and the exit monitor ends recorded and alerted.

One test per row of the table in docs/execution.md, on the real replay exchange over the
bundled sample, with faults injected by a thin wrapper (``Faulty``) around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.ids import client_order_id, execution_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import (
    DecisionOutcome,
    Execution,
    ExecutionPhase,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
)
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import BusMessage, Exchange, ExchangeError, Filter, OrderRejected
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.execute import EntryPending, ExecuteSignalForUser
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Topics

pytestmark = pytest.mark.integration

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


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = SimulatedClock(START)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    market = DuckDBMarketStore(tmp_path / "market")
    exchange = ReplayExchange(source, clock)
    faulty = Faulty(exchange)
    state = SqliteStateStore()
    bus = InMemoryBus(max_delivery_attempts=5)
    blobs = LocalBlobStore(tmp_path / "blobs")
    CollectMarketData(exchange, market, clock, backfill_minutes=60).run()
    as_exchange = cast(Exchange, faulty)
    yield World(
        clock=clock,
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


# ------------------------------------------------------------------------ executor
def test_repeat_resumes_the_recorded_decision_and_never_rejects_its_own_position(
    world: World,
) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    first = world.executor.handle(world.message(signal, user))
    assert first.outcome is DecisionOutcome.ACCEPTED and first.position_id
    # a racing attempt that read the record before it was completed resumes it
    world.state.update(Collections.EXECUTIONS, first.id, {"completed_at": None, "outcome": None})
    again = world.executor.handle(world.message(signal, user, attempt=2))
    assert again.outcome is DecisionOutcome.ACCEPTED
    assert again.position_id == first.position_id and again.reasons == []
    assert len(entry_orders(world, user.exchange_account)) == 1
    assert world.events(EventType.RISK_BREACH) == []


def test_crash_after_the_decision_resumes_it_without_rerunning_the_gate(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    world.faulty.rules.append(
        lambda _a, r: Crash() if leg_is(signal.id, user.user_id, "entry")(r) else None
    )
    with pytest.raises(Crash):
        world.executor.handle(world.message(signal, user))
    assert world.record(signal, user).phase is ExecutionPhase.DECIDED
    # the gate would now refuse (paused), but the decision was taken: it is carried out
    world.state.update(Collections.USERS, user.user_id, {"paused": True})
    world.faulty.rules.clear()
    done = world.executor.handle(world.message(signal, user, attempt=2))
    assert done.outcome is DecisionOutcome.ACCEPTED and done.position_id is not None
    assert len(entry_orders(world, user.exchange_account)) == 1


def test_crash_between_entry_and_stop_resumes_and_protects(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    world.faulty.rules.append(
        lambda _a, r: Crash() if leg_is(signal.id, user.user_id, "sl")(r) else None
    )
    with pytest.raises(Crash):
        world.executor.handle(world.message(signal, user))
    world.faulty.rules.clear()
    done = world.executor.handle(world.message(signal, user, attempt=2))
    assert done.outcome is DecisionOutcome.ACCEPTED
    (position,) = world.open_positions()
    stop = world.exchange.fetch_order(user.exchange_account, position["stop_order_id"])
    assert stop.status is OrderStatus.OPEN and stop.amount == position["amount"]
    assert len(entry_orders(world, user.exchange_account)) == 1


def test_stop_failure_flattens_records_failed_and_a_redelivery_opens_nothing(
    world: World,
) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    world.faulty.rules.append(
        lambda _a, r: (
            OrderRejected("stop would trigger immediately")
            if leg_is(signal.id, user.user_id, "sl")(r)
            else None
        )
    )
    done = world.executor.handle(world.message(signal, user))
    assert done.outcome is DecisionOutcome.FAILED and done.completed_at is not None
    assert done.error is not None and "protective order failed" in done.error
    assert done.position_id is None
    assert world.exchange.fetch_positions(user.exchange_account) == []
    assert world.exchange.fetch_open_orders(user.exchange_account) == []
    (alert,) = world.events(EventType.SYSTEM_ERROR)
    assert alert["severity"] == "critical" and "protective" in alert["payload"]["reason"]
    # the stop would now be accepted; a redelivery still opens nothing
    world.faulty.rules.clear()
    again = world.executor.handle(world.message(signal, user, attempt=2))
    assert again.outcome is DecisionOutcome.FAILED
    assert world.open_positions() == []
    assert world.exchange.fetch_positions(user.exchange_account) == []


def test_crash_while_flattening_is_finished_by_the_redelivery(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    world.faulty.rules.append(
        lambda _a, r: OrderRejected("no") if leg_is(signal.id, user.user_id, "sl")(r) else None
    )
    world.faulty.rules.append(
        lambda _a, r: Crash() if leg_is(signal.id, user.user_id, "flatten")(r) else None
    )
    with pytest.raises(Crash):
        world.executor.handle(world.message(signal, user))
    assert world.record(signal, user).phase is ExecutionPhase.FLATTENING
    assert world.exchange.fetch_positions(user.exchange_account) != []  # still exposed
    world.faulty.rules.clear()  # the stop would go in now: it must not
    done = world.executor.handle(world.message(signal, user, attempt=2))
    assert done.outcome is DecisionOutcome.FAILED
    assert world.open_positions() == []
    assert world.exchange.fetch_positions(user.exchange_account) == []
    assert world.exchange.fetch_open_orders(user.exchange_account) == []


def test_unfilled_entry_is_cancelled_recorded_and_alerted(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    price = signal.entry_price

    # the venue leaves the entry resting: a limit far below the market
    original = world.faulty.create_order

    def resting_entry(account: str, request: OrderRequest) -> Order:
        if leg_is(signal.id, user.user_id, "entry")(request):
            request = request.model_copy(update={"type": OrderType.LIMIT, "price": price * 0.9})
        return original(account, request)

    world.faulty.create_order = resting_entry  # type: ignore[method-assign]
    with pytest.raises(EntryPending):
        world.executor.handle(world.message(signal, user))
    world.clock.advance(10)
    with pytest.raises(EntryPending):
        world.executor.handle(world.message(signal, user, attempt=2))
    done = world.executor.handle(world.message(signal, user, attempt=3))
    assert done.outcome is DecisionOutcome.FAILED and done.error and "not filled" in done.error
    assert world.exchange.fetch_open_orders(user.exchange_account) == []
    (entry,) = world.exchange.orders(user.exchange_account)
    assert entry.status is OrderStatus.CANCELED
    (alert,) = world.events(EventType.SYSTEM_ERROR)
    assert "not filled" in alert["payload"]["reason"]
    assert world.open_positions() == []


def test_unfilled_entry_is_cancelled_after_the_timeout(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    original = world.faulty.create_order

    def resting_entry(account: str, request: OrderRequest) -> Order:
        if leg_is(signal.id, user.user_id, "entry")(request):
            request = request.model_copy(
                update={"type": OrderType.LIMIT, "price": signal.entry_price * 0.9}
            )
        return original(account, request)

    world.faulty.create_order = resting_entry  # type: ignore[method-assign]
    with pytest.raises(EntryPending):
        world.executor.handle(world.message(signal, user))
    world.clock.advance(61)
    done = world.executor.handle(world.message(signal, user, attempt=2))
    assert done.outcome is DecisionOutcome.FAILED
    assert world.exchange.fetch_open_orders(user.exchange_account) == []


def test_partial_fill_gets_protective_orders_sized_to_the_filled_quantity(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    world.faulty.partial[client_order_id(signal.id, user.user_id, "entry")] = 0.5
    done = world.executor.handle(world.message(signal, user))
    assert done.outcome is DecisionOutcome.ACCEPTED
    (position,) = world.open_positions()
    (held,) = world.exchange.fetch_positions(user.exchange_account)
    assert position["amount"] == pytest.approx(held.amount)
    stop = world.exchange.fetch_order(user.exchange_account, position["stop_order_id"])
    assert stop.amount == pytest.approx(held.amount)
    for tp_id in position["take_profit_order_ids"]:
        assert world.exchange.fetch_order(user.exchange_account, tp_id).amount <= held.amount


def test_exchange_rejection_of_the_entry_is_final(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    world.faulty.rules.append(lambda _a, _r: OrderRejected("insufficient margin (-2019)"))
    done = world.executor.handle(world.message(signal, user))
    assert done.outcome is DecisionOutcome.REJECTED and done.error
    assert world.executor.handle(world.message(signal, user, attempt=2)) == done
    assert len(world.events(EventType.SYSTEM_ERROR)) == 1
    assert world.exchange.orders(user.exchange_account) == []


# ------------------------------------------------------------------------- monitor
def open_for(world: World, *user_ids: str) -> list[User]:
    users = [world.add_user(u) for u in user_ids]
    signal = world.signal(stop_pct=2.0)
    for user in users:
        assert world.executor.handle(world.message(signal, user)).outcome is (
            DecisionOutcome.ACCEPTED
        )
    world.clock.advance(2)
    world.monitor.cycle()
    return users


def test_exit_failing_keeps_the_stop_alerts_and_other_users_still_exit(world: World) -> None:
    failing, healthy = open_for(world, "failing", "healthy")
    throttled = {"n": 0}

    def rate_limited(account: str, request: OrderRequest) -> BaseException | None:
        if account == failing.exchange_account and request.reduce_only:
            throttled["n"] += 1
            return ExchangeError("429 Too Many Requests (5 retries)")
        return None

    world.faulty.rules.append(rate_limited)
    for user in (failing, healthy):
        world.state.update(Collections.USERS, user.user_id, {"kill_switch": True})
    world.clock.advance(2)
    report = world.monitor.cycle()
    assert list(report.closed.values()) == ["kill_switch"]
    assert list(report.failed) and "429" in next(iter(report.failed.values()))
    (still_open,) = world.open_positions()
    assert still_open["user_id"] == failing.user_id
    stop = world.exchange.fetch_order(failing.exchange_account, still_open["stop_order_id"])
    assert stop.status is OrderStatus.OPEN, "the stop stays while the exit fails"
    alerts = world.events(EventType.SYSTEM_ERROR)
    assert len(alerts) == 1 and alerts[0]["severity"] == "critical"
    assert world.exchange.fetch_positions(healthy.exchange_account) == []
    # the venue recovers: the next cycle exits once
    world.faulty.rules.clear()
    world.clock.advance(2)
    report = world.monitor.cycle()
    assert list(report.closed.values()) == ["kill_switch"] and not report.failed
    assert world.exchange.fetch_positions(failing.exchange_account) == []
    assert world.exchange.fetch_open_orders(failing.exchange_account) == []
    exits = [o for o in world.exchange.orders(failing.exchange_account) if o.type.value == "market"]
    assert len(exits) == 2  # the entry and one exit


def test_one_broken_position_is_isolated_counted_and_alerted(world: World) -> None:
    broken, healthy = open_for(world, "broken", "healthy")
    (doc,) = [p for p in world.open_positions() if p["user_id"] == broken.user_id]
    world.state.update(Collections.POSITIONS, doc["id"], {"stop_order_id": "no-such-order"})
    world.state.update(Collections.USERS, healthy.user_id, {"kill_switch": True})
    world.clock.advance(2)
    report = world.monitor.cycle()
    assert list(report.closed.values()) == ["kill_switch"]
    assert list(report.failed) == [doc["id"]]
    heartbeat = world.state.get(Collections.HEARTBEATS, "exit-monitor")
    assert heartbeat is not None and heartbeat["failed_positions"] == 1
    (alert,) = world.events(EventType.SYSTEM_ERROR)
    assert alert["payload"]["position_id"] == doc["id"]
