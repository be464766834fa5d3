"""``MarketHistory``: the history endpoints a live collector needs beyond ``Exchange``.

An exchange adapter may implement it next to ``Exchange`` (``CcxtExchange`` does); the
replay exchange does not (its store already holds the history), so the collector asks
for it only when the exchange has it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from prometheus_trader.domain.market import FundingRate, OpenInterest


@runtime_checkable
class MarketHistory(Protocol):
    """Funding and open-interest history of one exchange, one page per call."""

    def fetch_open_interest_history(
        self, symbol: str, since_ms: int, timeframe: str = "5m", limit: int | None = None
    ) -> list[OpenInterest]:
        """Open interest at ``timeframe`` boundaries with ``ts_ms >= since_ms``, oldest
        first; one page (the venue's maximum when ``limit`` is None)."""
        ...

    def fetch_funding_history(
        self, symbol: str, since_ms: int, limit: int | None = None
    ) -> list[FundingRate]:
        """Settled funding rates with ``ts_ms >= since_ms``, oldest first; one page."""
        ...
