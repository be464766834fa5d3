"""Every failure path of the executor and the exit monitor ends recorded and alerted.

One test per row of the table in docs/execution.md, on the real replay exchange over the
bundled sample, with faults injected by a thin wrapper (``Faulty``) around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.execution_world import (
    Crash,
    World,
    entry_orders,
    leg_is,
    make_world,
)

from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.trading import (
    DecisionOutcome,
    ExecutionPhase,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
)
from prometheus_trader.domain.users import User
from prometheus_trader.ports import ExchangeError, OrderRejected
from prometheus_trader.usecases.execute import EntryPending
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


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


def test_a_racer_that_stored_the_position_outlives_another_racers_failed_stop(
    world: World,
) -> None:
    """Racer A's stop is refused after racer B placed every protective order and stored
    the position: A keeps B's position (same orders) instead of flattening it away."""
    user = world.add_user("trader")
    signal = world.signal()
    raced: list[DecisionOutcome] = []
    racing: list[bool] = []

    def racer_b_first(_account: str, request: OrderRequest) -> Exception | None:
        if not leg_is(signal.id, user.user_id, "sl")(request) or racing:
            return None
        racing.append(True)  # racer B's own stop goes through
        raced.append(world.executor.handle(world.message(signal, user, attempt=2)).outcome)
        return OrderRejected("stop would trigger immediately")  # racer A's own attempt

    world.faulty.rules.append(racer_b_first)
    done = world.executor.handle(world.message(signal, user))
    assert raced == [DecisionOutcome.ACCEPTED]
    assert done.outcome is DecisionOutcome.ACCEPTED
    (position,) = world.open_positions()
    assert done.position_id == position["id"]
    held = world.exchange.fetch_positions(user.exchange_account)
    assert [p.amount for p in held] == [position["amount"]]
    stop = world.exchange.fetch_order(user.exchange_account, position["stop_order_id"])
    assert stop.status is OrderStatus.OPEN
    flatten = client_order_id(signal.id, user.user_id, "flatten")
    assert all(o.client_order_id != flatten for o in world.exchange.orders(user.exchange_account))


def test_a_racer_never_stores_a_position_another_racer_decided_to_flatten(
    world: World,
) -> None:
    """Racer A decided to flatten (its stop was refused) while racer B was placing the
    take-profits: B must flatten too, never record a position on an account A flattens."""
    user = world.add_user("trader")
    signal = world.signal()

    def racer_a_decides(_account: str, request: OrderRequest) -> Exception | None:
        if leg_is(signal.id, user.user_id, "tp1")(request):
            record = world.record(signal, user)
            if record.phase is not ExecutionPhase.FLATTENING:
                world.state.update(
                    Collections.EXECUTIONS,
                    record.id,
                    {"phase": ExecutionPhase.FLATTENING.value, "error": "racer A: stop refused"},
                )
        return None

    world.faulty.rules.append(racer_a_decides)
    done = world.executor.handle(world.message(signal, user))
    assert done.outcome is DecisionOutcome.FAILED and done.position_id is None
    assert world.open_positions() == []
    assert world.exchange.fetch_positions(user.exchange_account) == []
    assert world.exchange.fetch_open_orders(user.exchange_account) == []
