"""Market-data history on ccxt (the ``MarketHistory`` port): funding and open-interest
history, each a single ccxt call through the adapter's error mapping and retry policy.

Kept apart from ``exchange.py`` (orders and accounts); ``CcxtExchange`` exposes these as
methods so one object serves the collector both ports. Every call goes through
``CcxtExchange._run``: ccxt's own throttle (``enableRateLimit``, the venue's request
weights) spaces the requests, and a 429/418 is retried after its ``Retry-After``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from prometheus_trader.adapters.ccxt import parse
from prometheus_trader.domain.market import TIMEFRAME_MS, FundingRate, OpenInterest

if TYPE_CHECKING:
    from prometheus_trader.adapters.ccxt.exchange import CcxtExchange

# the longest page each venue serves (ccxt's documented maxima)
OHLCV_PAGE = {"binance": 1000, "bybit": 1000}  # ccxt caps Binance futures at 1000 too
OI_PAGE = {"binance": 500, "bybit": 200}
FUNDING_PAGE = {"binance": 1000, "bybit": 200}


def ohlcv_pages(
    ex: CcxtExchange, symbol: str, timeframe: str, since_ms: int, limit: int, page: int
) -> list[list[Any]]:
    """ccxt OHLCV rows from ``since_ms``, ``page`` (+1 for the forming bar) a request,
    until ``limit`` rows or a short page (the venue has no more)."""
    rows: list[list[Any]] = []
    since = since_ms
    while len(rows) < limit:
        got: list[list[Any]] = ex.run_public(
            functools.partial(_ohlcv, symbol, timeframe, since, page + 1)
        )
        rows += [r for r in got if int(r[0]) >= since]
        if len(got) <= page:
            break
        # the next open time, not +1 ms: venues round an unaligned start differently
        since = int(got[-1][0]) + TIMEFRAME_MS.get(timeframe, 1)
    return rows


def _ohlcv(symbol: str, timeframe: str, since: int, limit: int, client: Any) -> Any:
    return client.fetch_ohlcv(symbol, timeframe, since, limit)


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
