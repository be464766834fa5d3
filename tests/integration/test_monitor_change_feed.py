"""The exit monitor on the change feed: no full read per cycle, tracking written when it
matters, and a restarted monitor (fresh memory, the store's older tracking) holds the
same best/worst/trail as a restart after writing every change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.test_usecases_embedded import World, world

from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.trading import Position
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.usecases.monitor import PERSIST_EVERY_MS, ExitMonitor
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration
__all__ = ["world"]  # the fixture, shared with the use-case suite

# every rule computed, none fires: the positions stay open and their tracking moves
QUIET = ExitConfig(
    order_flow_long_exit_ratio=1e-9,
    order_flow_short_exit_ratio=1e9,
    adverse_move_thresholds=[(0.3, 10**6)],
    adverse_move_default=10**6,
    trail_arm_r=100.0,
    enable_max_hold=False,
    enable_stop_loss=False,
    enable_take_profit=False,
    enable_profit_lock=False,
)


class Counting:
    """Counts the store calls the monitor makes (by method and collection)."""

    def __init__(self, state: SqliteStateStore) -> None:
        self.calls: dict[tuple[str, str], int] = {}
        for name in ("query", "update", "get"):
            inner = getattr(state, name)

            def counted(collection: str, *a: Any, _inner: Any = inner, _n: str = name) -> Any:
                self.calls[(_n, collection)] = self.calls.get((_n, collection), 0) + 1
                return _inner(collection, *a)

            setattr(state, name, counted)

    def take(self) -> dict[tuple[str, str], int]:
        calls, self.calls = self.calls, {}
        return calls


@pytest.fixture
def opened(world: World) -> Iterator[World]:
    """Two users, one long and one short position open."""
    from prometheus_trader.domain.signals import Direction

    for name, direction in (("alice", Direction.LONG), ("bob", Direction.SHORT)):
        user = world.add_user(User.with_profile(name, RiskProfile.AGGRESSIVE))
        signal = world.signal(direction=direction, stop_pct=2.0)
        world.executor.handle(world.execution_message(signal.id, user.user_id))
    yield world


def held(monitor: ExitMonitor) -> dict[str, tuple[float, float, float | None]]:
    return {
        p.id: (p.best_price, p.worst_price, p.trail_stop) for p in monitor._open.models().values()
    }


def test_a_cycle_reads_no_position_or_user_it_already_holds(opened: World) -> None:
    w = opened
    monitor = ExitMonitor(w.state, w.exchange, w.bus, w.blobs, w.clock, QUIET)
    counting = Counting(w.state)
    w.clock.advance(2)
    assert monitor.cycle().positions == 2
    counting.take()
    for _ in range(20):
        w.clock.advance(2)
        assert monitor.cycle().positions == 2
    calls = counting.take()
    assert calls.get(("query", Collections.POSITIONS), 0) == 0
    assert calls.get(("get", Collections.USERS), 0) == 0
    assert calls.get(("get", Collections.POSITIONS), 0) == 0


def test_tracking_is_written_when_it_matters_and_a_restart_tracks_the_same(
    opened: World,
) -> None:
    w = opened
    monitor = ExitMonitor(w.state, w.exchange, w.bus, w.blobs, w.clock, QUIET)
    counting = Counting(w.state)
    cycles = 600  # 20 minutes of 2-second cycles
    changed = 0
    for _ in range(cycles):
        before = held(monitor)
        w.clock.advance(2)
        monitor.cycle()
        changed += held(monitor) != before
    writes = counting.take().get(("update", Collections.POSITIONS), 0)
    assert changed >= 5, "the market moved the tracking"
    # throttled: at most one write per position per interval (+ the threshold crossings)
    assert 0 < writes <= min(2 * changed, 2 * (cycles * 2_000 // PERSIST_EVERY_MS + 2))
    # a restart: a new monitor with empty memory reads the store (tracking up to 30 s
    # old) and 15 minutes of trades. It must hold what a restart holds when every change
    # had been written (the behaviour before the throttle): the running monitor's memory
    running = held(monitor)
    w.clock.advance(2)
    after_throttle = ExitMonitor(w.state, w.exchange, w.bus, w.blobs, w.clock, QUIET)
    after_throttle.cycle()
    for pid, (best, worst, trail) in running.items():  # as if every change was written
        w.state.update(
            Collections.POSITIONS,
            pid,
            {"best_price": best, "worst_price": worst, "trail_stop": trail},
        )
    after_every_write = ExitMonitor(w.state, w.exchange, w.bus, w.blobs, w.clock, QUIET)
    after_every_write.cycle()  # the same clock time, the same 15 minutes of trades
    assert held(after_throttle) == held(after_every_write)
    assert set(running) == set(held(after_throttle))


def test_an_armed_trail_is_written_at_once(opened: World) -> None:
    w = opened
    armed = ExitConfig(trail_arm_r=0.0, enable_order_flow=False, enable_adverse_moves=False)
    monitor = ExitMonitor(w.state, w.exchange, w.bus, w.blobs, w.clock, armed)
    w.clock.advance(2)
    monitor.cycle()
    for doc in w.state.query(Collections.POSITIONS):
        position = Position.model_validate(doc)
        if position.status.value == "open":  # the trail armed at entry: stored now
            assert position.trail_stop is not None
            assert held(monitor)[position.id][2] == position.trail_stop
