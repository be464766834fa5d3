"""A user's controls and reads (SPEC §8): pause, resume (with the breaker state), kill
switch, exchange keys connect/disconnect, positions, orders, balance, stats, reports.

Exchange keys go to the secret store only; the state store keeps which exchange is
connected and the last four characters of the key, nothing that opens the account.
Adapters arrive as providers (called on first use) so a positions read never opens the
secret store or the exchange.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from prometheus_trader.domain.trading import Balance, Execution, Position
from prometheus_trader.domain.users import TradingMode, User, venue_account
from prometheus_trader.ports import BlobStore, Clock, ExchangeError, Filter, SecretStore, StateStore
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.stats import UserStats, user_stats_id
from prometheus_trader.usecases.users import Conflict, Invalid, NotFound

REPORT_URL_SECONDS = 900  # signed report links live 15 minutes


KeyEnv = Literal["demo", "live"]
KEY_ENVS: tuple[KeyEnv, ...] = ("demo", "live")


def exchange_key_secret(user_id: str, exchange: str, env: KeyEnv) -> str:
    """Secret-store name of a user's keys for one exchange and environment (the adapter
    adds its prefix); the same name the ccxt adapter reads."""
    return f"exchange-keys-{exchange}-{env}-{user_id}"


class ExchangeKeys(BaseModel):
    """API credentials for one exchange account. ``demo`` (the exchange's test/demo
    trading) and ``live`` keys are separate and never used for the other."""

    model_config = ConfigDict(extra="forbid")

    exchange: str = Field(pattern=r"^[a-z0-9]{2,32}$", examples=["binance"])
    env: KeyEnv = "demo"
    api_key: SecretStr = Field(min_length=8, max_length=512)
    secret: SecretStr = Field(min_length=8, max_length=1024)
    password: SecretStr | None = Field(default=None, min_length=1, max_length=256)

    def secret_value(self) -> str:
        """The JSON the secret store holds (the ccxt adapter's ``Credentials`` format)."""
        return json.dumps(
            {
                "exchange": self.exchange,
                "env": self.env,
                "api_key": self.api_key.get_secret_value(),
                "secret": self.secret.get_secret_value(),
                "password": self.password.get_secret_value() if self.password else None,
            }
        )


class KeyCheckFailed(Exception):
    """The exchange refused the keys (the message must not contain them)."""


class KeyCheck(Protocol):
    """Optional: an exchange adapter's check that keys work (a read-only call); raises
    KeyCheckFailed when the exchange refuses them."""

    def __call__(self, user_id: str, keys: ExchangeKeys) -> None: ...


class KeyStatus(BaseModel):
    """Whether keys are connected (never the keys)."""

    model_config = ConfigDict(extra="forbid")

    connected: bool
    exchange: str | None = None
    env: KeyEnv | None = None
    key_hint: str | None = Field(default=None, description="last 4 characters of the API key")
    connected_at: datetime | None = None
    checked: bool = Field(default=False, description="the exchange accepted the keys")


class BreakerState(BaseModel):
    """Why a user may or may not trade right now."""

    model_config = ConfigDict(extra="forbid")

    paused: bool
    paused_reason: str | None
    kill_switch: bool
    consecutive_losses: int
    max_consecutive_losses: int
    consecutive_loss_breaker: bool
    realized_pnl_today_pct: float
    daily_loss_limit_pct: float
    daily_loss_breaker: bool = Field(description="holds until the next UTC day")
    can_resume: bool
    detail: str


class ReportLink(BaseModel):
    """A stored report and a time-limited link to it."""

    model_config = ConfigDict(extra="forbid")

    day: str
    key: str
    url: str
    expires_in_s: int


class OrderRecord(BaseModel):
    """One execution decision and the exchange orders it placed."""

    model_config = ConfigDict(extra="forbid")

    execution_id: str
    signal_id: str
    symbol: str
    outcome: str | None
    reasons: list[str]
    order_ids: list[str]
    position_id: str | None
    error: str | None
    created_at: datetime


class Controls:
    """Per-user controls over the ports."""

    def __init__(
        self,
        state: StateStore,
        clock: Clock,
        *,
        secrets: Callable[[], SecretStore],
        blobs: Callable[[], BlobStore],
        balance: Callable[[str], Balance] | None = None,
        key_check: KeyCheck | None = None,
        trading_env: str = "live",
    ) -> None:
        self._state = state
        self._clock = clock
        self._secrets = secrets
        self._blobs = blobs
        self._balance = balance
        self._key_check = key_check
        self._trading_env = trading_env  # where mode=live orders go (Settings.trading_env)

    def user(self, user_id: str) -> User:
        """One user (NotFound if missing)."""
        doc = self._state.get(Collections.USERS, user_id)
        if doc is None:
            raise NotFound(f"no user {user_id!r}")
        return User.model_validate(doc)

    # --------------------------------------------------------------- breakers
    def _stats(self, user_id: str) -> UserStats:
        doc = self._state.get(Collections.STATS, user_stats_id(user_id))
        return UserStats.model_validate(doc) if doc else UserStats(user_id=user_id)

    def breakers(self, user_id: str) -> BreakerState:
        """The user's pause, kill switch and breaker state."""
        user = self.user(user_id)
        stats = self._stats(user_id)
        today = self._clock.now().strftime("%Y-%m-%d")
        pnl_today = stats.realized_pnl_today_pct if stats.day == today else 0.0
        daily = pnl_today <= -user.limits.daily_loss_limit_pct
        streak = stats.consecutive_losses >= user.limits.max_consecutive_losses
        if user.kill_switch:
            can, detail = False, "kill switch on: turn it off first"
        elif daily:
            can, detail = False, "daily loss limit reached: trading resumes at 00:00 UTC"
        elif user.paused:
            can, detail = True, f"paused: {user.paused_reason or 'no reason given'}"
        else:
            can, detail = True, "trading"
        return BreakerState(
            paused=user.paused,
            paused_reason=user.paused_reason,
            kill_switch=user.kill_switch,
            consecutive_losses=stats.consecutive_losses,
            max_consecutive_losses=user.limits.max_consecutive_losses,
            consecutive_loss_breaker=streak,
            realized_pnl_today_pct=pnl_today,
            daily_loss_limit_pct=user.limits.daily_loss_limit_pct,
            daily_loss_breaker=daily,
            can_resume=can,
            detail=detail,
        )

    def pause(self, user_id: str, reason: str = "paused by the user") -> BreakerState:
        """Stop new trades (open positions keep their exits)."""
        self.user(user_id)
        self._state.update(Collections.USERS, user_id, {"paused": True, "paused_reason": reason})
        return self.breakers(user_id)

    def resume(self, user_id: str) -> BreakerState:
        """Trade again. Refused while the kill switch is on or the daily loss breaker
        holds; a consecutive-loss pause is lifted (the user has reviewed) and the streak
        restarts from zero."""
        state = self.breakers(user_id)
        if not state.can_resume:
            raise Conflict(f"cannot resume: {state.detail}")
        self._state.update(Collections.USERS, user_id, {"paused": False, "paused_reason": None})
        if state.consecutive_loss_breaker:
            self._state.update(Collections.STATS, user_stats_id(user_id), {"consecutive_losses": 0})
        return self.breakers(user_id)

    def kill(self, user_id: str, on: bool = True) -> BreakerState:
        """Kill switch on: no new trades and the exit monitor closes every position and
        cancels open orders. Off: the user stays paused until resumed."""
        self.user(user_id)
        if on:
            changes: dict[str, Any] = {
                "kill_switch": True,
                "paused": True,
                "paused_reason": "kill switch",
            }
        else:
            changes = {"kill_switch": False}
        self._state.update(Collections.USERS, user_id, changes)
        return self.breakers(user_id)

    # ------------------------------------------------------------ exchange keys
    def key_status(self, user_id: str) -> KeyStatus:
        """Whether keys are connected."""
        self.user(user_id)
        doc = self._state.get(Collections.EXCHANGE_KEYS, user_id)
        return KeyStatus.model_validate(doc) if doc else KeyStatus(connected=False)

    def trading_account(self, user_id: str) -> str | None:
        """The exchange account ``mode=live`` trades on: the venue of the user's connected
        keys, when they are keys of this deployment's trading environment (demo keys for a
        demo deployment, live keys for a live one); None otherwise."""
        doc = self._state.get(Collections.EXCHANGE_KEYS, user_id)
        if not (doc and doc.get("connected") and doc.get("env") == self._trading_env):
            return None
        return venue_account(user_id, str(doc["exchange"]), self._trading_env)

    def connect_keys(self, user_id: str, keys: ExchangeKeys) -> KeyStatus:
        """Check the keys (when the exchange adapter can), then store them."""
        self.user(user_id)
        checked = False
        if self._key_check is not None:
            try:
                self._key_check(user_id, keys)
            except KeyCheckFailed as exc:
                raise Invalid(f"the exchange refused the keys: {exc}") from None
            checked = True
        name = exchange_key_secret(user_id, keys.exchange, keys.env)
        self._secrets().put_secret(name, keys.secret_value())
        status = KeyStatus(
            connected=True,
            exchange=keys.exchange,
            env=keys.env,
            key_hint=keys.api_key.get_secret_value()[-4:],
            connected_at=self._clock.now(),
            checked=checked,
        )
        self._state.set(Collections.EXCHANGE_KEYS, user_id, status.model_dump(mode="json"))
        return status

    def disconnect_keys(self, user_id: str) -> KeyStatus:
        """Delete the keys (refused while the user trades live)."""
        user = self.user(user_id)
        if user.mode is TradingMode.LIVE:
            raise Conflict("switch mode to paper or advisory before disconnecting the keys")
        status = self.key_status(user_id)
        if status.exchange is not None and status.env is not None:
            self._secrets().delete_secret(exchange_key_secret(user_id, status.exchange, status.env))
        self._state.delete(Collections.EXCHANGE_KEYS, user_id)
        return KeyStatus(connected=False)

    # ------------------------------------------------------------------ reads
    def positions(self, user_id: str, status: str | None = None) -> list[Position]:
        """The user's positions, newest first."""
        self.user(user_id)
        filters = [Filter("user_id", "==", user_id)]
        if status is not None:
            filters.append(Filter("status", "==", status))
        docs = self._state.query(Collections.POSITIONS, filters)
        positions = [Position.model_validate(d) for d in docs]
        return sorted(positions, key=lambda p: (p.opened_ms, p.id), reverse=True)

    def orders(self, user_id: str, limit: int = 100) -> list[OrderRecord]:
        """The user's execution decisions and their orders, newest first."""
        self.user(user_id)
        docs = self._state.query(Collections.EXECUTIONS, [Filter("user_id", "==", user_id)])
        executions = sorted(
            (Execution.model_validate(d) for d in docs),
            key=lambda e: (e.created_at, e.id),
            reverse=True,
        )
        return [
            OrderRecord(
                execution_id=e.id,
                signal_id=e.signal_id,
                symbol=e.symbol,
                outcome=e.outcome.value if e.outcome else None,
                reasons=[r.value for r in e.reasons],
                order_ids=list(e.order_ids),
                position_id=e.position_id,
                error=e.error,
                created_at=e.created_at,
            )
            for e in executions[:limit]
        ]

    def balance(self, user_id: str) -> Balance:
        """The account balance at the exchange."""
        user = self.user(user_id)
        if self._balance is None:
            raise Conflict("no exchange is configured for balances")
        try:
            return self._balance(user.exchange_account)
        except ExchangeError as exc:
            raise Conflict(f"the exchange could not return the balance: {exc}") from None

    def stats(self, user_id: str) -> UserStats:
        """The running statistics the risk gate uses."""
        self.user(user_id)
        return self._stats(user_id)

    def reports(self, user_id: str, limit: int = 31) -> list[ReportLink]:
        """The newest stored reports with signed links."""
        self.user(user_id)
        docs = self._state.query(Collections.REPORTS, [Filter("user_id", "==", user_id)])
        docs.sort(key=lambda d: str(d.get("day", "")), reverse=True)
        links: list[ReportLink] = []
        blobs = self._blobs() if docs else None
        for doc in docs[:limit]:
            for key in doc.get("keys", []):
                try:
                    url = blobs.signed_url(key, REPORT_URL_SECONDS) if blobs else ""
                except KeyError:
                    continue  # the listing outlived the object: nothing to link to
                links.append(
                    ReportLink(
                        day=str(doc["day"]), key=key, url=url, expires_in_s=REPORT_URL_SECONDS
                    )
                )
        return links
