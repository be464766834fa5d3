"""ccxt exchange adapters: Binance USD-M and Bybit linear perpetuals, demo and live.

- ``config``: venues, environments and their hosts, keys in the secret store
- ``errors``: the one error mapping and retry policy
- ``parse``: ccxt dicts → domain models
- ``exchange``: ``CcxtExchange``, the ``Exchange`` port
- ``keys``: add / check / remove a user's keys
"""

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
    "Credentials",
    "EndpointRefused",
    "Env",
    "KeysMissing",
    "LiveTradingRefused",
    "RetryPolicy",
    "keys_from_store",
    "secret_name",
]
