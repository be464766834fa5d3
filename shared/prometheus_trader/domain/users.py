"""Users, risk profiles and per-user limits (all in percent of equity)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RiskProfile(StrEnum):
    """Risk appetite; selects default risk per trade and leverage."""

    CONSERVATIVE = "conservative"
    MODERATE = "moderate"
    AGGRESSIVE = "aggressive"


class TradingMode(StrEnum):
    """advisory: notify only; paper: simulated fills; live: real orders."""

    ADVISORY = "advisory"
    PAPER = "paper"
    LIVE = "live"


class OrderStyle(StrEnum):
    """How a plan is split into orders (SPEC §5.1)."""

    BRACKET = "bracket"  # market entry + SL + one TP (first level) for the full size
    LADDER = "ladder"  # market entry + SL + one TP per signal level
    SCALED = "scaled"  # N limit entries across the entry range + SL + TPs


Scaling = Literal["flat", "increasing", "decreasing"]


class RiskLimits(BaseModel):
    """Per-user risk limits. Every number is a percentage or a count, never dollars."""

    model_config = ConfigDict(extra="forbid")

    risk_per_trade_pct: float = Field(gt=0, le=10)
    leverage: float = Field(ge=1, le=125)
    max_position_pct: float = Field(gt=0, description="max notional of one position, % equity")
    max_exposure_pct: float = Field(gt=0, description="max total open notional, % equity")
    max_open_positions: int = Field(ge=1)
    min_reward_risk: float = Field(ge=0, default=2.0)
    daily_loss_limit_pct: float = Field(gt=0, default=3.0)
    max_consecutive_losses: int = Field(ge=1, default=4)
    consecutive_loss_cooldown_minutes: int = Field(
        ge=1, default=240, description="the consecutive-loss breaker resumes this long after"
    )
    max_drawdown_pct: float = Field(gt=0, default=15.0)
    shrink_to_fit: bool = Field(
        default=True, description="shrink an oversized plan to the limit instead of rejecting"
    )
    trailing_stop_pct: float = Field(gt=0, default=0.5)
    max_hold_minutes: int = Field(ge=1, default=240)


PROFILE_LIMITS: dict[RiskProfile, RiskLimits] = {
    RiskProfile.CONSERVATIVE: RiskLimits(
        risk_per_trade_pct=0.5,
        leverage=2,
        max_position_pct=50,
        max_exposure_pct=100,
        max_open_positions=2,
        min_reward_risk=2.5,
        shrink_to_fit=False,
    ),
    RiskProfile.MODERATE: RiskLimits(
        risk_per_trade_pct=1.0,
        leverage=5,
        max_position_pct=150,
        max_exposure_pct=300,
        max_open_positions=4,
        min_reward_risk=2.0,
    ),
    RiskProfile.AGGRESSIVE: RiskLimits(
        risk_per_trade_pct=2.0,
        leverage=10,
        max_position_pct=400,
        max_exposure_pct=800,
        max_open_positions=6,
        min_reward_risk=2.0,
    ),
}


class User(BaseModel):
    """A trader's account settings (no secrets: exchange keys live in the SecretStore)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    display_name: str = ""
    risk_profile: RiskProfile = RiskProfile.MODERATE
    mode: TradingMode = TradingMode.PAPER
    limits: RiskLimits
    excluded_symbols: list[str] = Field(default_factory=list)
    watch_all: bool = Field(default=True, description="admit every symbol, not only the watchlist")
    active: bool = True
    paused: bool = False
    paused_reason: str | None = None
    kill_switch: bool = False
    breakers_resume_requested_at: datetime | None = Field(
        default=None,
        description="set (by the API) to resume the consecutive-loss and drawdown breakers",
    )
    order_style: OrderStyle = OrderStyle.BRACKET
    scaled_entries: int = Field(default=3, ge=1, le=10, description="entry orders (scaled)")
    scaling: Scaling = "flat"
    kelly_fraction: float | None = Field(
        default=None, gt=0, le=1, description="fractional Kelly from the journal; None: off"
    )
    kelly_min_trades: int = Field(default=20, ge=1, description="journal trades before Kelly")
    close_on_opposite_signal: bool = Field(
        default=False, description="an opposite signal closes the open position first"
    )
    exchange_account: str = Field(description="account reference at the exchange adapter")
    notify_webhook: str | None = None
    notify_email: str | None = None

    @classmethod
    def with_profile(cls, user_id: str, profile: RiskProfile, **overrides: object) -> User:
        """A user with the profile's default limits."""
        data: dict[str, object] = {
            "user_id": user_id,
            "risk_profile": profile,
            "limits": PROFILE_LIMITS[profile].model_copy(),
            "exchange_account": user_id,
        }
        data.update(overrides)
        return cls.model_validate(data)


def venue_account(user_id: str, venue: str, env: str) -> str:
    """The exchange account of a user whose orders go to a venue (``mode=live``), e.g.
    ``binance-demo:alice``. A paper account is the user id itself, so the account alone
    says where an order, a position or a balance lives (no lookup, nothing to go stale)."""
    return f"{venue}-{env}:{user_id}"


def parse_venue_account(account: str) -> tuple[str, str, str] | None:
    """``(venue, env, user_id)`` of a venue account; None for a paper account."""
    head, sep, user_id = account.partition(":")
    if not sep:
        return None
    venue, dash, env = head.rpartition("-")
    if not dash or not venue or not user_id:
        raise ValueError(f"not an exchange account: {account!r}")
    return venue, env, user_id
