"""Use-cases through the real embedded adapters over the bundled real sample.

These exercise the public entry points (``handle``/``run``/``cycle``) the functions and the
pipeline call: fan-out, idempotency under redelivery, the risk gate, exits, exactly-once
evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn, cast

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import DecisionOutcome, RiskCode
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.domain.watchlist import WatchlistEntry
from prometheus_trader.ports import BusMessage, Exchange, Filter, OrderRejected
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.dispatch import DispatchSignal, ExecutionRequest
from prometheus_trader.usecases.evaluate import EvaluateClosedPosition
from prometheus_trader.usecases.execute import ExecuteSignalForUser
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Subscriptions, Topics

pytestmark = pytest.mark.integration

START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SYMBOL = "ETH/USDT:USDT"


@dataclass
class World:
    clock: SimulatedClock
    source: DuckDBMarketStore
    market: DuckDBMarketStore
    exchange: ReplayExchange
    state: SqliteStateStore
    bus: InMemoryBus
    blobs: LocalBlobStore
    executor: ExecuteSignalForUser
    monitor: ExitMonitor

    def add_user(self, user: User) -> User:
        self.state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        return user

    def signal(
        self, direction: Direction = Direction.LONG, stop_pct: float = 1.0
    ) -> OpportunitySignal:
        """A signal at the current real price, stored as the ranker would store it."""
        price = self.exchange.fetch_tickers([SYMBOL])[0].last
        sign = direction.sign
        stop = price * (1 - sign * stop_pct / 100)
        tps = [
            TakeProfitLevel(
                price=price * (1 + sign * r * stop_pct / 100), pct=r * stop_pct, size_fraction=f
            )
            for r, f in ((3.0, 0.5), (4.0, 0.3), (5.0, 0.2))
        ]
        now = self.clock.now()
        signal = OpportunitySignal(
            id=f"sig-{direction.value}-{self.clock.now_ms()}",
            symbol=SYMBOL,
            exchange="binance",
            market_type=MarketType.PERP,
            direction=direction,
            entry_price=price,
            entry_low=price * 0.999,
            entry_high=price * 1.001,
            stop_loss=stop,
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

    def execution_message(self, signal_id: str, user_id: str, attempt: int = 1) -> BusMessage:
        data = ExecutionRequest(signal_id=signal_id, user_id=user_id).model_dump(mode="json")
        return BusMessage(
            topic=Topics.EXECUTIONS,
            message_id=str(attempt),
            data=data,
            attributes={"dedupe_key": execution_id(signal_id, user_id)},
            ordering_key=user_id,
            delivery_attempt=attempt,
        )

    def orders(self, account: str) -> list[str]:
        return [o.client_order_id for o in self.exchange.orders(account)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = SimulatedClock(START)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    market = DuckDBMarketStore(tmp_path / "market")
    exchange = ReplayExchange(source, clock)
    state = SqliteStateStore()
    bus = InMemoryBus(max_delivery_attempts=5)
    blobs = LocalBlobStore(tmp_path / "blobs")
    # the executor checks data freshness in the market store the collector fills
    CollectMarketData(exchange, market, clock, backfill_minutes=60).run()
    w = World(
        clock=clock,
        source=source,
        market=market,
        exchange=exchange,
        state=state,
        bus=bus,
        blobs=blobs,
        executor=ExecuteSignalForUser(state, exchange, market, bus, blobs, clock),
        monitor=ExitMonitor(state, exchange, bus, blobs, clock),
    )
    yield w
    market.close()
    source.close()
    state.close()


def test_dispatcher_fans_out_one_message_per_admitted_user(world: World) -> None:
    world.add_user(User.with_profile("a", RiskProfile.MODERATE))
    world.add_user(User.with_profile("b", RiskProfile.AGGRESSIVE, paused=True))
    world.add_user(User.with_profile("c", RiskProfile.MODERATE, watch_all=False))
    world.add_user(User.with_profile("d", RiskProfile.MODERATE, watch_all=False))
    now = world.clock.now()
    entry = WatchlistEntry(
        user_id="d",
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=SYMBOL,
        added_at=now,
        expires_at=now + timedelta(hours=24),
    )
    world.state.create(Collections.WATCHLISTS, "d-eth", entry.model_dump(mode="json"))
    signal = world.signal()
    received: list[BusMessage] = []
    world.bus.subscribe(Topics.EXECUTIONS, "probe", received.append)
    msg = BusMessage(Topics.SIGNALS, "1", signal.model_dump(mode="json"))
    report = DispatchSignal(world.state, world.bus, world.clock).handle(msg)
    world.bus.drain()
    assert report.dispatched == ["a", "d"]
    assert report.not_admitted == {"b": "paused", "c": "symbol not on the watchlist"}
    assert [(m.ordering_key, m.data["user_id"]) for m in received] == [("a", "a"), ("d", "d")]
    assert {m.dedupe_key for m in received} == {
        execution_id(signal.id, "a"),
        execution_id(signal.id, "d"),
    }


def test_redelivered_execution_places_each_order_once(world: World) -> None:
    user = world.add_user(User.with_profile("trader", RiskProfile.AGGRESSIVE))
    signal = world.signal()
    attempts = {"n": 0}

    def crash_after_side_effects(message: BusMessage) -> None:
        world.executor.handle(message)
        attempts["n"] += 1
        if attempts["n"] <= 2:  # the ack is lost twice: Pub/Sub redelivers
            raise ConnectionError("ack lost")

    world.bus.subscribe(Topics.EXECUTIONS, Subscriptions.EXECUTOR, crash_after_side_effects)
    for _ in range(2):  # a publisher retry: the same request published twice
        world.bus.publish(
            Topics.EXECUTIONS,
            ExecutionRequest(signal_id=signal.id, user_id=user.user_id).model_dump(mode="json"),
            dedupe_key=execution_id(signal.id, user.user_id),
            ordering_key=user.user_id,
        )
    world.bus.drain()
    assert attempts["n"] == 4 and not world.bus.dead_letters
    client_ids = world.orders(user.exchange_account)
    assert len(client_ids) == len(set(client_ids)) >= 2  # entry + stop (+ take-profit)
    entries = [o for o in world.exchange.orders(user.exchange_account) if o.type.value == "market"]
    assert len(entries) == 1
    positions = world.state.query(Collections.POSITIONS, [Filter("user_id", "==", user.user_id)])
    assert len(positions) == 1
    execution = world.state.get(Collections.EXECUTIONS, execution_id(signal.id, user.user_id))
    assert execution is not None and execution["outcome"] == DecisionOutcome.ACCEPTED.value


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"kill_switch": True}, RiskCode.KILL_SWITCH),
        ({"paused": True}, RiskCode.USER_PAUSED),
        ({"excluded_symbols": [SYMBOL]}, RiskCode.SYMBOL_EXCLUDED),
    ],
)
def test_gate_rejection_places_no_order(
    world: World, overrides: dict[str, object], code: RiskCode
) -> None:
    user = world.add_user(User.with_profile("blocked", RiskProfile.MODERATE, **overrides))
    signal = world.signal()
    execution = world.executor.handle(world.execution_message(signal.id, user.user_id))
    assert execution.outcome is DecisionOutcome.REJECTED
    assert code in execution.reasons
    assert world.orders(user.exchange_account) == []
    breaches = world.state.query(
        Collections.EVENTS, [Filter("type", "==", EventType.RISK_BREACH.value)]
    )
    assert breaches and code.value in breaches[0]["payload"]["reasons"]


def test_expired_signal_is_rejected(world: World) -> None:
    user = world.add_user(User.with_profile("late", RiskProfile.AGGRESSIVE))
    signal = world.signal()
    world.clock.advance(21 * 60)
    execution = world.executor.handle(world.execution_message(signal.id, user.user_id))
    assert execution.outcome is DecisionOutcome.REJECTED
    assert RiskCode.SIGNAL_EXPIRED in execution.reasons
    assert world.orders(user.exchange_account) == []


def test_one_signal_different_decisions_per_profile(world: World) -> None:
    users = [
        world.add_user(User.with_profile(p.value, p))
        for p in (RiskProfile.CONSERVATIVE, RiskProfile.MODERATE, RiskProfile.AGGRESSIVE)
    ]
    signal = world.signal(stop_pct=0.4)  # tight stop: the size a 0.5 % risk needs is large
    outcomes = {
        u.user_id: world.executor.handle(world.execution_message(signal.id, u.user_id))
        for u in users
    }
    assert outcomes["conservative"].outcome is DecisionOutcome.REJECTED
    assert RiskCode.POSITION_TOO_LARGE in outcomes["conservative"].reasons
    assert outcomes["aggressive"].outcome is DecisionOutcome.ACCEPTED


def test_monitor_closes_on_exit_rule_and_evaluator_journals_once(world: World) -> None:
    user = world.add_user(User.with_profile("trader", RiskProfile.AGGRESSIVE))
    signal = world.signal(stop_pct=0.5)
    world.executor.handle(world.execution_message(signal.id, user.user_id))
    closed: list[BusMessage] = []
    world.bus.subscribe(Topics.EVENTS, "probe", closed.append)
    for _ in range(6 * 60 * 30):  # up to 6 hours of 2-second cycles
        world.clock.advance(2)
        report = world.monitor.cycle()
        if report.closed:
            break
    world.bus.drain()
    (position,) = world.state.query(Collections.POSITIONS)
    assert position["status"] == "closed" and position["exit_reason"]
    assert position["exit_detail"], "the numbers behind the exit are stored"
    heartbeat = world.state.get(Collections.HEARTBEATS, "exit-monitor")
    assert heartbeat is not None and heartbeat["at_ms"] == world.clock.now_ms()
    closed_events = [m for m in closed if m.data["type"] == EventType.POSITION_CLOSED.value]
    assert len(closed_events) == 1
    evaluator = EvaluateClosedPosition(world.state, world.clock)
    first = evaluator.handle(closed_events[0])
    again = evaluator.handle(closed_events[0])  # redelivery
    assert first is not None and again is None
    assert len(world.state.query(Collections.JOURNAL)) == 1
    stats = world.state.get(Collections.STATS, "user-trader")
    assert stats is not None and stats["trades"] == 1
    # no resting order is left behind once the position is flat
    assert world.exchange.fetch_open_orders(user.exchange_account) == []


def test_kill_switch_closes_open_positions(world: World) -> None:
    user = world.add_user(User.with_profile("trader", RiskProfile.AGGRESSIVE))
    signal = world.signal(stop_pct=2.0)
    world.executor.handle(world.execution_message(signal.id, user.user_id))
    world.clock.advance(2)
    world.monitor.cycle()
    world.state.update(Collections.USERS, user.user_id, {"kill_switch": True})
    world.clock.advance(2)
    report = world.monitor.cycle()
    assert list(report.closed.values()) == ["kill_switch"]
    assert world.exchange.fetch_positions(user.exchange_account) == []
    assert world.exchange.fetch_open_orders(user.exchange_account) == []


class RefusingExchange:
    """The real replay exchange, except that it refuses every order (as a venue may)."""

    def __init__(self, inner: ReplayExchange) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def create_order(self, account: str, request: object) -> NoReturn:
        raise OrderRejected("insufficient margin (code -2019)")

    def create_orders(self, requests: Sequence[tuple[str, object]]) -> list[OrderRejected]:
        return [OrderRejected("insufficient margin (code -2019)") for _ in requests]


def test_exchange_rejection_is_a_final_recorded_decision(world: World) -> None:
    user = world.add_user(User.with_profile("refused", RiskProfile.AGGRESSIVE))
    signal = world.signal()
    refusing = RefusingExchange(world.exchange)
    executor = ExecuteSignalForUser(
        world.state, cast(Exchange, refusing), world.market, world.bus, world.blobs, world.clock
    )
    execution = executor.handle(world.execution_message(signal.id, user.user_id))
    assert execution.outcome is DecisionOutcome.REJECTED
    assert execution.error is not None and "insufficient margin" in execution.error
    assert execution.completed_at is not None
    # a redelivery finds the completed record and does not try again
    again = executor.handle(world.execution_message(signal.id, user.user_id, attempt=2))
    assert again == execution
    errors = world.state.query(Collections.EVENTS, [Filter("type", "==", "system_error")])
    assert len(errors) == 1 and errors[0]["payload"]["symbol"] == SYMBOL
    assert world.state.query(Collections.POSITIONS) == []
