"""Issue-3 delivery semantics on the real emulators: redelivery, duplicate publishes,
poison messages and racing executors never produce a second order or lose an execution.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore
from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus
from prometheus_trader.app.emulators import EmulatorStack
from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import BusMessage
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.execute import ExecuteSignalForUser
from prometheus_trader.usecases.names import Collections, Topics

pytestmark = pytest.mark.integration

START = datetime(2025, 5, 21, 9, 0, tzinfo=UTC)
SYMBOL = "SOL/USDT:USDT"


@dataclass
class Cloud:
    project: str
    prefix: str
    clock: SimulatedClock
    exchange: ReplayExchange
    market: DuckDBMarketStore
    blobs: LocalBlobStore

    def state(self) -> FirestoreStateStore:
        """A new client per caller, as separate function instances would have."""
        return FirestoreStateStore(project=self.project, prefix=self.prefix)

    def executor(self, state: FirestoreStateStore, bus: PubSubBus) -> ExecuteSignalForUser:
        return ExecuteSignalForUser(state, self.exchange, self.market, bus, self.blobs, self.clock)


@pytest.fixture
def cloud(emulators: EmulatorStack, tmp_path: Path) -> Iterator[Cloud]:
    clock = SimulatedClock(START)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    market = DuckDBMarketStore(tmp_path / "market")
    exchange = ReplayExchange(source, clock)
    CollectMarketData(exchange, market, clock, backfill_minutes=60).run()
    yield Cloud(
        project=emulators.project,
        prefix=f"t{uuid.uuid4().hex[:8]}-",
        clock=clock,
        exchange=exchange,
        market=market,
        blobs=LocalBlobStore(tmp_path / "blobs"),
    )
    market.close()
    source.close()


def seed(cloud: Cloud, state: FirestoreStateStore, users: list[str]) -> OpportunitySignal:
    for user_id in users:
        user = User.with_profile(user_id, RiskProfile.AGGRESSIVE)
        state.create(Collections.USERS, user_id, user.model_dump(mode="json"))
    price = cloud.exchange.fetch_tickers([SYMBOL])[0].last
    now = cloud.clock.now()
    signal = OpportunitySignal(
        id=f"sig-{uuid.uuid4().hex[:8]}",
        symbol=SYMBOL,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=Direction.LONG,
        entry_price=price,
        entry_low=price * 0.999,
        entry_high=price * 1.001,
        stop_loss=price * 0.99,
        stop_loss_pct=1.0,
        take_profits=[TakeProfitLevel(price=price * 1.03, pct=3.0, size_fraction=1.0)],
        reward_risk=3.0,
        confidence=0.8,
        created_at=now,
        expires_at=now + timedelta(minutes=20),
        strategy="consensus",
    )
    state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
    return signal


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met in time")


def test_redelivered_and_republished_executions_place_each_order_once(cloud: Cloud) -> None:
    users = ["u1", "u2", "u3"]
    state = cloud.state()
    signal = seed(cloud, state, users)
    bus = PubSubBus(cloud.project, topic_prefix=cloud.prefix, max_delivery_attempts=5)
    executor = cloud.executor(state, bus)
    attempts: dict[str, list[int]] = {}
    lock = threading.Lock()

    def flaky_executor(message: BusMessage) -> None:
        with lock:
            attempts.setdefault(message.dedupe_key, []).append(message.delivery_attempt)
            seen = len(attempts[message.dedupe_key])
        if seen <= 2:  # nack the first two deliveries: Pub/Sub must deliver a third time
            raise ConnectionError("simulated crash before ack")
        executor.handle(message)

    try:
        bus.subscribe(Topics.EXECUTIONS, "executor", flaky_executor)
        for user_id in users:
            copies = 2 if user_id == "u2" else 1  # a publisher retry: same request twice
            for _ in range(copies):
                bus.publish(
                    Topics.EXECUTIONS,
                    ExecutionRequest(signal_id=signal.id, user_id=user_id).model_dump(mode="json"),
                    dedupe_key=execution_id(signal.id, user_id),
                    ordering_key=user_id,
                )
        ids = [execution_id(signal.id, u) for u in users]
        wait_for(
            lambda: all(
                (doc := state.get(Collections.EXECUTIONS, i)) and doc.get("completed_at")
                for i in ids
            ),
            timeout=120,
        )
    finally:
        bus.close()
    for user_id in users:
        orders = cloud.exchange.orders(user_id)
        client_ids = [o.client_order_id for o in orders]
        assert len(client_ids) == len(set(client_ids)), client_ids
        assert sum(1 for o in orders if o.type.value == "market") == 1
    positions = state.query(Collections.POSITIONS)
    assert sorted(p["user_id"] for p in positions) == users  # none lost, none doubled
    assert all(len(a) >= 3 for a in attempts.values())


def test_eight_racing_executors_place_one_order(cloud: Cloud) -> None:
    seed_state = cloud.state()
    signal = seed(cloud, seed_state, ["racer"])
    bus = PubSubBus(cloud.project, topic_prefix=cloud.prefix)
    message = BusMessage(
        topic=Topics.EXECUTIONS,
        message_id="1",
        data=ExecutionRequest(signal_id=signal.id, user_id="racer").model_dump(mode="json"),
        attributes={"dedupe_key": execution_id(signal.id, "racer")},
        ordering_key="racer",
    )
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def race() -> None:
        executor = cloud.executor(cloud.state(), bus)  # its own Firestore client
        barrier.wait()
        try:
            executor.handle(message)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=race) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        bus.close()
    assert errors == []
    orders = cloud.exchange.orders("racer")
    assert sum(1 for o in orders if o.type.value == "market") == 1
    assert len({o.client_order_id for o in orders}) == len(orders)
    assert len(seed_state.query(Collections.POSITIONS)) == 1
    assert len(cloud.exchange.fills("racer")) == 1
