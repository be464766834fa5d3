"""Housekeeping: watchlist expiry, "expires in 1 h" notices once per entry and expiry (also
with several processes at once, and after a crash between claim and publish), the daily
top-liquid list, digests flushed on the schedule."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from tests.integration.housekeeping_worker import notice_pass

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.market import MarketType, Ticker
from prometheus_trader.domain.watchlist import WatchlistEntry
from prometheus_trader.ports import BusMessage, MarketStore, Notification
from prometheus_trader.usecases.housekeeping import (
    ExpireWatchlist,
    Housekeeping,
    HousekeepingCollections,
    NotifyExpiringWatchlist,
    RefreshTopLiquid,
    TopLiquidConfig,
    watchlist_entry_id,
)
from prometheus_trader.usecases.names import Collections, Topics
from prometheus_trader.usecases.watchlist import TOP_LIQUID_DOC

pytestmark = pytest.mark.integration

NOW = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)


class Tickers:
    """The one MarketStore call the top-liquid refresh makes."""

    def __init__(self, tickers: list[Ticker]) -> None:
        self.tickers = tickers
        self.calls = 0

    def latest_tickers(self, exchange: str, as_of_ms: int) -> list[Ticker]:
        self.calls += 1
        return [t for t in self.tickers if t.exchange == exchange and t.ts_ms <= as_of_ms]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.sent.append(notification)

    def flush_digests(self) -> int:
        return 7


def entry(user: str, symbol: str, expires_in: timedelta) -> WatchlistEntry:
    return WatchlistEntry(
        user_id=user,
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=symbol,
        added_at=NOW - timedelta(hours=20),
        expires_at=NOW + expires_in,
    )


def put(state: SqliteStateStore, e: WatchlistEntry) -> None:
    state.set(Collections.WATCHLISTS, watchlist_entry_id(e), e.model_dump(mode="json"))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteStateStore]:
    store = SqliteStateStore(tmp_path / "state.sqlite")
    yield store
    store.close()


def listening_bus() -> tuple[InMemoryBus, list[dict[str, Any]]]:
    """A bus and the events it delivers (subscribed before anything is published)."""
    bus = InMemoryBus()
    got: list[dict[str, Any]] = []

    def handler(message: BusMessage) -> None:
        got.append(message.data)

    bus.subscribe(Topics.EVENTS, "test", handler)
    return bus, got


def events(bus: InMemoryBus, got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bus.drain_all()
    return got


def test_notice_once_per_entry_and_expiry(state: SqliteStateStore) -> None:
    clock = SimulatedClock(NOW)
    bus, got = listening_bus()
    put(state, entry("u1", "ETH/USDT:USDT", timedelta(minutes=50)))
    put(state, entry("u1", "BTC/USDT:USDT", timedelta(hours=3)))  # not yet
    put(state, entry("u2", "ETH/USDT:USDT", timedelta(minutes=-5)))  # already expired
    job = NotifyExpiringWatchlist(state, bus, clock)
    assert job.run() == ["u1:ETH/USDT:USDT"]
    assert job.run() == []  # idempotent
    clock.advance(30 * 60)
    assert job.run() == []
    clock.advance(90 * 60)  # BTC now expires in 1 h exactly
    assert job.run() == ["u1:BTC/USDT:USDT"]
    published = events(bus, got)
    assert [(e["type"], e["user_id"], e["payload"]["symbol"]) for e in published] == [
        ("watchlist_expiring", "u1", "ETH/USDT:USDT"),
        ("watchlist_expiring", "u1", "BTC/USDT:USDT"),
    ]
    assert published[0]["payload"]["minutes_left"] == 50


def test_renewed_entry_gets_a_new_notice(state: SqliteStateStore) -> None:
    clock = SimulatedClock(NOW)
    bus, got = listening_bus()
    e = entry("u1", "ETH/USDT:USDT", timedelta(minutes=30))
    put(state, e)
    job = NotifyExpiringWatchlist(state, bus, clock)
    assert job.run() == ["u1:ETH/USDT:USDT"]
    renewed = e.model_copy(update={"expires_at": e.expires_at + timedelta(hours=24)})
    put(state, renewed)
    clock.advance(24 * 3600)
    assert job.run() == ["u1:ETH/USDT:USDT"]
    assert len({ev["id"] for ev in events(bus, got)}) == 2


def test_a_crashed_claim_is_taken_over_after_the_lease(state: SqliteStateStore) -> None:
    clock = SimulatedClock(NOW)
    put(state, entry("u1", "ETH/USDT:USDT", timedelta(minutes=50)))

    class Crash(Exception):
        pass

    class CrashingBus(InMemoryBus):
        def publish(self, *args: Any, **kwargs: Any) -> str:
            raise Crash

    with pytest.raises(Crash):
        NotifyExpiringWatchlist(state, CrashingBus(), clock).run()
    bus, got = listening_bus()
    job = NotifyExpiringWatchlist(state, bus, clock, lease=timedelta(minutes=5))
    assert job.run() == []  # the claim is fresh: someone may be publishing
    clock.advance(6 * 60)
    assert job.run() == ["u1:ETH/USDT:USDT"]
    assert job.run() == []
    assert len(events(bus, got)) == 1


def test_concurrent_processes_publish_each_notice_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    store = SqliteStateStore(path)
    symbols = [f"C{i}/USDT:USDT" for i in range(12)]
    for s in symbols:
        put(store, entry("u1", s, timedelta(minutes=40)))
    store.close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(notice_pass, [(str(path), NOW.isoformat())] * 3)
    published = [s for r in results for s in r]
    assert sorted(published) == sorted(f"u1:{s}" for s in symbols)
    store = SqliteStateStore(path)
    markers = store.query(HousekeepingCollections.WATCHLIST_NOTICES)
    store.close()
    assert len(markers) == 12 and {m["status"] for m in markers} == {"published"}


def test_expired_entries_are_deleted(state: SqliteStateStore) -> None:
    clock = SimulatedClock(NOW)
    put(state, entry("u1", "ETH/USDT:USDT", timedelta(minutes=-1)))
    put(state, entry("u1", "BTC/USDT:USDT", timedelta(minutes=1)))
    job = ExpireWatchlist(state, clock)
    assert job.run() == ["u1:ETH/USDT:USDT"]
    assert job.run() == []
    assert [d["symbol"] for d in state.query(Collections.WATCHLISTS)] == ["BTC/USDT:USDT"]


def ticker(symbol: str, volume: float | None, spread_pct: float | None, ts: int = 0) -> Ticker:
    bid = 100.0
    ask = None if spread_pct is None else bid * (1 + spread_pct / 100)
    return Ticker(
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=symbol,
        ts_ms=ts,
        last=100.0,
        bid=bid if ask is not None else None,
        ask=ask,
        quote_volume_24h=volume,
    )


def test_top_liquid_by_volume_and_spread_refreshed_daily(state: SqliteStateStore) -> None:
    clock = SimulatedClock(NOW)
    market = Tickers(
        [ticker(f"S{i:02d}/USDT:USDT", 1e6 * (20 - i), 0.02) for i in range(20)]
        + [
            ticker("WIDE/USDT:USDT", 1e9, 2.0),  # huge volume, spread too wide
            ticker("NOVOL/USDT:USDT", None, 0.01),
            ticker("TIE/USDT:USDT", 1e6 * 20, 0.01),  # same volume as S00, tighter
        ]
    )
    job = RefreshTopLiquid(cast(MarketStore, market), state, clock, TopLiquidConfig("binance"))
    top = job.run()
    assert top is not None and len(top) == 15
    assert top[:3] == ["TIE/USDT:USDT", "S00/USDT:USDT", "S01/USDT:USDT"]
    assert "WIDE/USDT:USDT" not in top and "NOVOL/USDT:USDT" not in top
    doc = state.get(Collections.RANKINGS, TOP_LIQUID_DOC)
    assert doc is not None and [s["rank"] for s in doc["symbols"]] == list(range(1, 16))
    clock.advance(23 * 3600)
    assert job.run() is None and market.calls == 1  # fresh: not recomputed
    clock.advance(3600)
    assert job.run() is not None and market.calls == 2


def test_one_pass_runs_every_job(state: SqliteStateStore) -> None:
    clock = SimulatedClock(NOW)
    put(state, entry("u1", "ETH/USDT:USDT", timedelta(minutes=-1)))
    put(state, entry("u1", "BTC/USDT:USDT", timedelta(minutes=10)))
    market = Tickers([ticker("BTC/USDT:USDT", 1e9, 0.01)])
    report = Housekeeping(
        state,
        cast(MarketStore, market),
        InMemoryBus(),
        clock,
        Recorder(),
        TopLiquidConfig("binance"),
    ).run()
    assert report.expired_watchlist == ["u1:ETH/USDT:USDT"]
    assert report.expiring_notices == ["u1:BTC/USDT:USDT"]
    assert report.top_liquid == ["BTC/USDT:USDT"]
    assert report.digests_sent == 7
    assert report.expired_signals == []
