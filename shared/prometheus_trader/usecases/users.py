"""Users and their API tokens (SPEC §8): create and list users, issue, rotate and revoke
bearer tokens, authenticate a presented token.

A token is ``pt_<token id>_<secret>``; only its SHA-256 is stored (the document id of the
token record), so a leaked database reveals no usable token and a lookup is one read.
The token id is public (it names the token in listings and revocations); the full token
is returned once, when it is issued.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationError

from prometheus_trader.domain.users import RiskProfile, TradingMode, User
from prometheus_trader.ports import Clock, Filter, StateStore
from prometheus_trader.usecases.names import Collections

TOKEN_PREFIX = "pt_"


class UseCaseError(Exception):
    """A request the use-case refuses; the message is safe to show to the caller."""


class NotFound(UseCaseError):
    """No such user, entry or object (→ 404)."""


class Conflict(UseCaseError):
    """The request clashes with the current state (→ 409)."""


class Invalid(UseCaseError):
    """The request is well-formed but not acceptable (→ 400)."""


class Role(StrEnum):
    """What a token may do: a user reaches their own data, an admin everyone's."""

    USER = "user"
    ADMIN = "admin"


class ApiToken(BaseModel):
    """A stored token record (never the token itself)."""

    model_config = ConfigDict(extra="ignore")

    token_id: str
    token_sha256: str
    role: Role
    user_id: str | None = None
    label: str = ""
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    token_id: str
    role: Role
    user_id: str | None

    @property
    def is_admin(self) -> bool:
        """True for an admin token."""
        return self.role is Role.ADMIN

    def may_act_for(self, user_id: str) -> bool:
        """True if the caller may read and change ``user_id``'s data."""
        return self.is_admin or self.user_id == user_id


def token_sha256(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_token() -> tuple[str, str]:
    token_id = secrets.token_hex(6)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


class UserAccounts:
    """Users and tokens over the state store."""

    def __init__(
        self,
        state: StateStore,
        clock: Clock,
        new_token: Callable[[], tuple[str, str]] = _new_token,
    ) -> None:
        self._state = state
        self._clock = clock
        self._new_token = new_token

    # ------------------------------------------------------------------- users
    def add(
        self,
        user_id: str,
        *,
        profile: RiskProfile = RiskProfile.MODERATE,
        mode: TradingMode = TradingMode.PAPER,
        display_name: str = "",
    ) -> User:
        """Create a user with the profile's default limits (Conflict if the id exists).

        A new user starts in paper or advisory mode: live needs the user's own exchange
        keys first (connected with their token, then ``mode=live`` in their settings)."""
        if mode is TradingMode.LIVE:
            raise Invalid(
                "a new user starts in paper or advisory mode: connect exchange keys, then "
                "switch the user's settings to live"
            )
        try:
            user = User.with_profile(user_id, profile, mode=mode, display_name=display_name)
        except ValidationError as exc:
            raise Invalid(f"invalid user: {exc.errors()[0]['msg']}") from None
        if not self._state.create(Collections.USERS, user_id, user.model_dump(mode="json")):
            raise Conflict(f"user {user_id!r} already exists")
        return user

    def get(self, user_id: str) -> User:
        """One user (NotFound if missing)."""
        doc = self._state.get(Collections.USERS, user_id)
        if doc is None:
            raise NotFound(f"no user {user_id!r}")
        return User.model_validate(doc)

    def all(self) -> list[User]:
        """Every user, sorted by id."""
        users = [User.model_validate(d) for d in self._state.query(Collections.USERS)]
        return sorted(users, key=lambda u: u.user_id)

    # ------------------------------------------------------------------ tokens
    def issue_token(
        self, user_id: str | None, *, role: Role = Role.USER, rotate: bool = False, label: str = ""
    ) -> tuple[str, ApiToken]:
        """A new token (returned once, with its record). ``rotate`` revokes the holder's
        other tokens. A user token needs an existing user; an admin token has none."""
        if role is Role.USER:
            if user_id is None:
                raise Invalid("a user token needs a user id")
            self.get(user_id)
        elif user_id is not None:
            raise Invalid("an admin token belongs to no user")
        token_id, token = self._new_token()
        record = ApiToken(
            token_id=token_id,
            token_sha256=token_sha256(token),
            role=role,
            user_id=user_id,
            label=label,
            created_at=self._clock.now(),
        )
        if not self._state.create(
            Collections.API_TOKENS, record.token_sha256, record.model_dump(mode="json")
        ):
            raise Conflict("token collision; try again")  # 2^-256: never in practice
        if rotate:
            for other in self.tokens(user_id, role=role):
                if other.token_id != token_id and other.revoked_at is None:
                    self._revoke(other)
        return token, record

    def tokens(self, user_id: str | None, *, role: Role = Role.USER) -> list[ApiToken]:
        """The token records of a user (or every admin token), oldest first."""
        # one equality per query: no composite index (role is filtered here)
        if user_id is not None:
            docs = self._state.query(Collections.API_TOKENS, [Filter("user_id", "==", user_id)])
        else:
            docs = self._state.query(Collections.API_TOKENS, [Filter("role", "==", role.value)])
        records = [r for r in map(ApiToken.model_validate, docs) if r.role is role]
        return sorted(records, key=lambda r: (r.created_at, r.token_id))

    def revoke_token(self, token_id: str, *, user_id: str | None = None) -> ApiToken:
        """Revoke one token by its public id (scoped to ``user_id`` when given)."""
        docs = self._state.query(Collections.API_TOKENS, [Filter("token_id", "==", token_id)])
        records = [ApiToken.model_validate(d) for d in docs]
        if user_id is not None:
            records = [r for r in records if r.user_id == user_id]
        if not records:
            raise NotFound(f"no token {token_id!r}")
        return self._revoke(records[0])

    def _revoke(self, record: ApiToken) -> ApiToken:
        if record.revoked_at is not None:
            return record
        now = self._clock.now()
        self._state.update(
            Collections.API_TOKENS, record.token_sha256, {"revoked_at": now.isoformat()}
        )
        return record.model_copy(update={"revoked_at": now})

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token, else None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        doc = self._state.get(Collections.API_TOKENS, token_sha256(token))
        if doc is None:
            return None
        record = ApiToken.model_validate(doc)
        # constant-time compare of the stored hash (the lookup already matched it)
        if record.revoked_at is not None or not secrets.compare_digest(
            record.token_sha256, token_sha256(token)
        ):
            return None
        return Principal(token_id=record.token_id, role=record.role, user_id=record.user_id)
