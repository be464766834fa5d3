"""Reconciliation racing an executor: it never adopts a position that is, or will be, recorded.

The interleavings the worker-kill proof on the Firestore emulator hit at random (about 1
run in 3), forced here deterministically: an exchange wrapper runs the executor's next
step right after (or before) the reconciler's exchange reads. An "adopted" position there
meant the reconciler combined an exchange read from before an executor's step with
state reads from after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from tests.integration.execution_world import SYMBOL, Crash, World, leg_is, make_world

from prometheus_trader.domain.trading import DecisionOutcome, ExchangePosition
from prometheus_trader.domain.users import User
from prometheus_trader.ports import Exchange, OrderRejected
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration


@dataclass
class Interleaved:
    """The exchange as the reconciler sees it; ``after[n]`` runs right after its n-th
    ``fetch_positions`` returned, ``before[n]`` right before it reads (n from 1)."""

    inner: Any
    after: dict[int, Callable[[], None]] = field(default_factory=dict)
    before: dict[int, Callable[[], None]] = field(default_factory=dict)
    calls: int = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fetch_positions(self, account: str) -> list[ExchangePosition]:
        self.calls += 1
        if self.calls in self.before:
            self.before.pop(self.calls)()
        held: list[ExchangePosition] = self.inner.fetch_positions(account)
        if self.calls in self.after:
            self.after.pop(self.calls)()
        return held


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def reconciler(world: World) -> tuple[ExitMonitor, Interleaved]:
    exchange = Interleaved(world.faulty)
    monitor = ExitMonitor(
        world.state, cast(Exchange, exchange), world.bus, world.blobs, world.clock
    )
    return monitor, exchange


def entry_filled_then_crashed(world: World, user: User) -> Callable[[], None]:
    """An execution in flight with an exchange position and no record yet (its executor
    died before the stop); returns its redelivery, whose stop the exchange refuses, so it
    flattens and completes ``failed`` (the "protective order failed" path)."""
    signal = world.signal()
    world.faulty.rules.append(
        lambda _a, r: Crash() if leg_is(signal.id, user.user_id, "sl")(r) else None
    )
    with pytest.raises(Crash):
        world.executor.handle(world.message(signal, user))
    world.faulty.rules.clear()

    def redelivered() -> None:
        world.faulty.rules.append(
            lambda _a, r: (
                OrderRejected("stop would trigger immediately")
                if leg_is(signal.id, user.user_id, "sl")(r)
                else None
            )
        )
        done = world.executor.handle(world.message(signal, user, attempt=2))
        world.faulty.rules.clear()
        assert done.outcome is DecisionOutcome.FAILED  # flattened, never recorded

    return redelivered


def adopted(world: World) -> list[str]:
    return [
        d["id"] for d in world.state.query(Collections.POSITIONS) if d["id"].startswith("adopted-")
    ]


def test_a_position_flattened_right_after_the_exchange_read_is_not_adopted(
    world: World,
) -> None:
    """Exchange read (held, execution in flight) -> the executor flattens and completes
    -> executions read (none in flight) -> positions read (no record): not adopted."""
    user = world.add_user("trader")
    flatten = entry_filled_then_crashed(world, user)
    monitor, exchange = reconciler(world)
    exchange.after[1] = flatten
    report = monitor.reconcile()
    assert adopted(world) == []
    assert world.exchange.fetch_positions(user.exchange_account) == []
    assert report.untracked == {}  # nothing is held any more: nothing to alert on
    assert world.exchange.fetch_open_orders(user.exchange_account) == []


def test_a_position_opened_and_recorded_between_the_state_reads_and_the_exchange_read(
    world: World,
) -> None:
    """Exchange read (held, in flight) -> it flattens -> executions and positions read
    (nothing) -> a new execution opens, records and completes -> exchange read again
    (held): that position is recorded, not adopted (a re-read of the exchange alone
    would adopt it)."""
    user = world.add_user("trader")
    flatten = entry_filled_then_crashed(world, user)
    monitor, exchange = reconciler(world)
    exchange.after[1] = flatten

    def next_execution() -> None:
        world.clock.advance(60)  # the next signal (ids are per simulated millisecond)
        done = world.executor.handle(world.message(world.signal(), user))
        assert done.outcome is DecisionOutcome.ACCEPTED

    exchange.before[2] = next_execution
    monitor.reconcile()
    assert adopted(world) == []
    (position,) = world.open_positions()
    assert position["id"] != "" and not position["id"].startswith("adopted-")
    (held,) = world.exchange.fetch_positions(user.exchange_account)
    assert held.symbol == SYMBOL and held.amount == pytest.approx(position["amount"])
    assert monitor.reconcile().clean  # the next pass sees it recorded
