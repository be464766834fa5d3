"""Market-data history on ccxt (the ``MarketHistory`` port): funding and open-interest
history, each a single ccxt call through the adapter's error mapping and retry policy.

Kept apart from ``exchange.py`` (orders and accounts); ``CcxtExchange`` exposes these as
methods so one object serves the collector both ports. Every call goes through
``CcxtExchange._run``: ccxt's own throttle (``enableRateLimit``, the venue's request
weights) spaces the requests, and a 429/418 is retried after its ``Retry-After``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_trader.adapters.ccxt import parse
from prometheus_trader.domain.market import FundingRate, OpenInterest

if TYPE_CHECKING:
    from prometheus_trader.adapters.ccxt.exchange import CcxtExchange

# the longest page each venue serves (ccxt's documented maxima)
OI_PAGE = {"binance": 500, "bybit": 200}
FUNDING_PAGE = {"binance": 1000, "bybit": 200}


def open_interest_history(
    ex: CcxtExchange, symbol: str, since_ms: int, timeframe: str = "5m", limit: int | None = None
) -> list[OpenInterest]:
    """Open-interest points at ``timeframe`` boundaries from ``since_ms``, oldest first
    (one page: at most the venue's maximum, Binance 500, Bybit 200)."""
    ex.instrument(symbol)
    page = min(limit or OI_PAGE.get(ex.exchange_id, 200), OI_PAGE.get(ex.exchange_id, 200))
    rows: list[dict[str, Any]] = ex.run_public(
        lambda c: c.fetch_open_interest_history(symbol, timeframe, since_ms, page)
    )
    points = [parse.open_interest(ex.exchange_id, r) for r in rows]
    return sorted(
        (p for p in points if p is not None and p.ts_ms >= since_ms), key=lambda p: p.ts_ms
    )


def funding_history(
    ex: CcxtExchange, symbol: str, since_ms: int, limit: int | None = None
) -> list[FundingRate]:
    """Settled funding rates from ``since_ms``, oldest first (one page)."""
    ex.instrument(symbol)
    page = min(
        limit or FUNDING_PAGE.get(ex.exchange_id, 200), FUNDING_PAGE.get(ex.exchange_id, 200)
    )
    rows: list[dict[str, Any]] = ex.run_public(
        lambda c: c.fetch_funding_rate_history(symbol, since_ms, page)
    )
    rates = [parse.funding(ex.exchange_id, r) for r in rows]
    return sorted(
        (f for f in rates if f is not None and f.ts_ms >= since_ms), key=lambda f: f.ts_ms
    )
