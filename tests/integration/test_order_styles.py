"""Every order style from the user's settings, executed on the paper exchange over the
real sample bars: ladder (SL + several TPs), scaled entries (resting legs, the position
grows as they fill), and an opposite signal closing the open position first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import OrderStatus, OrderType, Position
from prometheus_trader.domain.users import OrderStyle, RiskProfile, User
from prometheus_trader.ports import BusMessage
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.execute import ExecuteSignalForUser
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Topics

pytestmark = pytest.mark.integration

ETH = "ETH/USDT:USDT"
START = datetime(2025, 5, 21, 17, 20, tzinfo=UTC)  # ETH falls through the next minutes


class World:
    def __init__(self, tmp: Path) -> None:
        self.clock = SimulatedClock(START)
        self.source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
        self.exchange = ReplayExchange(self.source, self.clock)
        self.state = SqliteStateStore()
        self.bus = InMemoryBus()
        self.blobs = LocalBlobStore(tmp / "blobs")
        self.executor = ExecuteSignalForUser(
            self.state, self.exchange, self.source, self.bus, self.blobs, self.clock
        )
        self.monitor = ExitMonitor(self.state, self.exchange, self.bus, self.blobs, self.clock)

    def user(self, **settings: object) -> User:
        user = User.with_profile("u", RiskProfile.MODERATE, **settings)
        self.state.set(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        return user

    def signal(self, n: int, direction: Direction, band_pct: float = 0.1) -> OpportunitySignal:
        price = self.exchange.fetch_tickers([ETH])[0].last
        sign = direction.sign
        now = self.clock.now()
        stop_pct = 1.0
        signal = OpportunitySignal(
            id=f"sig-{n}",
            symbol=ETH,
            exchange="binance",
            market_type=MarketType.PERP,
            direction=direction,
            entry_price=price,
            entry_low=price * (1 - band_pct / 100),
            entry_high=price * (1 + band_pct / 100),
            stop_loss=price * (1 - sign * stop_pct / 100),
            stop_loss_pct=stop_pct,
            take_profits=[
                TakeProfitLevel(price=price * (1 + sign * r / 100), pct=r, size_fraction=f)
                for r, f in ((2.5, 0.5), (3.5, 0.3), (4.5, 0.2))
            ],
            reward_risk=3.0,
            confidence=0.8,
            created_at=now,
            expires_at=now + timedelta(minutes=20),
            strategy="consensus",
        )
        self.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
        return signal

    def execute(self, signal: OpportunitySignal) -> str:
        data = ExecutionRequest(signal_id=signal.id, user_id="u").model_dump(mode="json")
        done = self.executor.handle(BusMessage(Topics.EXECUTIONS, signal.id, data))
        assert done.outcome is not None
        return done.outcome.value

    def audit(self) -> list[dict[str, object]]:
        return [
            json.loads(line)
            for key in self.blobs.list("audit/")
            for line in self.blobs.get(key).decode().splitlines()
        ]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.state.close()
    w.source.close()


def test_ladder_places_one_take_profit_per_level(world: World) -> None:
    world.user(order_style=OrderStyle.LADDER)
    assert world.execute(world.signal(1, Direction.LONG)) == "accepted"
    orders = world.exchange.orders("u")
    tps = [o for o in orders if o.type is OrderType.TAKE_PROFIT_MARKET]
    assert [o.type for o in orders][:2] == [OrderType.MARKET, OrderType.STOP_MARKET]
    assert len(tps) == 3 and sum(o.amount for o in tps) == pytest.approx(orders[0].filled)


def test_scaled_entries_rest_then_grow_the_position_and_leftovers_are_cancelled(
    world: World,
) -> None:
    world.user(order_style=OrderStyle.SCALED, scaled_entries=3, scaling="increasing")
    signal = world.signal(1, Direction.LONG, band_pct=0.3)
    assert world.execute(signal) == "accepted"
    legs = world.exchange.orders("u")
    assert [o.type for o in legs] == [OrderType.LIMIT] * 3
    assert legs[0].amount < legs[1].amount < legs[2].amount  # increasing sizing
    exec_id = execution_id(signal.id, "u")
    assert world.state.get(Collections.POSITIONS, exec_id) is None  # nothing filled yet
    seen_amounts: list[float] = []
    for minute in range(1, 21):
        world.clock.set(START + timedelta(minutes=minute))
        world.monitor.cycle()
        doc = world.state.get(Collections.POSITIONS, exec_id)
        if doc is not None and (not seen_amounts or doc["amount"] != seen_amounts[-1]):
            seen_amounts.append(doc["amount"])
    statuses = [world.exchange.fetch_order("u", o.id).status for o in legs]
    filled = [o for o, s in zip(legs, statuses, strict=True) if s is OrderStatus.FILLED]
    assert filled, statuses
    position = Position.model_validate(world.state.get(Collections.POSITIONS, exec_id))
    assert position.amount == pytest.approx(sum(o.amount for o in filled))
    assert seen_amounts == sorted(seen_amounts)  # it only grew
    stop = world.exchange.fetch_order("u", position.stop_order_id or "")
    assert stop.amount == pytest.approx(position.amount)
    if position.status.value == "open":
        assert stop.status is OrderStatus.OPEN
    # after the signal expired nothing rests: unfilled legs were cancelled (and audited)
    world.clock.set(signal.expires_at + timedelta(minutes=1))
    world.monitor.cycle()
    for o in legs:
        assert world.exchange.fetch_order("u", o.id).status in {
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
        }
    doc = world.state.get(Collections.SCALED_ENTRIES, exec_id)
    assert doc is not None and doc["status"] == "done"
    actions = {(a["action"], a["order_id"]) for a in world.audit()}
    for o in filled:
        assert ("exchange_fill", o.id) in actions
    for o in legs:
        assert ("create_order", o.id) in actions
        if world.exchange.fetch_order("u", o.id).status is OrderStatus.CANCELED:
            assert ("cancel_order", o.id) in actions


def test_opposite_signal_closes_first_when_the_user_says_so(world: World) -> None:
    calm = datetime(2025, 5, 22, 10, 0, tzinfo=UTC)
    world.clock.set(calm)
    world.user(close_on_opposite_signal=False)
    assert world.execute(world.signal(1, Direction.LONG)) == "accepted"
    world.clock.set(calm + timedelta(minutes=2))
    assert world.execute(world.signal(2, Direction.SHORT)) == "rejected"  # close first
    world.user(close_on_opposite_signal=True)
    world.clock.set(calm + timedelta(minutes=3))
    assert world.execute(world.signal(3, Direction.SHORT)) == "accepted"
    first = world.state.get(Collections.POSITIONS, execution_id("sig-1", "u"))
    assert first is not None
    assert (first["status"], first["exit_reason"]) == ("closed", "opposite_signal")
    second = world.state.get(Collections.POSITIONS, execution_id("sig-3", "u"))
    assert second is not None and second["direction"] == "short"
    assert [p.direction for p in world.exchange.fetch_positions("u")] == [Direction.SHORT]


def test_reconciliation_leaves_a_filled_scaled_leg_to_the_monitors_sync(world: World) -> None:
    """A scaled entry's leg fills after its execution completed: until the monitor's sync
    records it, the exchange holds a position with no record and nothing in flight.
    Reconciliation alerts but does not adopt it (adopting would give one exchange
    position two records, and the sync's protective orders a second stop)."""
    world.user(order_style=OrderStyle.SCALED, scaled_entries=3, scaling="increasing")
    signal = world.signal(1, Direction.LONG, band_pct=0.3)
    assert world.execute(signal) == "accepted"
    exec_id = execution_id(signal.id, "u")
    for minute in range(1, 21):  # no monitor cycle: the legs fill unseen
        world.clock.set(START + timedelta(minutes=minute))
        if world.exchange.fetch_positions("u"):
            break
    assert world.exchange.fetch_positions("u"), "a leg filled"
    report = world.monitor.reconcile()
    assert report.untracked == {f"u {ETH}": ""}, "alerted, not adopted"
    assert world.state.query(Collections.POSITIONS) == []
    world.monitor.cycle()  # the sync records the filled legs under the execution's id
    (position,) = world.state.query(Collections.POSITIONS)
    assert position["id"] == exec_id
    assert world.monitor.reconcile().untracked == {}
