"""Watchlists (SPEC §8): add (24 h by default), remove, renew (+24 h), list; and the
top-liquid list (top 15 by 24 h quote volume and spread) the housekeeping job refreshes
daily from the market store's latest tickers.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.market import MarketType, Ticker
from prometheus_trader.domain.watchlist import WatchlistEntry
from prometheus_trader.ports import Clock, Filter, MarketStore, StateStore
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.users import Conflict, NotFound

DEFAULT_HOURS = 24
MAX_ENTRIES = 50  # per user: a watchlist is a short list, not a copy of the market
TOP_LIQUID_N = 15
TOP_LIQUID_MAX_SPREAD_PCT = 0.5  # wider than this is not "liquid" whatever the volume
TOP_LIQUID_DOC = "top-liquid"  # in the rankings collection


def entry_id(user_id: str, exchange: str, market_type: MarketType, symbol: str) -> str:
    """Document id of one entry (symbols hold '/' which document ids may not)."""
    digest = hashlib.sha256(f"{exchange}|{market_type.value}|{symbol}".encode()).hexdigest()
    return f"{user_id}-{digest[:20]}"


class Watchlist:
    """One user's watchlist entries."""

    def __init__(self, state: StateStore, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def entries(self, user_id: str) -> list[WatchlistEntry]:
        """Every entry of ``user_id`` (expired ones until housekeeping removes them)."""
        docs = self._state.query(Collections.WATCHLISTS, [Filter("user_id", "==", user_id)])
        entries = [WatchlistEntry.model_validate(d) for d in docs]
        return sorted(entries, key=lambda e: (-e.priority, e.symbol, e.exchange))

    def add(
        self,
        user_id: str,
        exchange: str,
        market_type: MarketType,
        symbol: str,
        *,
        duration_hours: float = DEFAULT_HOURS,
        priority: int = 0,
    ) -> WatchlistEntry:
        """Add (or re-add, which restarts the expiry and sets the priority)."""
        doc_id = entry_id(user_id, exchange, market_type, symbol)
        existing = self._state.get(Collections.WATCHLISTS, doc_id)
        if existing is None and len(self.entries(user_id)) >= MAX_ENTRIES:
            raise Conflict(f"watchlist is full ({MAX_ENTRIES} entries): remove one first")
        now = self._clock.now()
        entry = WatchlistEntry(
            user_id=user_id,
            exchange=exchange,
            market_type=market_type,
            symbol=symbol,
            priority=priority,
            added_at=now,
            expires_at=now + timedelta(hours=duration_hours),
        )
        self._state.set(Collections.WATCHLISTS, doc_id, entry.model_dump(mode="json"))
        return entry

    def remove(self, user_id: str, exchange: str, market_type: MarketType, symbol: str) -> None:
        """Remove one entry (NotFound if it is not there)."""
        doc_id = entry_id(user_id, exchange, market_type, symbol)
        if self._state.get(Collections.WATCHLISTS, doc_id) is None:
            raise NotFound(f"{symbol} ({exchange} {market_type.value}) is not on the watchlist")
        self._state.delete(Collections.WATCHLISTS, doc_id)

    def renew(
        self,
        user_id: str,
        exchange: str,
        market_type: MarketType,
        symbol: str,
        hours: float = DEFAULT_HOURS,
    ) -> WatchlistEntry:
        """Push the expiry ``hours`` past the later of now and the current expiry."""
        doc_id = entry_id(user_id, exchange, market_type, symbol)
        doc = self._state.get(Collections.WATCHLISTS, doc_id)
        if doc is None:
            raise NotFound(f"{symbol} ({exchange} {market_type.value}) is not on the watchlist")
        entry = WatchlistEntry.model_validate(doc)
        base = max(entry.expires_at, self._clock.now())
        renewed = entry.model_copy(update={"expires_at": base + timedelta(hours=hours)})
        self._state.set(Collections.WATCHLISTS, doc_id, renewed.model_dump(mode="json"))
        return renewed


# ---------------------------------------------------------------- top liquid
class LiquidSymbol(BaseModel):
    """One instrument of the top-liquid list."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=1)
    exchange: str
    market_type: MarketType
    symbol: str
    quote_volume_24h: float
    spread_pct: float | None
    last: float


class TopLiquidList(BaseModel):
    """The stored list and when it was computed."""

    model_config = ConfigDict(extra="ignore")

    exchange: str
    computed_at: datetime | None = None
    as_of_ms: int | None = None
    symbols: list[LiquidSymbol] = Field(default_factory=list)


def rank_liquid(
    tickers: list[Ticker],
    n: int = TOP_LIQUID_N,
    max_spread_pct: float = TOP_LIQUID_MAX_SPREAD_PCT,
) -> list[LiquidSymbol]:
    """Top ``n`` by 24 h quote volume among tickers whose spread (when known) is at most
    ``max_spread_pct``; equal volumes: the tighter spread first."""
    eligible = [
        t
        for t in tickers
        if t.quote_volume_24h is not None
        and t.quote_volume_24h > 0
        and (t.spread_pct is None or t.spread_pct <= max_spread_pct)
    ]
    eligible.sort(
        key=lambda t: (
            -(t.quote_volume_24h or 0.0),
            t.spread_pct if t.spread_pct is not None else float("inf"),
            t.symbol,
        )
    )
    return [
        LiquidSymbol(
            rank=i + 1,
            exchange=t.exchange,
            market_type=t.market_type,
            symbol=t.symbol,
            quote_volume_24h=float(t.quote_volume_24h or 0.0),
            spread_pct=t.spread_pct,
            last=t.last,
        )
        for i, t in enumerate(eligible[:n])
    ]


class TopLiquid:
    """The daily top-liquid list: ``refresh()`` (housekeeping, daily) computes and stores
    it from the market store's latest tickers."""

    def __init__(self, state: StateStore, clock: Clock, market: MarketStore, exchange: str) -> None:
        self._state = state
        self._clock = clock
        self._market = market
        self._exchange = exchange

    def refresh(
        self, n: int = TOP_LIQUID_N, max_spread_pct: float = TOP_LIQUID_MAX_SPREAD_PCT
    ) -> TopLiquidList:
        """Recompute from the market store's latest tickers and store the result."""
        now_ms = self._clock.now_ms()
        tickers = self._market.latest_tickers(self._exchange, now_ms)
        result = TopLiquidList(
            exchange=self._exchange,
            computed_at=self._clock.now(),
            as_of_ms=now_ms,
            symbols=rank_liquid(tickers, n, max_spread_pct),
        )
        self._state.set(Collections.RANKINGS, TOP_LIQUID_DOC, result.model_dump(mode="json"))
        return result

    def get(self) -> TopLiquidList:
        """The stored list (see ``StoredTopLiquid``)."""
        return StoredTopLiquid(self._state, self._exchange).get()


class StoredTopLiquid:
    """Reads the stored top-liquid list (the API: no market store needed)."""

    def __init__(self, state: StateStore, exchange: str) -> None:
        self._state = state
        self._exchange = exchange

    def get(self) -> TopLiquidList:
        """The stored list (empty with ``computed_at`` None before the first refresh)."""
        doc = self._state.get(Collections.RANKINGS, TOP_LIQUID_DOC)
        if doc is None:
            return TopLiquidList(exchange=self._exchange)
        return TopLiquidList.model_validate(doc)
