"""The service clock of a replay: faster than real time, and one time for every process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.app.cloud import CloudRuntime, ShiftedClock
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.stack import StackError, restart

pytestmark = pytest.mark.unit
START = datetime(2025, 5, 21, 6, 0, tzinfo=UTC)


def test_a_faster_clock_moves_speed_times_its_base() -> None:
    base = SimulatedClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock = ShiftedClock(START, base, speed=60.0)
    assert clock.now() == START
    base.advance(2.5)
    assert clock.now() == START + timedelta(seconds=150)
    assert clock.now_ms() == int(clock.now().timestamp() * 1000)


def test_processes_sharing_the_anchor_read_the_same_time_whenever_they_start() -> None:
    wall = datetime(2026, 1, 1, tzinfo=UTC)
    first_base = SimulatedClock(wall)
    first = ShiftedClock(START, first_base, speed=10.0, anchor=wall)
    # a worker restarted 30 wall seconds later does not rewind to START
    later_base = SimulatedClock(wall + timedelta(seconds=30))
    restarted = ShiftedClock(START, later_base, speed=10.0, anchor=wall)
    first_base.advance(30)
    assert restarted.now() == first.now() == START + timedelta(seconds=300)


def test_the_runtime_clock_follows_speed_and_anchor_settings(tmp_path: Path) -> None:
    anchor = datetime.now(UTC) - timedelta(seconds=10)
    settings = Settings(var_dir=tmp_path, clock_start=START, clock_speed=6.0, clock_anchor=anchor)
    now = CloudRuntime(settings).clock.now()
    # 10 wall seconds since the anchor, six times faster (and a little more for this test)
    assert START + timedelta(seconds=60) <= now < START + timedelta(seconds=600)


def test_restart_needs_an_up_stack(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no stack is up"):
        restart(Settings(var_dir=tmp_path), "worker")
