"""The three demo users of the embedded run: one signal, three different decisions."""

from __future__ import annotations

from prometheus_trader.domain.users import RiskProfile, TradingMode, User

DEMO_USERS: tuple[User, ...] = (
    User.with_profile(
        "demo-conservative",
        RiskProfile.CONSERVATIVE,
        display_name="Conservative (paper)",
        mode=TradingMode.PAPER,
    ),
    User.with_profile(
        "demo-moderate",
        RiskProfile.MODERATE,
        display_name="Moderate (paper)",
        mode=TradingMode.PAPER,
    ),
    User.with_profile(
        "demo-aggressive",
        RiskProfile.AGGRESSIVE,
        display_name="Aggressive (paper)",
        mode=TradingMode.PAPER,
    ),
)
