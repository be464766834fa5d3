"""Account breakers over time: trip, cool down, resume, true peak (domain.breakers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prometheus_trader.domain.breakers import (
    AccountState,
    Breaker,
    observe_account,
    record_trade,
)
from prometheus_trader.domain.users import PROFILE_LIMITS, RiskProfile

pytestmark = pytest.mark.unit

T = datetime(2025, 5, 21, 10, 0, tzinfo=UTC)
LIMITS = PROFILE_LIMITS[RiskProfile.MODERATE]


def test_true_peak_trips_max_drawdown_and_only_a_resume_resets_it() -> None:
    state = AccountState()
    state, events = observe_account(state, LIMITS, T, 10_000.0)
    assert state.peak_equity == 10_000.0 and events == []
    state, _ = observe_account(state, LIMITS, T + timedelta(hours=1), 11_000.0)
    # a new day does not reset the peak (the old code rolled it from day-start equity)
    state, events = observe_account(state, LIMITS, T + timedelta(days=1), 9_300.0)
    assert state.peak_equity == 11_000.0
    assert [(e.breaker, e.action) for e in events] == [(Breaker.MAX_DRAWDOWN, "tripped")]
    assert events[0].values["drawdown_pct"] == pytest.approx(15.454545, rel=1e-5)
    assert events[0].values["peak_equity"] == 11_000.0
    # recovering a little does not reset it while still below the limit
    state, events = observe_account(state, LIMITS, T + timedelta(days=2), 9_350.0)
    assert events == [] and Breaker.MAX_DRAWDOWN.value in state.tripped
    resume = T + timedelta(days=2, hours=1)
    state, events = observe_account(
        state, LIMITS, resume + timedelta(minutes=1), 9_300.0, resume_requested_at=resume
    )
    assert [(e.breaker, e.action) for e in events] == [(Breaker.MAX_DRAWDOWN, "reset")]
    assert state.peak_equity == 9_300.0 and state.tripped == {}
    # the same request is honoured once
    state, events = observe_account(
        state, LIMITS, resume + timedelta(minutes=2), 9_300.0, resume_requested_at=resume
    )
    assert events == []


def test_consecutive_losses_cool_down_then_resume_by_themselves() -> None:
    state, _ = observe_account(AccountState(), LIMITS, T, 10_000.0)
    last = T
    for i in range(LIMITS.max_consecutive_losses):
        last = T + timedelta(minutes=10 * (i + 1))
        state = record_trade(state, last, -0.3)
    assert state.consecutive_losses == 4 and state.last_loss_at == last
    state, events = observe_account(state, LIMITS, last + timedelta(minutes=1), 9_900.0)
    assert [(e.breaker, e.action) for e in events] == [(Breaker.CONSECUTIVE_LOSSES, "tripped")]
    cooldown = timedelta(minutes=LIMITS.consecutive_loss_cooldown_minutes)
    state, events = observe_account(state, LIMITS, last + cooldown - timedelta(seconds=1), 9_900)
    assert events == [] and state.consecutive_losses == 4
    state, events = observe_account(state, LIMITS, last + cooldown, 9_900.0)
    assert [(e.breaker, e.action) for e in events] == [(Breaker.CONSECUTIVE_LOSSES, "reset")]
    assert state.consecutive_losses == 0
    assert "cool-down" in events[0].reason


def test_daily_loss_resets_on_the_next_utc_day_only() -> None:
    state, _ = observe_account(AccountState(), LIMITS, T, 10_000.0)
    state = record_trade(state, T + timedelta(minutes=5), -3.2)
    state, events = observe_account(state, LIMITS, T + timedelta(minutes=6), 9_680.0)
    assert [(e.breaker, e.action) for e in events] == [(Breaker.DAILY_LOSS, "tripped")]
    # a manual resume does not lift the daily stop
    state, events = observe_account(
        state, LIMITS, T + timedelta(hours=1), 9_680.0, resume_requested_at=T + timedelta(hours=1)
    )
    assert Breaker.DAILY_LOSS.value in state.tripped
    midnight = datetime(2025, 5, 22, 0, 0, tzinfo=UTC)
    state, events = observe_account(state, LIMITS, midnight, 9_680.0)
    assert [(e.breaker, e.action, e.reason) for e in events] == [
        (Breaker.DAILY_LOSS, "reset", "new UTC day")
    ]
    assert state.day_start_equity == 9_680.0 and state.realized_pnl_today_pct == 0.0


def test_a_win_resets_the_streak_and_a_trade_on_a_new_day_opens_it() -> None:
    state = record_trade(AccountState(day="2025-05-20"), T, -1.0)
    assert state.day == "2025-05-21" and state.day_start_equity == 0.0
    state = record_trade(state, T + timedelta(minutes=1), 0.5)
    assert state.consecutive_losses == 0
    assert state.realized_pnl_today_pct == pytest.approx(-0.5)
    # the next equity reading fills in the day's start
    state, _ = observe_account(state, LIMITS, T + timedelta(minutes=2), 9_950.0)
    assert state.day_start_equity == 9_950.0


def test_trips_hold_until_their_reset_rule_not_until_the_numbers_recover() -> None:
    state, _ = observe_account(AccountState(), LIMITS, T, 10_000.0)
    state, events = observe_account(state, LIMITS, T + timedelta(minutes=1), 8_400.0)
    assert [(e.breaker, e.action) for e in events] == [(Breaker.MAX_DRAWDOWN, "tripped")]
    # the open positions recover: still tripped (only the user resumes it)
    state, events = observe_account(state, LIMITS, T + timedelta(minutes=2), 9_800.0)
    assert events == [] and Breaker.MAX_DRAWDOWN.value in state.tripped
    # a winning close after a daily-loss trip does not lift it before the next UTC day
    state = record_trade(state, T + timedelta(minutes=3), -3.5)
    state, events = observe_account(state, LIMITS, T + timedelta(minutes=4), 9_800.0)
    assert [(e.breaker, e.action) for e in events] == [(Breaker.DAILY_LOSS, "tripped")]
    state = record_trade(state, T + timedelta(minutes=5), 2.0)
    state, events = observe_account(state, LIMITS, T + timedelta(minutes=6), 9_800.0)
    assert events == [] and Breaker.DAILY_LOSS.value in state.tripped
    # the first trade of the next day rolls the day: the next reading resets it
    state = record_trade(state, datetime(2025, 5, 22, 1, 0, tzinfo=UTC), 0.1)
    state, events = observe_account(state, LIMITS, datetime(2025, 5, 22, 1, 1, tzinfo=UTC), 9_800)
    assert [(e.breaker, e.action) for e in events] == [(Breaker.DAILY_LOSS, "reset")]
    assert Breaker.MAX_DRAWDOWN.value in state.tripped
