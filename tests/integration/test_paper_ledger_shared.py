"""One paper ledger for every process: exchange instances on one state store share it.

Separate ``ReplayExchange`` objects (their own clocks and caches, as separate executor
instances and the worker have) over one SQLite file: the second sees the first's orders
and positions, gets the first order back for a repeated client order id, and a resting
stop fills exactly once whoever looks first. The last test races separate processes.
"""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.market import MINUTE_MS, MarketType, Side
from prometheus_trader.domain.trading import OrderRequest, OrderStatus, OrderType
from prometheus_trader.ports import SeriesKey
from prometheus_trader.sample import SAMPLE_STORE_DIR

pytestmark = pytest.mark.integration

START = datetime(2025, 5, 21, 8, 0, 30, tzinfo=UTC)
BTC = "BTC/USDT:USDT"


def instance(db: Path, at: datetime = START) -> tuple[ReplayExchange, SimulatedClock]:
    clock = SimulatedClock(at)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    return ReplayExchange(source, clock, ledger=SqliteStateStore(db)), clock


def entry(cid: str = "entry") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid, symbol=BTC, side=Side.BUY, type=OrderType.MARKET, amount=0.01
    )


def stop_below(ex: ReplayExchange, clock: SimulatedClock, entry_price: float) -> OrderRequest:
    """A reduce-only sell stop the next hours' bars will cross."""
    now = clock.now_ms()
    ahead = ex.store.candles(
        SeriesKey("binance", MarketType.PERP, BTC), "1m", now - now % MINUTE_MS, now + 6 * 3_600_000
    )
    price = entry_price - (entry_price - float(ahead.low.min())) * 0.5
    return OrderRequest(
        client_order_id="sl",
        symbol=BTC,
        side=Side.SELL,
        type=OrderType.STOP_MARKET,
        amount=0.01,
        stop_price=price,
        reduce_only=True,
    )


def test_a_second_instance_sees_the_same_account_and_gets_the_first_order(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.sqlite"
    a, clock_a = instance(db)
    b, clock_b = instance(db)
    first = a.create_order("alice", entry())
    assert first.status is OrderStatus.FILLED and first.average is not None
    assert b.create_order("alice", entry()) == first  # create-if-absent by client id
    assert b.fetch_positions("alice") == a.fetch_positions("alice")
    assert len(b.fills("alice")) == 1
    sl = b.create_order("alice", stop_below(b, clock_b, first.average))
    assert [o.id for o in a.fetch_open_orders("alice")] == [sl.id]
    assert a.fetch_balance("alice") == b.fetch_balance("alice")
    # a restarted worker (a new instance, later) finds the stop and sees it fill once
    for _ in range(6 * 60):
        clock_a.advance(60)
        clock_b.advance(60)
        if a.fetch_order("alice", sl.id).status is OrderStatus.FILLED:
            break
    filled = b.fetch_order("alice", sl.id)
    assert filled.status is OrderStatus.FILLED
    c, _ = instance(db, clock_b.now())
    assert c.fetch_positions("alice") == []
    assert [f.order_id for f in c.fills("alice")] == [first.id, sl.id]
    assert c.accounts() == ["alice"]


def _racer(db: str, go: mp.synchronize.Event, n: int) -> None:  # pragma: no cover - subprocess
    ex, _ = instance(Path(db))
    go.wait()
    for i in range(n):
        ex.create_order("racer", entry(f"entry-{i}"))


def test_racing_processes_place_each_client_order_once(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    instance(db)[0].load_markets()  # the schema exists before the racers start
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_racer, args=(str(db), go, 5)) for _ in range(3)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    ex, _ = instance(db)
    orders = ex.orders("racer")
    assert sorted(o.client_order_id for o in orders) == [f"entry-{i}" for i in range(5)]
    assert len(ex.fills("racer")) == 5
    (position,) = ex.fetch_positions("racer")
    assert position.amount == pytest.approx(0.05)
