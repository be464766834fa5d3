"""Request and response bodies of the API that are not use-case models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.trading import Position
from prometheus_trader.domain.users import RiskProfile, TradingMode
from prometheus_trader.domain.watchlist import WatchlistEntry
from prometheus_trader.usecases.controls import OrderRecord, ReportLink
from prometheus_trader.usecases.json_types import JSON_NUMBER
from prometheus_trader.usecases.user_settings import SYMBOL_PATTERN, UserSettings
from prometheus_trader.usecases.users import Role

EXCHANGE_PATTERN = r"^[a-z0-9]{2,32}$"
Hours = Annotated[float, Field(gt=0, le=24 * 30), JSON_NUMBER]


# Request bodies take numbers and booleans as JSON has them: `"24"` or `false` where the
# schema says number is refused (422), not coerced, so what passes is what the schema
# documents (JSON_NUMBER; booleans strict).


class ErrorBody(BaseModel):
    """Every 4xx: a sentence saying what was wrong (``errors`` for field-level detail)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "bad request",
        401: "missing, invalid or revoked token",
        403: "the token may not do this",
        404: "no such user or object",
        408: "the body did not arrive in time",
        409: "conflicts with the current state",
        413: "body too large",
        422: "invalid body, path or query",
        429: "rate limit reached",
    }.items()
}


class Health(BaseModel):
    """``GET /health``."""

    status: str
    backend: str | None = None
    exchange_mode: str | None = None
    exchange: str | None = None


class InstrumentRef(BaseModel):
    """Names one instrument of one exchange."""

    model_config = ConfigDict(extra="forbid")

    exchange: str = Field(pattern=EXCHANGE_PATTERN, examples=["binance"])
    market_type: MarketType = MarketType.PERP
    symbol: str = Field(pattern=SYMBOL_PATTERN, examples=["ETH/USDT:USDT"])


class WatchlistAdd(InstrumentRef):
    """``POST /watchlist/add``."""

    duration_hours: Hours = 24
    priority: Annotated[int, Field(ge=0, le=10), JSON_NUMBER] = 0


class WatchlistRenew(InstrumentRef):
    """``POST /watchlist/renew``."""

    hours: Hours = 24


class WatchlistView(BaseModel):
    """A user's watchlist."""

    user_id: str
    entries: list[WatchlistEntry]


class PositionsView(BaseModel):
    """A user's positions."""

    user_id: str
    positions: list[Position]


class OrdersView(BaseModel):
    """A user's execution decisions and orders."""

    user_id: str
    orders: list[OrderRecord]


class ReportsView(BaseModel):
    """A user's reports with signed links."""

    user_id: str
    reports: list[ReportLink]


class PauseBody(BaseModel):
    """``POST /users/{id}/pause``."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="paused by the user", min_length=1, max_length=200)


class KillBody(BaseModel):
    """``POST /users/{id}/killswitch``: on (default) or off."""

    model_config = ConfigDict(extra="forbid")

    on: bool = Field(default=True, strict=True)


class NewUser(BaseModel):
    """``POST /admin/users``."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    risk_profile: RiskProfile = RiskProfile.MODERATE
    # live comes later: the user connects keys, then switches their settings to live
    mode: Literal[TradingMode.PAPER, TradingMode.ADVISORY] = TradingMode.PAPER
    display_name: str = Field(default="", max_length=100)


class TokenInfo(BaseModel):
    """A token record, never the token (or its hash)."""

    token_id: str
    role: Role
    user_id: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


class IssuedToken(BaseModel):
    """A new token: shown once, store it now."""

    token: str
    info: TokenInfo


class CreatedUser(BaseModel):
    """A new user and their first token."""

    settings: UserSettings
    token: IssuedToken


class UsersView(BaseModel):
    """Every user (admin)."""

    users: list[UserSettings]


class TokensView(BaseModel):
    """A holder's tokens."""

    tokens: list[TokenInfo]
