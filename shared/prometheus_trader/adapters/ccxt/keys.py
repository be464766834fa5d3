"""Add, check and remove a user's exchange keys (stored per environment in the secret store).

A key is stored only after it worked: a balance read on its environment's endpoint, and,
where the exchange reports API-key permissions, a refusal of keys that can withdraw.
Live keys can only be added or checked when the deployment allows live trading.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_trader.adapters.ccxt.config import Credentials, Env, LiveTradingRefused, secret_name
from prometheus_trader.adapters.ccxt.exchange import CcxtExchange
from prometheus_trader.ports import ExchangeError, SecretStore


class KeysRefused(ExchangeError):
    """The key did not pass the checks; nothing was stored."""


@dataclass(frozen=True)
class KeyCheck:
    """The outcome of checking one key (no key material)."""

    user_id: str
    exchange: str
    env: Env
    equity: float
    withdrawals: bool | None  # None: the exchange does not report it for this env


ExchangeFactory = Callable[[Credentials], CcxtExchange]


def default_factory(
    *, allow_live: bool, urls: Mapping[str, str] | None = None, **kwargs: Any
) -> ExchangeFactory:
    """Build the adapter a check runs on (``urls`` points at a stand-in in tests)."""

    def make(creds: Credentials) -> CcxtExchange:
        return CcxtExchange(
            creds.exchange,
            creds.env,
            lambda _account: creds,
            allow_live=allow_live,
            user_allows_live=lambda _account: True,  # the CLI operator adds the user's key
            urls=urls,
            **kwargs,
        )

    return make


def check_credentials(user_id: str, creds: Credentials, factory: ExchangeFactory) -> KeyCheck:
    """A balance read and the withdrawal permission, on the key's own environment."""
    exchange = factory(creds)
    balance = exchange.fetch_balance(user_id)
    withdrawals = exchange.withdrawals_enabled(user_id)
    if withdrawals:
        raise KeysRefused("this key may withdraw funds: create a key with trading permission only")
    return KeyCheck(user_id, creds.exchange, creds.env, balance.equity, withdrawals)


def add_keys(
    store: SecretStore, user_id: str, creds: Credentials, factory: ExchangeFactory
) -> KeyCheck:
    """Check, then store (replacing any earlier key of this user, exchange and env)."""
    try:
        result = check_credentials(user_id, creds, factory)
    except LiveTradingRefused:
        raise
    except KeysRefused:
        raise
    except ExchangeError as exc:
        raise KeysRefused(f"the key failed its check: {exc}") from None
    store.put_secret(secret_name(user_id, creds.exchange, creds.env), creds.to_secret())
    return result


def check_keys(
    store: SecretStore, user_id: str, exchange: str, env: Env, factory: ExchangeFactory
) -> KeyCheck:
    """Check the stored key again."""
    creds = Credentials.from_secret(store.get_secret(secret_name(user_id, exchange, env)))
    return check_credentials(user_id, creds, factory)


def remove_keys(store: SecretStore, user_id: str, exchange: str, env: Env) -> None:
    """Delete the stored key (no-op if none)."""
    store.delete_secret(secret_name(user_id, exchange, env))
