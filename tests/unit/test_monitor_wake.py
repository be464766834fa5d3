"""The embedded run's worker schedule: when the next exit-monitor cycle may decide
something new (app/monitor_wake.py), and the replay exchange's answers behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.demo import DEMO_USERS
from prometheus_trader.app.monitor_wake import next_cycle_ms, next_wake_ms
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.market import MINUTE_MS, Candle, MarketType, Side, Trade
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.stats import UserStats, user_stats_id

pytestmark = pytest.mark.unit
T0 = 1_000 * MINUTE_MS  # a minute boundary
USER = DEMO_USERS[0]


class FakeTrades:
    """A trade stream: visibility times and recorded-trade stamps per symbol."""

    def __init__(self, visible: dict[str, list[int]], real: dict[str, list[int]]) -> None:
        self.visible, self.real = visible, real
        self.asked: list[list[str]] = []

    def next_visible_ms(self, symbols: list[str], after_ms: int, until_ms: int) -> int | None:
        self.asked.append(list(symbols))
        times = [v for s in symbols for v in self.visible.get(s, []) if after_ms < v <= until_ms]
        return min(times, default=None)

    def real_trade_between(self, symbols: list[str], after_ms: int, until_ms: int) -> bool:
        return any(after_ms < t <= until_ms for s in symbols for t in self.real.get(s, []))


def _position(pid: str, symbol: str, opened_ms: int, max_hold: int = 240) -> dict[str, Any]:
    return {
        "id": pid,
        "user_id": USER.user_id,
        "symbol": symbol,
        "status": "open",
        "opened_ms": opened_ms,
        "max_hold_minutes": max_hold,
    }


@pytest.fixture
def state() -> SqliteStateStore:
    store = SqliteStateStore()
    store.create(Collections.USERS, USER.user_id, USER.model_dump(mode="json"))
    store.create(Collections.POSITIONS, "p1", _position("p1", "BTC", T0 - 30 * MINUTE_MS))
    closed = _position("p0", "ETH", T0 - 300 * MINUTE_MS, max_hold=1) | {"status": "closed"}
    store.create(Collections.POSITIONS, "p0", closed)  # closed: neither symbol nor deadline
    return store


def test_a_quiet_minute_sleeps_to_its_end(state: SqliteStateStore) -> None:
    trades = FakeTrades({"BTC": [T0, T0 + MINUTE_MS]}, {})
    assert next_wake_ms(state, trades, ExitConfig(), T0, T0 + MINUTE_MS) == T0 + MINUTE_MS
    assert trades.asked == [["BTC"]]


def test_a_trade_becoming_visible_wakes_the_worker(state: SqliteStateStore) -> None:
    trades = FakeTrades({"BTC": [T0 + 7_500]}, {})
    assert next_wake_ms(state, trades, ExitConfig(), T0, T0 + MINUTE_MS) == T0 + 7_500
    # the cycle runs at the first step of the 2 s grid at or after it
    assert next_cycle_ms(T0, T0 + 7_500, 2_000, T0) == T0 + 8_000
    assert next_cycle_ms(T0 + 8_000, T0 + 8_000, 2_000, T0) == T0 + 10_000  # always later
    assert next_cycle_ms(T0, T0 + MINUTE_MS, 2_000, T0) == T0 + MINUTE_MS


def test_a_live_real_trade_keeps_every_step(state: SqliteStateStore) -> None:
    trades = FakeTrades({}, {"BTC": [T0 - 10_000]})
    assert next_wake_ms(state, trades, ExitConfig(), T0, T0 + MINUTE_MS) == T0 + 1
    # older than the order-flow rule's live window, or the rule is off: no effect
    assert next_wake_ms(state, trades, ExitConfig(), T0 + 6_000, T0 + MINUTE_MS) == (T0 + MINUTE_MS)
    off = ExitConfig(enable_order_flow=False)
    assert next_wake_ms(state, trades, off, T0, T0 + MINUTE_MS) == T0 + MINUTE_MS


def test_time_rules_wake_the_worker(state: SqliteStateStore) -> None:
    trades = FakeTrades({}, {})
    # max hold: the position's own limit, capped by the config
    state.set(Collections.POSITIONS, "p2", _position("p2", "SOL", T0 - 60 * MINUTE_MS + 20_300, 60))
    assert next_wake_ms(state, trades, ExitConfig(), T0, T0 + MINUTE_MS) == T0 + 20_300
    assert next_wake_ms(state, trades, ExitConfig(), T0, T0 + 20_000) == T0 + 20_000
    state.set(Collections.POSITIONS, "p2", _position("p2", "SOL", T0 - 5 * MINUTE_MS + 300, 60))
    capped = ExitConfig(max_hold_minutes=5)
    assert next_wake_ms(state, trades, capped, T0, T0 + MINUTE_MS) == T0 + 300
    assert next_wake_ms(state, trades, ExitConfig(enable_max_hold=False), T0, T0 + 900) == (
        T0 + 900
    )
    # a consecutive-loss breaker's cool-down ends
    cooldown = USER.limits.consecutive_loss_cooldown_minutes
    last_loss = datetime.fromtimestamp(T0 / 1000, UTC) - timedelta(minutes=cooldown, seconds=-3)
    stats = UserStats(
        user_id=USER.user_id,
        consecutive_losses=USER.limits.max_consecutive_losses,
        last_loss_at=last_loss,
    )
    state.set(Collections.STATS, user_stats_id(USER.user_id), stats.model_dump(mode="json"))
    assert next_wake_ms(state, trades, ExitConfig(), T0, T0 + MINUTE_MS) == T0 + 3_000
    # a pending scaled entry expires (and its symbol's trades count too)
    expires = datetime.fromtimestamp((T0 + 1_000) / 1000, UTC).isoformat()
    state.set(
        Collections.SCALED_ENTRIES,
        "s1",
        {"id": "s1", "status": "pending", "expires_at": expires, "plan": {"symbol": "XRP"}},
    )
    assert next_wake_ms(state, trades, ExitConfig(), T0, T0 + MINUTE_MS) == T0 + 1_000
    assert trades.asked[-1] == ["BTC", "SOL", "XRP"]


def _bar(minute: int) -> Candle:
    return Candle(
        exchange="binance",
        market_type=MarketType.PERP,
        symbol="BTC/USDT:USDT",
        timeframe="1m",
        ts_ms=minute * MINUTE_MS,
        open=100.0,
        high=101.0,
        low=99.0,
        close=100.5,
        volume=4.0,
    )


def test_the_replay_exchange_knows_when_trades_become_visible(tmp_path: Path) -> None:
    with DuckDBMarketStore(tmp_path / "store") as store:
        store.write_candles([_bar(m) for m in range(1000, 1010)])
        # minute 1005 has recorded trades (visible from their own stamps)
        store.write_trades(
            [
                Trade(
                    exchange="binance",
                    market_type=MarketType.PERP,
                    symbol="BTC/USDT:USDT",
                    ts_ms=1005 * MINUTE_MS + s * 1000,
                    trade_id=str(s),
                    price=100.0,
                    amount=1.0,
                    side=Side.BUY,
                )
                for s in (12, 31)
            ]
        )
    clock = SimulatedClock(datetime.fromtimestamp(1003 * MINUTE_MS / 1000, UTC))
    source = DuckDBMarketStore(tmp_path / "store", read_only=True)
    exchange = ReplayExchange(source, clock, exchange_id="binance", market_type=MarketType.PERP)
    btc = ["BTC/USDT:USDT"]
    m = MINUTE_MS
    # bar-derived trades of bar b all become visible at b + 1 min
    assert exchange.next_visible_ms(btc, 1003 * m, 1004 * m) == 1004 * m
    assert exchange.next_visible_ms(btc, 1003 * m, 1004 * m - 1) is None
    assert exchange.next_visible_ms(btc, 1004 * m, 1006 * m) == 1005 * m  # bar 1004's
    assert exchange.next_visible_ms(btc, 1005 * m, 1006 * m) == 1005 * m + 12_000
    assert exchange.next_visible_ms(btc, 1005 * m + 12_000, 1006 * m) == 1005 * m + 31_000
    assert exchange.next_visible_ms(btc, 1005 * m + 31_000, 1006 * m) is None  # no bar path
    assert exchange.next_visible_ms(btc, 1005 * m + 31_000, 1007 * m) == 1007 * m
    assert not exchange.real_trade_between(btc, 1004 * m, 1005 * m + 11_999)
    assert exchange.real_trade_between(btc, 1005 * m, 1005 * m + 12_000)
    assert not exchange.real_trade_between(btc, 1005 * m + 31_000, 1006 * m + 59_000)
    source.close()


def test_next_visible_ms_is_the_earliest_visibility_across_hours(tmp_path: Path) -> None:
    """Every (after, until) around an hour boundary, bars and recorded trades (one at the
    hour's first instant), two symbols: the answer is the brute-force minimum."""
    symbols = ("BTC/USDT:USDT", "ETH/USDT:USDT")
    with DuckDBMarketStore(tmp_path / "store") as store:
        store.write_candles(
            [
                _bar(m).model_copy(update={"symbol": s})
                for s in symbols
                for m in range(1190, 1210)
                if not (s == symbols[1] and 1198 <= m < 1202)  # ETH: a gap over the hour
            ]
        )
        store.write_trades(
            [
                Trade(
                    exchange="binance",
                    market_type=MarketType.PERP,
                    symbol=symbols[1],
                    ts_ms=ms,
                    trade_id=str(ms),
                    price=100.0,
                    amount=1.0,
                    side=Side.BUY,
                )
                for ms in (1200 * MINUTE_MS, 1200 * MINUTE_MS + 7_000, 1199 * MINUTE_MS + 59_999)
            ]
        )
    clock = SimulatedClock(datetime.fromtimestamp(1215 * MINUTE_MS / 1000, UTC))
    with DuckDBMarketStore(tmp_path / "store", read_only=True) as source:
        exchange = ReplayExchange(source, clock, exchange_id="binance", market_type=MarketType.PERP)
        visible = {
            s: [v for h in range(18, 22) for v in exchange._chunk(s, h).visible] for s in symbols
        }
        step = 7_000
        for after in range(1195 * MINUTE_MS, 1205 * MINUTE_MS, step):
            for span in (1, 30_000, MINUTE_MS, 3 * MINUTE_MS):
                for chosen in ([symbols[0]], [symbols[1]], list(symbols)):
                    expected = min(
                        (v for s in chosen for v in visible[s] if after < v <= after + span),
                        default=None,
                    )
                    assert exchange.next_visible_ms(chosen, after, after + span) == expected
