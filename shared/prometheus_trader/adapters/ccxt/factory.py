"""Build the ccxt exchange a deployment uses (for the wiring in ``app``).

Keys come from the secret store, order claims from the state store, the live switch from
``Settings.allow_live``; the user's own switch is read from the users collection on each
new account (``mode == "live"``).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_trader.adapters.ccxt.claims import OrderClaims
from prometheus_trader.adapters.ccxt.config import Env, keys_from_store
from prometheus_trader.adapters.ccxt.exchange import CcxtExchange
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
) -> CcxtExchange:
    """A ``CcxtExchange`` for ``exchange`` (binance, bybit) in ``env`` (demo, live)."""

    def user_allows_live(account: str) -> bool:
        # accounts are user ids (User.exchange_account defaults to the user id)
        doc = state.get(Collections.USERS, account)
        return bool(doc and doc.get("mode") == "live")

    return CcxtExchange(
        exchange,
        env,
        keys_from_store(secrets, exchange, env),
        allow_live=allow_live,
        user_allows_live=user_allows_live,
        urls=urls,
        claims=OrderClaims(state),
    )
