"""Clock adapters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock, SystemClock
from prometheus_trader.ports import Clock

pytestmark = pytest.mark.unit

START = datetime(2025, 5, 20, 12, 0, tzinfo=UTC)
START_MS = 1_747_742_400_000


def test_both_implement_the_port() -> None:
    assert isinstance(SimulatedClock(START), Clock)
    assert isinstance(SystemClock(), Clock)


def test_simulated_now_and_now_ms() -> None:
    clock = SimulatedClock(START)
    assert clock.now() == START
    assert clock.now().tzinfo is UTC
    assert clock.now_ms() == START_MS


def test_start_in_other_zone_is_converted_to_utc() -> None:
    clock = SimulatedClock(datetime(2025, 5, 20, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == START
    assert clock.now().utcoffset() == timedelta(0)


def test_naive_datetimes_refused() -> None:
    with pytest.raises(ValueError):
        SimulatedClock(datetime(2025, 5, 20))
    with pytest.raises(ValueError):
        SimulatedClock(START).set(datetime(2025, 5, 21))


def test_advance_set_and_set_ms() -> None:
    clock = SimulatedClock(START)
    clock.advance(1.5)
    assert clock.now_ms() == START_MS + 1500
    clock.set(START + timedelta(minutes=1))
    assert clock.now_ms() == START_MS + 60_000
    clock.set_ms(START_MS + 120_000)
    assert clock.now() == START + timedelta(minutes=2)
    clock.set_ms(START_MS + 120_000)  # staying put is allowed
    assert clock.now_ms() == START_MS + 120_000


def test_never_moves_backwards() -> None:
    clock = SimulatedClock(START)
    clock.advance(10)
    with pytest.raises(ValueError):
        clock.set_ms(START_MS)
    with pytest.raises(ValueError):
        clock.set(START)
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock.now_ms() == START_MS + 10_000


def test_now_ms_floors_sub_millisecond_and_pre_epoch() -> None:
    assert SimulatedClock(START + timedelta(microseconds=999)).now_ms() == START_MS
    assert SimulatedClock(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)).now_ms() == -1


def test_system_clock_is_utc_and_consistent() -> None:
    clock = SystemClock()
    now = clock.now()
    assert now.utcoffset() == timedelta(0)
    before = int(now.timestamp() * 1000) - 1
    assert clock.now_ms() >= before
