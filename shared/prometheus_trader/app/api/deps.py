"""What the API needs from the outside world: port providers (called on first use, so a
health check opens nothing) and its limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_trader.domain.trading import Balance
from prometheus_trader.ports import BlobStore, Clock, MarketStore, SecretStore, StateStore
from prometheus_trader.usecases.controls import KeyCheck

DEFAULT_RATE_PER_MINUTE = 120
DEFAULT_MAX_BODY_BYTES = 64 * 1024


@dataclass
class ApiDeps:
    """Providers of the ports the routes use, and the API's limits."""

    state: Callable[[], StateStore]
    clock: Callable[[], Clock]
    secrets: Callable[[], SecretStore]
    blobs: Callable[[], BlobStore]
    market: Callable[[], MarketStore] | None = None
    balance: Callable[[str], Balance] | None = None
    key_check: KeyCheck | None = None
    exchange: str = "binance"
    trading_env: str = "live"  # where mode=live orders go (Settings.trading_env)
    info: Callable[[], dict[str, Any]] = field(default=lambda: {})
    rate_per_minute: int = DEFAULT_RATE_PER_MINUTE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
