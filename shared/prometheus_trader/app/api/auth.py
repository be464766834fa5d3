"""Bearer-token authentication, per-token rate limit and the "may this caller reach this
user" rule, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prometheus_trader.app.api.deps import ApiDeps
from prometheus_trader.usecases.ratelimit import RateLimiter
from prometheus_trader.usecases.users import Principal, UserAccounts

USER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ME = "me"

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer pt_...`")


def deps_of(request: Request) -> ApiDeps:
    """The app's dependencies (set by ``create_app``)."""
    deps: ApiDeps = request.app.state.deps
    return deps


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of a valid token, counted against its rate limit."""
    if credentials is None:
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    deps = deps_of(request)
    state, clock = deps.state(), deps.clock()
    caller = UserAccounts(state, clock).authenticate(credentials.credentials)
    if caller is None:
        raise _unauthorized("invalid or revoked token")
    decision = RateLimiter(state, clock, deps.rate_per_minute).hit(caller.token_id)
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {decision.limit} requests per minute reached; "
            f"retry in {decision.reset_s}s",
            headers={"Retry-After": str(decision.reset_s)},
        )
    return caller


Caller = Annotated[Principal, Depends(principal)]


def admin(caller: Caller) -> Principal:
    """Only admin tokens pass."""
    if not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin token required")
    return caller


Admin = Annotated[Principal, Depends(admin)]


def resolve_user(user_id: str, caller: Principal) -> str:
    """``me`` → the caller's user; another user's id → 403 unless the caller is admin."""
    if user_id == ME:
        if caller.user_id is None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "an admin token has no 'me'")
        return caller.user_id
    if not caller.may_act_for(user_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token may not reach that user")
    return user_id


def target_user(
    caller: Caller,
    user_id: Annotated[
        str,
        Path(pattern=USER_ID_PATTERN, description="a user id, or `me` for the token's user"),
    ],
) -> str:
    """The user a ``/users/{user_id}/...`` route acts on."""
    return resolve_user(user_id, caller)


TargetUser = Annotated[str, Depends(target_user)]


def known_query_only(request: Request) -> None:
    """A query parameter the route does not declare is a 400: a typo (``?stauts=open``)
    must not pass silently as if it were absent."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    declared = {p.alias for p in _all_query_params(dependant)}
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"unknown query parameter(s): {', '.join(unknown)}"
        )


def _all_query_params(dependant: Any) -> list[Any]:
    params = list(dependant.query_params)
    for sub in dependant.dependencies:
        params.extend(_all_query_params(sub))
    return params
