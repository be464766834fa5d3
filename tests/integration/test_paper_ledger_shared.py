"""One paper ledger for every process: exchange instances on one state store share it.

Also: three executor processes racing on the same twelve (signal, user) executions place
exactly one entry order each, and every execution ends ``accepted`` with its position.

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


RACE_USERS = ("r1", "r2", "r3", "r4")
RACE_SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT")


def _race_executions(
    db: str, blobs: str, go: mp.synchronize.Event, seed: int
) -> None:  # pragma: no cover - subprocess
    import random

    from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
    from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
    from prometheus_trader.domain.ids import execution_id
    from prometheus_trader.ports import BusMessage
    from prometheus_trader.usecases.dispatch import ExecutionRequest
    from prometheus_trader.usecases.execute import ExecuteSignalForUser
    from prometheus_trader.usecases.names import Topics

    ex, clock = instance(Path(db))
    state = SqliteStateStore(Path(db))
    executor = ExecuteSignalForUser(
        state, ex, ex.store, InMemoryBus(), LocalBlobStore(Path(blobs)), clock
    )
    jobs = [(f"race-{s.split('/')[0]}", u) for s in RACE_SYMBOLS for u in RACE_USERS]
    random.Random(seed).shuffle(jobs)
    go.wait()
    for signal_id, user_id in jobs:
        key = execution_id(signal_id, user_id)
        data = ExecutionRequest(signal_id=signal_id, user_id=user_id).model_dump(mode="json")
        executor.handle(BusMessage(Topics.EXECUTIONS, key, data, {"dedupe_key": key}))


def test_racing_executor_processes_place_one_entry_per_execution(tmp_path: Path) -> None:
    from datetime import timedelta

    from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
    from prometheus_trader.domain.users import RiskProfile, User
    from prometheus_trader.usecases.names import Collections

    db = tmp_path / "state.sqlite"
    ex, clock = instance(db)
    state = SqliteStateStore(db)
    for user_id in RACE_USERS:
        user = User.with_profile(user_id, RiskProfile.AGGRESSIVE)
        state.create(Collections.USERS, user_id, user.model_dump(mode="json"))
    for symbol in RACE_SYMBOLS:
        price = ex.fetch_tickers([symbol])[0].last
        signal = OpportunitySignal(
            id=f"race-{symbol.split('/')[0]}",
            symbol=symbol,
            exchange="binance",
            market_type=MarketType.PERP,
            direction=Direction.LONG,
            entry_price=price,
            entry_low=price * 0.999,
            entry_high=price * 1.001,
            stop_loss=price * 0.99,
            stop_loss_pct=1.0,
            take_profits=[
                TakeProfitLevel(price=price * (1 + r / 100), pct=r, size_fraction=f)
                for r, f in ((3.0, 0.5), (4.0, 0.3), (5.0, 0.2))
            ],
            reward_risk=3.7,
            confidence=0.8,
            created_at=clock.now(),
            expires_at=clock.now() + timedelta(minutes=20),
            strategy="consensus",
        )
        state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    procs = [
        ctx.Process(target=_race_executions, args=(str(db), str(tmp_path / f"b{i}"), go, i))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    executions = state.query(Collections.EXECUTIONS)
    assert len(executions) == len(RACE_SYMBOLS) * len(RACE_USERS)
    assert {e["outcome"] for e in executions} == {"accepted"}
    positions = state.query(Collections.POSITIONS)
    assert sorted(p["id"] for p in positions) == sorted(e["position_id"] for e in executions)
    for user_id in RACE_USERS:
        entries = [o for o in ex.orders(user_id) if not o.reduce_only]
        assert len(entries) == len(RACE_SYMBOLS)  # exactly one entry per execution
        assert len(ex.fetch_positions(user_id)) == len(RACE_SYMBOLS)
        stops = [o for o in ex.fetch_open_orders(user_id) if o.type is OrderType.STOP_MARKET]
        assert len(stops) == len(RACE_SYMBOLS)  # one live stop per position
