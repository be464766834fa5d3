"""Reconciliation at start and on a schedule: the stored positions against the exchange.

A "restarted worker" here is a new exchange instance and a new ``ExitMonitor`` over the
same SQLite state file (the paper ledger persists in it), as after a crash on Cloud Run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.execution_world import SYMBOL, Crash, World, leg_is, make_world

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.market import Side
from prometheus_trader.domain.trading import (
    DecisionOutcome,
    OrderRequest,
    OrderStatus,
    OrderType,
)
from prometheus_trader.domain.users import User
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.reconcile import ABANDONED_AFTER

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def restarted(world: World) -> tuple[ExitMonitor, ReplayExchange]:
    """A new worker process: its own exchange object and clock, the same state file."""
    clock = SimulatedClock(world.clock.now())
    exchange = ReplayExchange(world.source, clock, ledger=world.state)
    monitor = ExitMonitor(world.state, exchange, world.bus, world.blobs, clock)
    return monitor, exchange


def open_position(world: World, user_id: str = "trader", stop_pct: float = 2.0) -> User:
    user = world.add_user(user_id)
    signal = world.signal(stop_pct=stop_pct)
    done = world.executor.handle(world.message(signal, user))
    assert done.outcome is DecisionOutcome.ACCEPTED
    return user


def market(cid: str, side: Side, amount: float, reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=SYMBOL,
        side=side,
        type=OrderType.MARKET,
        amount=amount,
        reduce_only=reduce_only,
    )


def test_a_restarted_worker_starts_cleanly_with_open_positions(world: World) -> None:
    open_position(world)
    world.clock.advance(2)
    monitor, _ = restarted(world)
    report = monitor.reconcile()
    assert report.clean and report.checked == 1 and report.accounts == 1
    cycle = monitor.cycle()  # no "order not found": the ledger is shared
    assert cycle.positions == 1 and not cycle.failed
    stored = world.state.query(Collections.RECONCILIATIONS)
    assert len(stored) == 1 and stored[0]["clean"] is True


def test_a_stop_that_filled_while_away_closes_the_record(world: World) -> None:
    user = open_position(world, stop_pct=0.3)
    (doc,) = world.open_positions()
    for _ in range(12 * 60):  # the worker is down; the stop rests on the exchange
        world.clock.advance(60)
        stop = world.exchange.fetch_order(user.exchange_account, doc["stop_order_id"])
        if stop.status is not OrderStatus.OPEN:
            break
    assert stop.status is OrderStatus.FILLED
    monitor, _ = restarted(world)
    report = monitor.reconcile()
    assert report.closed_while_away == [doc["id"]]
    closed = world.state.get(Collections.POSITIONS, doc["id"])
    assert closed is not None and closed["status"] == "closed"
    assert closed["exit_reason"] == "stop_loss"


def test_an_exit_placed_before_a_crash_is_found_by_its_client_order_id(world: World) -> None:
    user = open_position(world)
    (doc,) = world.open_positions()
    world.state.update(Collections.USERS, user.user_id, {"kill_switch": True})
    world.clock.advance(2)
    # the worker dies right after the exit order went in (before it recorded the close)
    exit_cid = client_order_id(doc["signal_id"], user.user_id, "exit")
    original = world.faulty.inner.create_order

    def then_crash(account: str, request: OrderRequest) -> object:
        order = original(account, request)
        if request.client_order_id == exit_cid:
            raise Crash()
        return order

    world.faulty.rules.clear()
    world.faulty.inner.create_order = then_crash  # type: ignore[method-assign,assignment]
    with pytest.raises(Crash):
        world.monitor.cycle()
    world.faulty.inner.create_order = original  # type: ignore[method-assign]
    assert world.exchange.fetch_positions(user.exchange_account) == []
    monitor, exchange = restarted(world)
    report = monitor.reconcile()
    assert report.closed_while_away == [doc["id"]]
    closed = world.state.get(Collections.POSITIONS, doc["id"])
    assert closed is not None and closed["status"] == "closed"
    assert closed["exit_order_id"] == next(
        o.id for o in exchange.orders(user.exchange_account) if o.client_order_id == exit_cid
    )
    exits = [o for o in exchange.orders(user.exchange_account) if o.client_order_id == exit_cid]
    assert len(exits) == 1  # looked up, not placed twice


def test_a_position_closed_outside_is_closed_in_the_record_and_alerted(world: World) -> None:
    user = open_position(world)
    (doc,) = world.open_positions()
    # someone closes it by hand on the exchange (another client order id)
    world.exchange.create_order(
        user.exchange_account, market("by-hand", Side.SELL, doc["amount"], reduce_only=True)
    )
    monitor, _ = restarted(world)
    report = monitor.reconcile()
    assert report.unknown_on_exchange == [doc["id"]] and not report.clean
    closed = world.state.get(Collections.POSITIONS, doc["id"])
    assert closed is not None and closed["exit_reason"] == "reconciled"
    alerts = world.events(EventType.SYSTEM_ERROR)
    assert any(a["payload"].get("position_id") == doc["id"] for a in alerts)
    assert world.exchange.fetch_open_orders(user.exchange_account) == []


def test_an_untracked_exchange_position_is_adopted_with_a_stop_once(world: World) -> None:
    user = world.add_user("trader")
    world.exchange.create_order(user.exchange_account, market("manual", Side.BUY, 0.5))
    report = world.monitor.reconcile()
    ((label, position_id),) = report.untracked.items()
    assert label == f"{user.exchange_account} {SYMBOL}" and position_id
    (doc,) = world.open_positions()
    assert doc["id"] == position_id and doc["amount"] == pytest.approx(0.5)
    stop = world.exchange.fetch_order(user.exchange_account, doc["stop_order_id"])
    assert stop.status is OrderStatus.OPEN and stop.reduce_only and stop.amount == 0.5
    again = world.monitor.reconcile()
    assert again.clean and len(world.open_positions()) == 1
    assert len(world.exchange.fetch_open_orders(user.exchange_account)) == 1


def test_an_in_flight_execution_is_not_adopted(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    world.faulty.rules.append(
        lambda _a, r: Crash() if leg_is(signal.id, user.user_id, "sl")(r) else None
    )
    with pytest.raises(Crash):  # entry filled, the executor died before its stop
        world.executor.handle(world.message(signal, user))
    report = world.monitor.reconcile()
    assert report.untracked == {f"{user.exchange_account} {SYMBOL}": ""}
    assert world.open_positions() == []
    world.faulty.rules.clear()  # the redelivery completes it: one position, one record
    world.executor.handle(world.message(signal, user, attempt=2))
    assert len(world.open_positions()) == 1
    assert world.monitor.reconcile().clean


def test_quantity_mismatch_and_orphan_orders_are_reported(world: World) -> None:
    user = open_position(world)
    (doc,) = world.open_positions()
    world.exchange.create_order(user.exchange_account, market("more", Side.BUY, 0.01))
    other = world.exchange.create_order(
        user.exchange_account,
        OrderRequest(
            client_order_id="orphan",
            symbol="BTC/USDT:USDT",
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=0.001,
            price=50_000.0,
        ),
    )
    leftover = world.exchange.create_order(  # a reduce-only order on a flat symbol
        user.exchange_account,
        OrderRequest(
            client_order_id="leftover",
            symbol="BTC/USDT:USDT",
            side=Side.SELL,
            type=OrderType.TAKE_PROFIT_MARKET,
            amount=0.001,
            stop_price=500_000.0,
            reduce_only=True,
        ),
    )
    report = world.monitor.reconcile()
    assert list(report.quantity_mismatch) == [doc["id"]]
    assert report.unexplained_orders == [other.id]
    assert report.orphan_orders_cancelled == [leftover.id]
    assert world.exchange.fetch_order(user.exchange_account, leftover.id).status is (
        OrderStatus.CANCELED
    )
    assert not report.clean


def test_an_execution_abandoned_past_its_redeliveries_is_adopted(world: World) -> None:
    """Dead-lettered mid-way (entry filled, never completed): once no redelivery can come,
    its exchange position is adopted with a stop instead of alerted on every pass."""
    user = world.add_user("trader")
    signal = world.signal()
    world.faulty.rules.append(
        lambda _a, r: Crash() if leg_is(signal.id, user.user_id, "sl")(r) else None
    )
    with pytest.raises(Crash):
        world.executor.handle(world.message(signal, user))
    world.faulty.rules.clear()
    label = f"{user.exchange_account} {SYMBOL}"
    world.clock.advance(ABANDONED_AFTER.total_seconds() - 60)
    assert world.monitor.reconcile().untracked == {label: ""}  # may still be redelivered
    world.clock.advance(120)
    adopted = world.monitor.reconcile().untracked[label]
    assert adopted.startswith("adopted-")
    (doc,) = world.open_positions()
    assert doc["id"] == adopted
    stop = world.exchange.fetch_order(user.exchange_account, doc["stop_order_id"])
    assert stop.status is OrderStatus.OPEN and stop.reduce_only
