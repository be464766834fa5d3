"""Top-liquid ranking and refresh, watchlist renew arithmetic (embedded state store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.market import MarketType, Ticker
from prometheus_trader.usecases.users import Conflict, NotFound
from prometheus_trader.usecases.watchlist import (
    MAX_ENTRIES,
    StoredTopLiquid,
    TopLiquid,
    Watchlist,
    rank_liquid,
)

pytestmark = pytest.mark.unit
NOW = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)


def ticker(symbol: str, volume: float | None, bid: float = 99.99, ask: float = 100.01) -> Ticker:
    return Ticker(
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=symbol,
        ts_ms=1,
        last=100.0,
        bid=bid,
        ask=ask,
        quote_volume_24h=volume,
    )


def test_rank_liquid_orders_by_volume_then_spread_and_drops_wide_or_unknown() -> None:
    tickers = [
        ticker("A", 5e6),
        ticker("B", 9e6),
        ticker("C", 9e6, bid=99.9, ask=100.1),  # same volume, wider spread: after B
        ticker("WIDE", 1e9, bid=90, ask=110),  # 20 % spread: not liquid
        ticker("NOVOL", None),
        *(ticker(f"S{i:02d}", 1e5 + i) for i in range(20)),
    ]
    ranked = rank_liquid(tickers)
    assert len(ranked) == 15
    assert [r.symbol for r in ranked[:3]] == ["B", "C", "A"]
    assert [r.rank for r in ranked] == list(range(1, 16))
    assert {"WIDE", "NOVOL"}.isdisjoint(r.symbol for r in ranked)


class Tickers:
    def __init__(self, tickers: list[Ticker]) -> None:
        self.tickers = tickers
        self.asked: list[tuple[str, int]] = []

    def latest_tickers(self, exchange: str, as_of_ms: int) -> list[Ticker]:
        self.asked.append((exchange, as_of_ms))
        return self.tickers


def test_refresh_stores_the_list_the_api_reads(tmp_path: Path) -> None:
    state = SqliteStateStore(tmp_path / "s.sqlite")
    clock = SimulatedClock(NOW)
    reader = StoredTopLiquid(state, "binance")
    assert reader.get().symbols == [] and reader.get().computed_at is None
    market = Tickers([ticker("ETH/USDT:USDT", 2e9), ticker("BTC/USDT:USDT", 5e9)])
    TopLiquid(state, clock, market, "binance").refresh()  # type: ignore[arg-type]
    stored = reader.get()
    assert [s.symbol for s in stored.symbols] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert stored.computed_at == NOW
    assert market.asked == [("binance", clock.now_ms())]
    state.close()


def test_watchlist_renew_remove_and_the_size_cap(tmp_path: Path) -> None:
    state = SqliteStateStore(tmp_path / "s.sqlite")
    clock = SimulatedClock(NOW)
    wl = Watchlist(state, clock)
    entry = wl.add("u1", "binance", MarketType.PERP, "ETH/USDT:USDT", duration_hours=2)
    assert entry.expires_at == NOW + timedelta(hours=2)
    clock.advance(3 * 3600)  # expired an hour ago: renewal counts from now
    renewed = wl.renew("u1", "binance", MarketType.PERP, "ETH/USDT:USDT")
    assert renewed.expires_at == NOW + timedelta(hours=3 + 24)
    with pytest.raises(NotFound):
        wl.renew("u2", "binance", MarketType.PERP, "ETH/USDT:USDT")  # not u2's
    for i in range(MAX_ENTRIES - 1):
        wl.add("u1", "binance", MarketType.PERP, f"C{i}/USDT")
    with pytest.raises(Conflict):
        wl.add("u1", "binance", MarketType.PERP, "ONEMORE/USDT")
    wl.add("u1", "binance", MarketType.PERP, "ETH/USDT:USDT", priority=5)  # re-add: no cap
    assert wl.entries("u1")[0].priority == 5
    wl.remove("u1", "binance", MarketType.PERP, "ETH/USDT:USDT")
    assert len(wl.entries("u1")) == MAX_ENTRIES - 1
    state.close()
