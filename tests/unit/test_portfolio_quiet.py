"""``unchanged_at``: the portfolio guard skips an equity reading that provably changes
nothing. Wherever it says so, ``observe_stats_model`` (what the guard would run) returns
the same stats and no breaker transition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_trader.app.demo import DEMO_USERS
from prometheus_trader.domain.breakers import Breaker
from prometheus_trader.domain.users import RiskLimits
from prometheus_trader.usecases.portfolio import unchanged_at
from prometheus_trader.usecases.stats import UserStats, observe_stats_model

pytestmark = pytest.mark.unit

NOW = datetime(2025, 5, 14, 12, 30, tzinfo=UTC)
DAY = "2025-05-14"
BASE = DEMO_USERS[0].limits
# around the peaks and the drawdown limits below (10,000 − 5/10/15 %, 10,500 − ...)
EDGES = [0.0, 9_000.0, 9_500.0, 10_000.0, 10_500.0, 8_500.0, 8_925.0, 9_450.0, 9_975.0]
equities = (
    st.sampled_from([-50.0, 1.0, *EDGES])
    | st.sampled_from(EDGES).map(lambda e: e + 1e-9 * max(1.0, e))
    | st.sampled_from(EDGES).map(lambda e: e - 1e-9 * max(1.0, e))
    | st.floats(min_value=-1_000, max_value=12_000, allow_nan=False)
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[UserStats, RiskLimits, datetime | None]:
    limits = BASE.model_copy(
        update={
            "max_drawdown_pct": draw(st.sampled_from([5.0, 10.0, 15.0])),
            "max_consecutive_losses": draw(st.integers(1, 4)),
            "daily_loss_limit_pct": draw(st.sampled_from([1.0, 3.0])),
        }
    )
    calm = draw(st.integers(0, 2)) > 0  # mostly stats a reading leaves as they are
    tripped: dict[str, str] = {}
    for breaker in Breaker:
        if draw(st.integers(0, 8 if calm else 2)) == 0:
            tripped[breaker.value] = draw(st.sampled_from([f"{DAY}T01:00:00+00:00", "2025-05-13"]))
    stats = UserStats(
        user_id="u1",
        peak_equity=draw(st.sampled_from([10_000.0, 10_500.0] + ([] if calm else [0.0]))),
        day=DAY if calm else draw(st.sampled_from([DAY, "2025-05-13"])),
        day_start_equity=draw(st.sampled_from([9_500.0, 10_000.0] + ([] if calm else [0.0]))),
        realized_pnl_today_pct=draw(st.sampled_from([0.0, -0.5] + ([] if calm else [-2.0, -4.0]))),
        consecutive_losses=draw(st.sampled_from([0, 1] if calm else [0, 2, 4, 5])),
        last_loss_at=draw(
            st.sampled_from([None, NOW - timedelta(minutes=30), NOW - timedelta(days=1)])
        ),
        tripped=tripped,
    )
    resume = None if calm else draw(st.sampled_from([None, NOW - timedelta(hours=2)]))
    return stats, limits, resume


@settings(max_examples=800, deadline=None, derandomize=True, database=None)
@given(
    case=cases(), first=st.sampled_from([9_200.0, 9_900.0, 10_000.0]) | equities, second=equities
)
def test_a_quiet_reading_stays_quiet_where_unchanged_at_says_so(
    case: tuple[UserStats, RiskLimits, datetime | None], first: float, second: float
) -> None:
    stats, limits, resume = case
    user = DEMO_USERS[0].model_copy(
        update={"limits": limits, "breakers_resume_requested_at": resume}
    )
    _, new, transitions = observe_stats_model(stats, user, NOW, first)
    if transitions or new != stats:
        return  # the guard memorises only a reading that changed nothing
    if unchanged_at(stats, limits, second):
        _, again, moved = observe_stats_model(stats, user, NOW, second)
        assert moved == []
        assert again == stats


def test_unchanged_at_follows_the_peak_the_day_start_and_the_drawdown_trip() -> None:
    limits = BASE.model_copy(update={"max_drawdown_pct": 10.0})
    stats = UserStats(user_id="u1", peak_equity=10_000.0, day=DAY, day_start_equity=9_800.0)
    user = DEMO_USERS[0].model_copy(update={"limits": limits})
    assert observe_stats_model(stats, user, NOW, 9_900.0)[1] == stats
    assert unchanged_at(stats, limits, 9_500.0)  # below the peak, above the trip
    assert unchanged_at(stats, limits, 10_000.0)  # at the peak: not raised
    assert not unchanged_at(stats, limits, 10_000.5)  # a new peak is written
    assert not unchanged_at(stats, limits, 9_000.0)  # 10 % down: the trip
    tripped = stats.model_copy(update={"tripped": {Breaker.MAX_DRAWDOWN.value: "x"}})
    assert unchanged_at(tripped, limits, 5_000.0)  # held until the user resumes
    unopened = stats.model_copy(update={"day_start_equity": 0.0})
    assert not unchanged_at(unopened, limits, 9_900.0)  # the day's first equity is set
