"""A user's settings (SPEC §8): risk profile, leverage, mode, excluded symbols, watch-all
and notification endpoints. An update is validated as a whole user before one write, so
a bad field changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from pydantic.json_schema import SkipJsonSchema

from prometheus_trader.domain.users import PROFILE_LIMITS, RiskProfile, TradingMode, User
from prometheus_trader.ports import Clock, Filter, StateStore
from prometheus_trader.usecases.json_types import JSON_NUMBER
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.users import Conflict, Invalid, NotFound

SYMBOL_PATTERN = r"^[A-Za-z0-9]{1,20}(/[A-Za-z0-9]{1,20}(:[A-Za-z0-9]{1,20})?)?$"
WEBHOOK_PATTERN = r"^https://[^\s/$.?#][^\s]{0,490}$"
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$"
Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN)]


class UserSettings(BaseModel):
    """What a user may see and change about their account."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    display_name: str
    risk_profile: RiskProfile
    leverage: float
    mode: TradingMode
    excluded_symbols: list[str]
    watch_all: bool
    notify_webhook: str | None
    notify_email: str | None

    @classmethod
    def of(cls, user: User) -> UserSettings:
        """The settings view of a user."""
        return cls(
            user_id=user.user_id,
            display_name=user.display_name,
            risk_profile=user.risk_profile,
            leverage=user.limits.leverage,
            mode=user.mode,
            excluded_symbols=list(user.excluded_symbols),
            watch_all=user.watch_all,
            notify_webhook=user.notify_webhook,
            notify_email=user.notify_email,
        )


class SettingsUpdate(BaseModel):
    """A partial update: only the fields sent change. ``notify_*: null`` clears one.

    A new ``risk_profile`` resets the limits to that profile's defaults (then ``leverage``,
    if sent, applies on top)."""

    model_config = ConfigDict(extra="forbid")

    # optional but not nullable: SkipJsonSchema keeps `null` out of the schema; a null
    # that arrives anyway is refused in ``Settings.update`` (400)
    display_name: Annotated[str, Field(max_length=100)] | SkipJsonSchema[None] = None
    risk_profile: RiskProfile | SkipJsonSchema[None] = None
    leverage: Annotated[float, Field(ge=1, le=125), JSON_NUMBER] | SkipJsonSchema[None] = None
    mode: TradingMode | SkipJsonSchema[None] = None
    excluded_symbols: Annotated[list[Symbol], Field(max_length=200)] | SkipJsonSchema[None] = None
    watch_all: StrictBool | SkipJsonSchema[None] = None
    notify_webhook: str | None = Field(default=None, pattern=WEBHOOK_PATTERN)
    notify_email: str | None = Field(default=None, pattern=EMAIL_PATTERN)


NULLABLE = {"notify_webhook", "notify_email"}
# an execution record this recent without completed_at may still place orders on the
# user's current account: the longest signal TTL (Settings.signal_ttl_minutes <= 30);
# an older one acts on a decision for an expired signal, and its position (if any)
# carries the account it was opened on anyway (Position.exchange_account)
IN_FLIGHT_FOR = timedelta(minutes=30)


class Settings:
    """Read and update a user's settings."""

    def __init__(
        self,
        state: StateStore,
        trading_account: Callable[[str], str | None],
        clock: Clock | None = None,
        in_flight_for: timedelta = IN_FLIGHT_FOR,
    ) -> None:
        self._state = state
        # the exchange account mode=live would trade on (None: no keys for it)
        self._trading_account = trading_account
        self._clock = clock
        self._in_flight_for = in_flight_for

    def _user(self, user_id: str) -> User:
        doc = self._state.get(Collections.USERS, user_id)
        if doc is None:
            raise NotFound(f"no user {user_id!r}")
        return User.model_validate(doc)

    def get(self, user_id: str) -> UserSettings:
        """The user's settings."""
        return UserSettings.of(self._user(user_id))

    def update(self, user_id: str, update: SettingsUpdate) -> UserSettings:
        """Apply ``update`` (all or nothing)."""
        user = self._user(user_id)
        sent = update.model_fields_set
        for name in sorted(sent - NULLABLE):
            if getattr(update, name) is None:
                raise Invalid(f"{name} may not be null")
        data = user.model_dump(mode="json")
        if update.risk_profile is not None:
            data["risk_profile"] = update.risk_profile.value
            data["limits"] = PROFILE_LIMITS[update.risk_profile].model_dump(mode="json")
        if update.leverage is not None:
            data["limits"]["leverage"] = update.leverage
        if update.excluded_symbols is not None:
            bad = [s for s in update.excluded_symbols if not _is_symbol(s)]
            if bad:
                raise Invalid(f"excluded_symbols: not a symbol or base asset: {bad[0]!r}")
            data["excluded_symbols"] = sorted({s.upper() for s in update.excluded_symbols})
        for name in ("display_name", "mode", "watch_all", *sorted(NULLABLE)):
            if name in sent:
                value = getattr(update, name)
                data[name] = value.value if isinstance(value, TradingMode) else value
        if "mode" in sent:
            data["exchange_account"] = self._account_for(user, update.mode)
        try:
            new = User.model_validate(data)
        except ValidationError as exc:
            raise Invalid(f"invalid settings: {exc.errors()[0]['msg']}") from None
        self._state.set(Collections.USERS, user_id, new.model_dump(mode="json"))
        return UserSettings.of(new)

    def _account_for(self, user: User, mode: TradingMode | None) -> str:
        """The exchange account ``mode`` trades on: the venue's for live, the paper ledger's
        (the user id) otherwise. Refused while positions are open on the current account
        (their orders and stops live there) and while an execution is in flight (its
        orders go to the current account)."""
        if mode is TradingMode.LIVE:
            account = self._trading_account(user.user_id)
            if account is None:
                raise Conflict(
                    "live mode needs exchange keys for this deployment's trading environment: "
                    "connect them first"
                )
        else:
            account = user.user_id
        if account != user.exchange_account and self._open_positions(user.user_id):
            raise Conflict(
                "positions are open on the current account: close them (or wait for their "
                "exits) before switching between paper and live"
            )
        if account != user.exchange_account and self._in_flight(user.user_id):
            raise Conflict(
                "a trade is being executed on the current account: try again once it has "
                "completed (a few seconds) before switching between paper and live"
            )
        return account

    def _in_flight(self, user_id: str) -> bool:
        """An execution of the user started less than ``in_flight_for`` ago and has not
        completed (the executor may still place orders on the current account)."""
        now = self._clock.now() if self._clock is not None else datetime.now(UTC)
        cutoff = now - self._in_flight_for
        # one equality filter (no composite index), as reconciliation reads them
        docs = self._state.query(Collections.EXECUTIONS, [Filter("user_id", "==", user_id)])
        return any(
            d.get("completed_at") is None and _recent(d.get("created_at"), cutoff) for d in docs
        )

    def _open_positions(self, user_id: str) -> int:
        filters = [Filter("user_id", "==", user_id), Filter("status", "==", "open")]
        return len(self._state.query(Collections.POSITIONS, filters, limit=1))


def _recent(created_at: object, cutoff: datetime) -> bool:
    """``created_at`` (a datetime or ISO string) is after ``cutoff``; unreadable: recent
    (refuse rather than switch under a running execution)."""
    if isinstance(created_at, str):
        try:
            created_at = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        except ValueError:
            return True
    if not isinstance(created_at, datetime):
        return True
    return created_at.astimezone(UTC) > cutoff


def _is_symbol(value: str) -> bool:
    return re.fullmatch(SYMBOL_PATTERN, value) is not None
