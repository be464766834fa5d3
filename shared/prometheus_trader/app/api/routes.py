"""The routes under ``/api/v1`` (SPEC §8). Each one authenticates, resolves which user
it acts on, calls one use-case and returns its pydantic model."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, status

from prometheus_trader.app.api.auth import (
    USER_ID_PATTERN,
    Admin,
    Caller,
    TargetUser,
    deps_of,
    known_query_only,
)
from prometheus_trader.app.api.auth import resolve_user as _resolve
from prometheus_trader.app.api.models import (
    ERRORS,
    CreatedUser,
    Health,
    IssuedToken,
    KillBody,
    NewUser,
    OrdersView,
    PauseBody,
    PositionsView,
    ReportsView,
    TokenInfo,
    TokensView,
    UsersView,
    WatchlistAdd,
    WatchlistRenew,
    WatchlistView,
)
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.trading import Balance
from prometheus_trader.domain.watchlist import WatchlistEntry
from prometheus_trader.usecases.controls import BreakerState, Controls, ExchangeKeys, KeyStatus
from prometheus_trader.usecases.stats import UserStats
from prometheus_trader.usecases.user_settings import (
    SYMBOL_PATTERN,
    Settings,
    SettingsUpdate,
    UserSettings,
)
from prometheus_trader.usecases.users import ApiToken, Role, UserAccounts
from prometheus_trader.usecases.watchlist import StoredTopLiquid, TopLiquidList, Watchlist

router = APIRouter(prefix="/api/v1", responses=ERRORS, dependencies=[Depends(known_query_only)])


# ------------------------------------------------------------------- builders
def _controls(request: Request) -> Controls:
    deps = deps_of(request)
    return Controls(
        deps.state(),
        deps.clock(),
        secrets=deps.secrets,
        blobs=deps.blobs,
        balance=deps.balance,
        key_check=deps.key_check,
        trading_env=deps.trading_env,
    )


def _settings(request: Request) -> Settings:
    deps = deps_of(request)
    return Settings(deps.state(), _controls(request).trading_account, deps.clock())


def _watchlist(request: Request) -> Watchlist:
    deps = deps_of(request)
    return Watchlist(deps.state(), deps.clock())


def _accounts(request: Request) -> UserAccounts:
    deps = deps_of(request)
    return UserAccounts(deps.state(), deps.clock())


def _token_info(record: ApiToken) -> TokenInfo:
    return TokenInfo(
        token_id=record.token_id,
        role=record.role,
        user_id=record.user_id,
        label=record.label,
        created_at=record.created_at,
        revoked_at=record.revoked_at,
    )


# --------------------------------------------------------------------- health
@router.get("/health", response_model=Health, tags=["health"])
def health(request: Request) -> Health:
    """Liveness and what the service runs on (no token needed)."""
    return Health(status="ok", **deps_of(request).info())


# ------------------------------------------------------------------ watchlist
WatchUser = Annotated[
    str,
    Query(pattern=USER_ID_PATTERN, description="whose watchlist (default: the token's user)"),
]


def _watch_user(caller: Caller, user_id: str) -> str:
    return _resolve(user_id, caller)


@router.get("/watchlist", response_model=WatchlistView, tags=["watchlist"])
def watchlist_get(request: Request, caller: Caller, user_id: WatchUser = "me") -> WatchlistView:
    """The user's watchlist, highest priority first."""
    user = _watch_user(caller, user_id)
    _controls(request).user(user)
    return WatchlistView(user_id=user, entries=_watchlist(request).entries(user))


@router.post(
    "/watchlist/add",
    response_model=WatchlistEntry,
    status_code=status.HTTP_201_CREATED,
    tags=["watchlist"],
)
def watchlist_add(
    request: Request, caller: Caller, body: WatchlistAdd, user_id: WatchUser = "me"
) -> WatchlistEntry:
    """Add a symbol for ``duration_hours`` (24 by default); re-adding restarts the expiry."""
    user = _watch_user(caller, user_id)
    _controls(request).user(user)
    return _watchlist(request).add(
        user,
        body.exchange,
        body.market_type,
        body.symbol,
        duration_hours=body.duration_hours,
        priority=body.priority,
    )


@router.delete("/watchlist/remove", status_code=status.HTTP_204_NO_CONTENT, tags=["watchlist"])
def watchlist_remove(
    request: Request,
    caller: Caller,
    exchange: Annotated[str, Query(pattern=r"^[a-z0-9]{2,32}$")],
    symbol: Annotated[str, Query(pattern=SYMBOL_PATTERN)],
    market_type: MarketType = MarketType.PERP,
    user_id: WatchUser = "me",
) -> None:
    """Remove a symbol (404 if it is not on the list)."""
    user = _watch_user(caller, user_id)
    _controls(request).user(user)
    _watchlist(request).remove(user, exchange, market_type, symbol)


@router.post("/watchlist/renew", response_model=WatchlistEntry, tags=["watchlist"])
def watchlist_renew(
    request: Request, caller: Caller, body: WatchlistRenew, user_id: WatchUser = "me"
) -> WatchlistEntry:
    """Push the expiry ``hours`` (24 by default) past the later of now and the expiry."""
    user = _watch_user(caller, user_id)
    _controls(request).user(user)
    return _watchlist(request).renew(user, body.exchange, body.market_type, body.symbol, body.hours)


@router.get("/watchlist/top-liquid", response_model=TopLiquidList, tags=["watchlist"])
def watchlist_top_liquid(request: Request, caller: Caller) -> TopLiquidList:
    """The 15 most liquid instruments (24 h quote volume, spread), refreshed daily."""
    deps = deps_of(request)
    return StoredTopLiquid(deps.state(), deps.exchange).get()


# ----------------------------------------------------------------------- user
@router.get("/users/{user_id}/settings", response_model=UserSettings, tags=["user"])
def settings_get(request: Request, user: TargetUser) -> UserSettings:
    """Risk profile, leverage, mode, excluded symbols, notification endpoints."""
    return _settings(request).get(user)


@router.patch("/users/{user_id}/settings", response_model=UserSettings, tags=["user"])
def settings_update(request: Request, user: TargetUser, body: SettingsUpdate) -> UserSettings:
    """Change some settings; all-or-nothing. Live mode needs connected live keys."""
    return _settings(request).update(user, body)


@router.get("/users/{user_id}/exchange", response_model=KeyStatus, tags=["user"])
def keys_status(request: Request, user: TargetUser) -> KeyStatus:
    """Whether exchange keys are connected (never the keys)."""
    return _controls(request).key_status(user)


@router.put("/users/{user_id}/exchange", response_model=KeyStatus, tags=["user"])
def keys_connect(request: Request, user: TargetUser, body: ExchangeKeys) -> KeyStatus:
    """Connect exchange keys: checked with the exchange when it can, stored as a secret."""
    return _controls(request).connect_keys(user, body)


@router.delete("/users/{user_id}/exchange", response_model=KeyStatus, tags=["user"])
def keys_disconnect(request: Request, user: TargetUser) -> KeyStatus:
    """Delete the exchange keys (not while trading live)."""
    return _controls(request).disconnect_keys(user)


@router.get("/users/{user_id}/breakers", response_model=BreakerState, tags=["controls"])
def breakers(request: Request, user: TargetUser) -> BreakerState:
    """Pause, kill switch and breaker state."""
    return _controls(request).breakers(user)


@router.post("/users/{user_id}/pause", response_model=BreakerState, tags=["controls"])
def pause(
    request: Request, user: TargetUser, body: Annotated[PauseBody | None, Body()] = None
) -> BreakerState:
    """Stop opening trades (open positions keep their exits)."""
    reason = (body or PauseBody()).reason
    return _controls(request).pause(user, reason)


@router.post("/users/{user_id}/resume", response_model=BreakerState, tags=["controls"])
def resume(request: Request, user: TargetUser) -> BreakerState:
    """Trade again; 409 while the kill switch is on or the daily loss breaker holds."""
    return _controls(request).resume(user)


@router.post("/users/{user_id}/killswitch", response_model=BreakerState, tags=["controls"])
def killswitch(
    request: Request, user: TargetUser, body: Annotated[KillBody | None, Body()] = None
) -> BreakerState:
    """On: close every position, cancel orders, stop trading. Off: stays paused."""
    return _controls(request).kill(user, (body or KillBody()).on)


@router.get("/users/{user_id}/positions", response_model=PositionsView, tags=["reads"])
def positions(
    request: Request, user: TargetUser, status: Literal["open", "closed"] | None = None
) -> PositionsView:
    """Positions, newest first."""
    return PositionsView(user_id=user, positions=_controls(request).positions(user, status))


@router.get("/users/{user_id}/orders", response_model=OrdersView, tags=["reads"])
def orders(
    request: Request, user: TargetUser, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> OrdersView:
    """Execution decisions and the orders they placed, newest first."""
    return OrdersView(user_id=user, orders=_controls(request).orders(user, limit))


@router.get("/users/{user_id}/balance", response_model=Balance, tags=["reads"])
def balance(request: Request, user: TargetUser) -> Balance:
    """The exchange account's balance."""
    return _controls(request).balance(user)


@router.get("/users/{user_id}/stats", response_model=UserStats, tags=["reads"])
def stats(request: Request, user: TargetUser) -> UserStats:
    """Running statistics (trades, wins, losses, streak, today's PnL %)."""
    return _controls(request).stats(user)


@router.get("/users/{user_id}/reports", response_model=ReportsView, tags=["reads"])
def reports(request: Request, user: TargetUser) -> ReportsView:
    """Daily reports (HTML, JSON, CSV) with links valid for 15 minutes."""
    return ReportsView(user_id=user, reports=_controls(request).reports(user))


# --------------------------------------------------------------------- tokens
@router.get("/users/{user_id}/tokens", response_model=TokensView, tags=["tokens"])
def tokens(request: Request, user: TargetUser) -> TokensView:
    """The user's tokens (ids and dates; never the tokens)."""
    records = _accounts(request).tokens(user)
    return TokensView(tokens=[_token_info(r) for r in records])


@router.post(
    "/users/{user_id}/tokens",
    response_model=IssuedToken,
    status_code=status.HTTP_201_CREATED,
    tags=["tokens"],
)
def rotate_token(request: Request, user: TargetUser) -> IssuedToken:
    """A new token (shown once); every other token of the user is revoked."""
    token, record = _accounts(request).issue_token(user, rotate=True)
    return IssuedToken(token=token, info=_token_info(record))


@router.delete("/users/{user_id}/tokens/{token_id}", response_model=TokenInfo, tags=["tokens"])
def revoke_token(
    request: Request,
    user: TargetUser,
    token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")],
) -> TokenInfo:
    """Revoke one of the user's tokens."""
    return _token_info(_accounts(request).revoke_token(token_id, user_id=user))


# ---------------------------------------------------------------------- admin
@router.post(
    "/admin/users",
    response_model=CreatedUser,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
)
def admin_add_user(request: Request, _admin: Admin, body: NewUser) -> CreatedUser:
    """Create a user and their first token (shown once)."""
    accounts = _accounts(request)
    user = accounts.add(
        body.user_id, profile=body.risk_profile, mode=body.mode, display_name=body.display_name
    )
    token, record = accounts.issue_token(user.user_id)
    return CreatedUser(
        settings=UserSettings.of(user), token=IssuedToken(token=token, info=_token_info(record))
    )


@router.get("/admin/users", response_model=UsersView, tags=["admin"])
def admin_list_users(request: Request, _admin: Admin) -> UsersView:
    """Every user's settings."""
    return UsersView(users=[UserSettings.of(u) for u in _accounts(request).all()])


@router.post(
    "/admin/tokens",
    response_model=IssuedToken,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
)
def admin_issue_token(
    request: Request,
    _admin: Admin,
    user_id: Annotated[str | None, Query(pattern=USER_ID_PATTERN)] = None,
    rotate: bool = False,
) -> IssuedToken:
    """A token for ``user_id`` (or, without one, a new admin token)."""
    role = Role.USER if user_id is not None else Role.ADMIN
    token, record = _accounts(request).issue_token(user_id, role=role, rotate=rotate)
    return IssuedToken(token=token, info=_token_info(record))


__all__ = ["router"]
