"""Build the ccxt exchange a deployment uses (for the wiring in ``app``).

Keys come from the secret store, order claims from the state store, the live switch from
``Settings.allow_live``; the user's own switch is read from the users collection on each
new account (``mode == "live"``). Accounts are venue accounts (``binance-demo:alice``,
``domain.users.venue_account``); the user id in them picks the keys.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_trader.adapters.ccxt.claims import OrderClaims
from prometheus_trader.adapters.ccxt.config import Env, KeysMissing, keys_from_store
from prometheus_trader.adapters.ccxt.exchange import CcxtExchange
from prometheus_trader.adapters.ccxt.weight_budget import DEFAULT_FRACTION
from prometheus_trader.domain.users import parse_venue_account
from prometheus_trader.ports import SecretStore, StateStore
from prometheus_trader.usecases.names import Collections


def build_ccxt_exchange(
    exchange: str,
    env: Env,
    *,
    secrets: SecretStore,
    state: StateStore,
    allow_live: bool,
    urls: Mapping[str, str] | None = None,
    weight_budget_fraction: float = DEFAULT_FRACTION,
) -> CcxtExchange:
    """A ``CcxtExchange`` for ``exchange`` (binance, bybit) in ``env`` (demo, live)."""

    keys = keys_from_store(secrets, exchange, env)

    def user_of(account: str) -> str:
        # a venue account names its user (``binance-demo:alice``, domain.users); an
        # account of another venue or environment never gets this venue's keys
        parsed = parse_venue_account(account)
        if parsed is None:
            return account  # a bare user id (direct use of the adapter)
        venue, account_env, user_id = parsed
        if (venue, account_env) != (exchange, env):
            raise KeysMissing(f"account {account!r} is not a {env} account on {exchange}")
        return user_id

    def user_allows_live(account: str) -> bool:
        doc = state.get(Collections.USERS, user_of(account))
        return bool(doc and doc.get("mode") == "live")

    return CcxtExchange(
        exchange,
        env,
        lambda account: keys(user_of(account)),
        allow_live=allow_live,
        user_allows_live=user_allows_live,
        urls=urls,
        claims=OrderClaims(state),
        weight_budget_fraction=weight_budget_fraction,
    )
