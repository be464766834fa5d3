"""Housekeeping: expire signals and watchlist entries, "expires in 1 h" notices, the daily
top-liquid list, and the email digests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.ids import stable_id
from prometheus_trader.domain.signals import SignalStatus
from prometheus_trader.domain.watchlist import WatchlistEntry
from prometheus_trader.ports import (
    Bus,
    Clock,
    Filter,
    MarketStore,
    Notifier,
    StateStore,
    StateTransaction,
)
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.notify import FlushDigests
from prometheus_trader.usecases.watchlist import StoredTopLiquid, TopLiquid, entry_id


class ExpireSignals:
    """Marks PENDING signals EXPIRED once ``expires_at`` has passed (idempotent)."""

    def __init__(self, state: StateStore, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def run(self) -> list[str]:
        """Expire what is due; returns the expired signal ids."""
        now = self._clock.now()
        expired = []
        for doc in self._state.query(
            Collections.SIGNALS, [Filter("status", "==", SignalStatus.PENDING.value)]
        ):
            if datetime.fromisoformat(doc["expires_at"]) <= now:
                self._state.update(
                    Collections.SIGNALS, doc["id"], {"status": SignalStatus.EXPIRED.value}
                )
                expired.append(str(doc["id"]))
        return expired


class HousekeepingCollections:
    """State-store collections of the housekeeping jobs."""

    WATCHLIST_NOTICES: Final = "watchlist_notices"  # one per entry and expiry: sent once


def watchlist_entry_id(entry: WatchlistEntry) -> str:
    """The document id of a watchlist entry (the watchlist API's ``entry_id``)."""
    return entry_id(entry.user_id, entry.exchange, entry.market_type, entry.symbol)


class ExpireWatchlist:
    """Deletes watchlist entries whose ``expires_at`` has passed (the dispatcher already
    ignores them; deleting keeps the collection small). Idempotent. Entries are stored
    under ``watchlist_entry_id``; one stored under another id is left (and stays ignored)."""

    def __init__(self, state: StateStore, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def run(self) -> list[str]:
        """Delete what expired; returns ``user:symbol`` of each."""
        now = self._clock.now()
        expired = []
        for doc in self._state.query(Collections.WATCHLISTS):
            entry = WatchlistEntry.model_validate(doc)
            if not entry.is_active(now):
                self._state.delete(Collections.WATCHLISTS, watchlist_entry_id(entry))
                expired.append(f"{entry.user_id}:{entry.symbol}")
        return sorted(expired)


class NotifyExpiringWatchlist:
    """Publishes ``watchlist_expiring`` once per entry and expiry, ``notice_before`` ahead.

    A pass first claims the notice (create-if-absent on a marker document, atomic across
    processes), publishes, then marks it published. A pass that crashed after claiming is
    taken over once its claim is older than ``lease``; the event id is deterministic (user,
    market, symbol, expiry), so a takeover republishing it is deduped downstream. A
    renewed entry has a new expiry and so gets its own notice.
    """

    def __init__(
        self,
        state: StateStore,
        bus: Bus,
        clock: Clock,
        notice_before: timedelta = timedelta(hours=1),
        lease: timedelta = timedelta(minutes=5),
    ) -> None:
        self._state = state
        self._bus = bus
        self._clock = clock
        self._before = notice_before
        self._lease = lease

    def run(self) -> list[str]:
        """Notices published in this run (``user:symbol``)."""
        now = self._clock.now()
        sent = []
        for doc in self._state.query(Collections.WATCHLISTS):
            entry = WatchlistEntry.model_validate(doc)
            if not now < entry.expires_at <= now + self._before:
                continue
            key = (
                "-".join((entry.user_id, entry.exchange, entry.market_type.value, entry.symbol))
                + f"-{entry.expires_at.isoformat()}"
            )
            marker = stable_id("watchlist-notice", key)
            if not self._claim(marker, entry, now):
                continue
            minutes = int((entry.expires_at - now).total_seconds() // 60)
            publish_event(
                self._bus,
                self._state,
                EventType.WATCHLIST_EXPIRING,
                key=key,
                now=now,
                user_id=entry.user_id,
                severity=Severity.INFO,
                payload={
                    "symbol": entry.symbol,
                    "exchange": entry.exchange,
                    "market_type": entry.market_type.value,
                    "expires_at": entry.expires_at.isoformat(),
                    "minutes_left": minutes,
                },
            )
            self._state.update(
                HousekeepingCollections.WATCHLIST_NOTICES, marker, {"status": "published"}
            )
            sent.append(f"{entry.user_id}:{entry.symbol}")
        return sorted(sent)

    def _claim(self, marker: str, entry: WatchlistEntry, now: datetime) -> bool:
        """True if this pass publishes the notice: it created the claim, or took over one
        left by a pass that crashed (older than ``lease``) and never marked it published."""
        claim = {
            "user_id": entry.user_id,
            "symbol": entry.symbol,
            "expires_at": entry.expires_at.isoformat(),
            "status": "publishing",
            "claimed_at": now.isoformat(),
        }
        if self._state.create(HousekeepingCollections.WATCHLIST_NOTICES, marker, claim):
            return True

        def take_over(tx: StateTransaction) -> bool:
            doc = tx.get(HousekeepingCollections.WATCHLIST_NOTICES, marker)
            if doc is None or doc.get("status") == "published":
                return False
            if now - datetime.fromisoformat(doc["claimed_at"]) < self._lease:
                return False  # another pass is publishing it right now
            tx.update(
                HousekeepingCollections.WATCHLIST_NOTICES, marker, {"claimed_at": now.isoformat()}
            )
            return True

        return self._state.transaction(take_over)


@dataclass(frozen=True)
class TopLiquidConfig:
    """Which exchange, how many, how wide a spread at most, how often."""

    exchange: str
    count: int = 15
    max_spread_pct: float = 0.5
    every: timedelta = timedelta(hours=24)


class RefreshTopLiquid:
    """The daily top-liquid list (``usecases.watchlist.TopLiquid``, which the watchlist API
    reads), recomputed once per ``every``: the top ``count`` by 24 h quote volume among
    instruments whose spread is at most ``max_spread_pct``."""

    def __init__(
        self, market: MarketStore, state: StateStore, clock: Clock, config: TopLiquidConfig
    ) -> None:
        self._state = state
        self._clock = clock
        self._cfg = config
        self._top = TopLiquid(state, clock, market, config.exchange)

    def run(self, force: bool = False) -> list[str] | None:
        """The new list's symbols, or None when the stored one is still fresh."""
        computed = StoredTopLiquid(self._state, self._cfg.exchange).get().computed_at
        if not force and computed is not None and self._clock.now() - computed < self._cfg.every:
            return None
        fresh = self._top.refresh(self._cfg.count, self._cfg.max_spread_pct)
        return [s.symbol for s in fresh.symbols]


@dataclass
class HousekeepingReport:
    """What one housekeeping pass did."""

    expired_signals: list[str] = field(default_factory=list)
    expired_watchlist: list[str] = field(default_factory=list)
    expiring_notices: list[str] = field(default_factory=list)
    top_liquid: list[str] | None = None  # None: the list was fresh, not refreshed
    digests_sent: int = 0


class Housekeeping:
    """The scheduled pass (every minute): expiries, notices, top-liquid, email digests.

    Each job is idempotent, so an overlapping or repeated pass does no harm.
    """

    def __init__(
        self,
        state: StateStore,
        market: MarketStore,
        bus: Bus,
        clock: Clock,
        notifier: Notifier,
        top_liquid: TopLiquidConfig,
    ) -> None:
        self.signals = ExpireSignals(state, clock)
        self.notices = NotifyExpiringWatchlist(state, bus, clock)
        self.watchlist = ExpireWatchlist(state, clock)
        self.top_liquid = RefreshTopLiquid(market, state, clock, top_liquid)
        self.digests = FlushDigests(notifier)

    def run(self) -> HousekeepingReport:
        """One pass."""
        return HousekeepingReport(
            expired_signals=self.signals.run(),
            # notices before expiry: an entry expiring within this pass still had its notice
            expiring_notices=self.notices.run(),
            expired_watchlist=self.watchlist.run(),
            top_liquid=self.top_liquid.run(),
            digests_sent=self.digests.run(),
        )
