"""ccxt exchange adapters: Binance USD-M and Bybit linear perpetuals, demo and live.

- ``config``: venues, environments and their hosts, keys in the secret store
- ``errors``: the one error mapping and retry policy
- ``claims``: one sender per client order id across processes (state-store claims)
- ``parse``: ccxt dicts → domain models
- ``exchange``: ``CcxtExchange``, the ``Exchange`` port
- ``keys``: add / check / remove a user's keys
"""

from prometheus_trader.adapters.ccxt.claims import ClaimPolicy, OrderClaims
from prometheus_trader.adapters.ccxt.config import (
    Credentials,
    EndpointRefused,
    Env,
    KeysMissing,
    LiveTradingRefused,
    keys_from_store,
    secret_name,
)
from prometheus_trader.adapters.ccxt.errors import RetryPolicy
from prometheus_trader.adapters.ccxt.exchange import CcxtExchange

__all__ = [
    "CcxtExchange",
    "ClaimPolicy",
    "Credentials",
    "EndpointRefused",
    "Env",
    "KeysMissing",
    "LiveTradingRefused",
    "OrderClaims",
    "RetryPolicy",
    "keys_from_store",
    "secret_name",
]
