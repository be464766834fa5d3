"""On the replayed real stream, every exit the worker takes is listed with its rule and
numbers, and each decision is recomputed independently from the raw messages.

The websocket stand-in replays the recorded Binance USD-M ``@trade`` messages (60 s of
BTCUSDT and ETHUSDT, ``tests/fixtures/data/ws/``); ccxt's own client parses them inside
``CcxtTradeStream``; the real ``run_worker`` loop drives the real ``ExitMonitor`` (embedded
SQLite state store) over positions planted around that stream so that the stop-loss,
trailing stop, take-profit, profit lock and max-hold rules fire. The worker's clock is
the stream's time: before each 2-second cycle the test waits until the stream has
delivered every trade up to the cycle's time (so a cycle sees exactly the trades at or
before it, on a loaded machine too).

The worker's exits are listed from what it stored (closed positions: rule, reason, time,
price and the numbers behind it; written to ``exits.json``). The test then parses the raw
lines itself (``json``, not ccxt, not our window) and applies the documented rule
arithmetic (``domain/exits.py`` module doc) cycle by cycle: every listed exit must be the
first rule to fire for that position, at that cycle, at that price; every position the
recompute exits must have been exited (none missed); the others must still be open.
"""

from __future__ import annotations

import gzip
import itertools
import json
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.standins.binance_ws import RECORDING, BinanceStreamStandIn, wait_until

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.adapters.streaming.ccxt_trade_stream import (
    CcxtTradeStream,
    binance_usdm_client_factory,
)
from prometheus_trader.app.worker import run_worker
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.market import MarketType, Side
from prometheus_trader.domain.signals import Direction, TakeProfitLevel
from prometheus_trader.domain.trading import (
    ExchangePosition,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
)
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
SYMBOLS = {"BTCUSDT": BTC, "ETHUSDT": ETH}
CYCLE_MS = 2_000
MINUTE_MS = 60_000
# levels only: the order-flow and adverse-move rules would close every position within
# seconds on tick data, before any level is reached
CONFIG = ExitConfig(
    enable_order_flow=False,
    enable_adverse_moves=False,
    trail_arm_r=0.5,
    trail_width_r=1.0,
    profit_lock_ladder=[(0.4, 0.05)],  # % of the leveraged return
    profit_lock_on_leveraged_return=True,
)
RULE = {
    "stop_loss": 3,
    "trailing_stop": 3,
    "take_profit": 3,
    "profit_lock": 3,
    "max_hold": 3,
    "order_flow_reversal": 1,
    "adverse_moves": 2,
}


# ------------------------------------------------------------------ raw messages
def raw_prices() -> dict[str, list[tuple[int, float]]]:
    """Per symbol, (trade time, price) of every recorded ``@trade`` message, in order.

    Parsed here with ``json`` from the recorded lines, independently of ccxt."""
    out: dict[str, list[tuple[int, float]]] = {}
    with gzip.open(RECORDING, "rt", encoding="utf-8") as fh:
        for line in fh:
            data = json.loads(line.split(" ", 1)[1])["data"]
            out.setdefault(SYMBOLS[data["s"]], []).append((int(data["T"]), float(data["p"])))
    for rows in out.values():  # one symbol's stream is in time order
        assert all(a[0] <= b[0] for a, b in itertools.pairwise(rows))
    return out


RAW = raw_prices()
T0 = min(rows[0][0] for rows in RAW.values())
T_END = max(rows[-1][0] for rows in RAW.values())
START = T0 - 1  # the worker's first cycle: before any trade
CYCLES = [START + k * CYCLE_MS for k in range(1, (T_END - START) // CYCLE_MS + 2)]


# ------------------------------------------------------------------- the positions
@dataclass(frozen=True)
class Plan:
    """A position planted around the stream."""

    pid: str
    symbol: str
    direction: Direction
    entry: float
    stop: float
    take_profit: float | None = None
    leverage: float = 1.0
    opened_ms: int = T0 - 1
    max_hold_minutes: int = 24 * 60


PLANS = [
    # BTC trades 61800-61814 for 20 s, rallies to 61839.8 at ~27 s, falls back to
    # 61800 at ~42 s, rallies to 61839.9 at ~54 s, ends at 61815.1
    Plan("btc-stop", BTC, Direction.LONG, 61808.0, 61801.0),
    Plan("btc-trail", BTC, Direction.LONG, 61806.0, 61796.0),
    Plan("btc-target", BTC, Direction.LONG, 61805.0, 61760.0, take_profit=61825.0),
    Plan("btc-lock", BTC, Direction.LONG, 61805.0, 61700.0, leverage=10.0),
    Plan("btc-short-stop", BTC, Direction.SHORT, 61815.0, 61830.0),
    Plan("btc-hold", BTC, Direction.LONG, 61800.0, 61000.0),  # nothing fires
    # ETH trades 2681.2-2682.2 for 20 s, rallies to 2683.44 at ~27 s, 2681.0 at ~46 s
    Plan("eth-short-stop", ETH, Direction.SHORT, 2681.6, 2683.0),
    Plan("eth-short-trail", ETH, Direction.SHORT, 2682.6, 2683.6),
    Plan(
        "eth-max-hold",
        ETH,
        Direction.SHORT,
        2682.0,
        2700.0,
        opened_ms=T0 - 40_000,
        max_hold_minutes=1,
    ),
    Plan("eth-hold", ETH, Direction.LONG, 2682.0, 2600.0),  # nothing fires
]


def position_of(plan: Plan) -> Position:
    sign = plan.direction.sign
    target = plan.take_profit or plan.entry * (1 + sign * 0.5)  # far away unless given
    return Position(
        id=plan.pid,
        user_id=f"user-{plan.pid}",
        signal_id=f"sig-{plan.pid}",
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=plan.symbol,
        direction=plan.direction,
        amount=1.0,
        entry_price=plan.entry,
        leverage=plan.leverage,
        stop_loss=plan.stop,
        take_profits=[
            TakeProfitLevel(price=target, pct=abs(target / plan.entry - 1) * 100, size_fraction=1.0)
        ],
        trailing_stop_pct=0.0,  # the trail width is 1 R (CONFIG), no % floor
        best_price=plan.entry,
        worst_price=plan.entry,
        stop_order_id=f"stop-{plan.pid}",
        take_profit_order_ids=[f"tp-{plan.pid}"],
        entry_order_id=f"entry-{plan.pid}",
        opened_at=datetime.fromtimestamp(plan.opened_ms / 1000, UTC),
        opened_ms=plan.opened_ms,
        max_hold_minutes=plan.max_hold_minutes,
    )


# ------------------------------------------------------ the independent recompute
@dataclass(frozen=True)
class Expected:
    reason: str
    at_ms: int
    price: float
    level: float  # the stop, trail, target or lock price that was crossed; held minutes


def recompute(plan: Plan) -> Expected | None:
    """The first cycle at which a documented level rule fires for ``plan``, from the raw
    prices: last trade price at or before the cycle; best price over every trade since
    the open; the trail arms once the best move reaches 0.5 R (R = entry→stop distance)
    and sits 1 R behind the best price; then, in order: trailing stop or stop-loss (the
    tighter one when both are crossed), first target, profit lock (best leveraged gain
    ≥ 0.4 % → exit at ≤ 0.05 %), max hold."""
    sign = 1 if plan.direction is Direction.LONG else -1
    rows = RAW[plan.symbol]
    r_pct = abs(plan.entry - plan.stop) / plan.entry * 100
    best = plan.entry
    for now in CYCLES:
        upto = [p for t, p in rows if t <= now]
        if not upto:
            continue
        price = upto[-1]
        for t, p in rows:
            if plan.opened_ms - 1 < t <= now and sign * (p - best) > 0:
                best = p
        best_move = sign * (best - plan.entry) / plan.entry * 100
        trail = None
        if best_move >= CONFIG.trail_arm_r * r_pct:
            trail = best * (1 - sign * (CONFIG.trail_width_r or 0) * r_pct / 100)
        trail_hit = trail is not None and sign * (price - trail) <= 0
        stop_hit = sign * (price - plan.stop) <= 0
        if stop_hit and (not trail_hit or trail is None or sign * (plan.stop - trail) > 0):
            return Expected("stop_loss", now, price, plan.stop)
        if trail_hit:
            assert trail is not None
            return Expected("trailing_stop", now, price, trail)
        if plan.take_profit is not None and sign * (price - plan.take_profit) >= 0:
            return Expected("take_profit", now, price, plan.take_profit)
        gain_level, lock = CONFIG.profit_lock_ladder[0]
        move = sign * (price - plan.entry) / plan.entry * 100
        if best_move * plan.leverage >= gain_level and move * plan.leverage <= lock:
            lock_price = plan.entry * (1 + sign * lock / (100 * plan.leverage))
            return Expected("profit_lock", now, price, lock_price)
        held = (now - plan.opened_ms) / MINUTE_MS
        if held >= plan.max_hold_minutes:
            return Expected("max_hold", now, price, held)
    return None


# ------------------------------------------------------------ the exchange double
class HeldPositions:
    """The exchange side of the planted positions: each holds its position and resting
    stop/target; a reduce-only market exit fills at the last recorded price at the
    clock's time and flattens it. Nothing else (market data comes from the stream)."""

    exchange_id = "binance"

    def __init__(self, clock: SimulatedClock, plans: list[Plan]) -> None:
        self._clock = clock
        self.held: dict[str, ExchangePosition] = {}
        self.orders: dict[str, Order] = {}
        self._by_client: dict[str, Order] = {}
        self._lock = threading.Lock()
        for plan in plans:
            account = f"user-{plan.pid}"
            self.held[account] = ExchangePosition(
                account=account,
                symbol=plan.symbol,
                direction=plan.direction,
                amount=1.0,
                entry_price=plan.entry,
            )
            for oid, kind in (
                (f"stop-{plan.pid}", OrderType.STOP_MARKET),
                (f"tp-{plan.pid}", OrderType.TAKE_PROFIT_MARKET),
            ):
                self.orders[oid] = Order(
                    id=oid,
                    client_order_id=oid,
                    account=account,
                    symbol=plan.symbol,
                    side=Side.SELL if plan.direction is Direction.LONG else Side.BUY,
                    type=kind,
                    amount=1.0,
                    stop_price=plan.stop,
                    reduce_only=True,
                    status=OrderStatus.OPEN,
                    created_ms=plan.opened_ms,
                    updated_ms=plan.opened_ms,
                )

    def last_price(self, symbol: str) -> float:
        now = self._clock.now_ms()
        return [p for t, p in RAW[symbol] if t <= now][-1]

    def create_order(self, account: str, request: OrderRequest) -> Order:
        with self._lock:
            if request.client_order_id in self._by_client:
                return self._by_client[request.client_order_id]
            price = self.last_price(request.symbol)
            now = self._clock.now_ms()
            order = Order(
                id=f"x-{request.client_order_id}",
                client_order_id=request.client_order_id,
                account=account,
                symbol=request.symbol,
                side=request.side,
                type=request.type,
                amount=request.amount,
                reduce_only=request.reduce_only,
                status=OrderStatus.FILLED,
                filled=request.amount,
                average=price,
                created_ms=now,
                updated_ms=now,
            )
            self.orders[order.id] = self._by_client[order.client_order_id] = order
            self.held.pop(account, None)
            return order

    def fetch_order(self, account: str, order_id: str) -> Order:
        return self.orders[order_id]

    def fetch_open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        return [
            o
            for o in self.orders.values()
            if o.account == account
            and o.status is OrderStatus.OPEN
            and (symbol is None or o.symbol == symbol)
        ]

    def fetch_open_orders_on(self, account: str, symbols: Collection[str]) -> list[Order]:
        return [o for o in self.fetch_open_orders(account) if o.symbol in symbols]

    def cancel_order(self, account: str, order_id: str) -> Order:
        order = self.orders[order_id]
        if order.status is OrderStatus.OPEN:
            order = self.orders[order_id] = order.model_copy(
                update={"status": OrderStatus.CANCELED}
            )
        return order

    def fetch_positions(self, account: str) -> list[ExchangePosition]:
        held = self.held.get(account)
        return [held] if held is not None else []

    def fetch_tickers(self, symbols: Any = None) -> list[Any]:
        return []

    def fetch_ohlcv(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def poll_trades(self, symbols: Any, after_ms: int) -> list[Any]:
        raise AssertionError("the worker's trades come from the stream")


# --------------------------------------------------------------------- the run
@pytest.fixture
def server() -> Iterator[BinanceStreamStandIn]:
    with BinanceStreamStandIn(speed=16.0, loop_recording=False) as srv:
        yield srv


def delivered_through(stream: CcxtTradeStream, t_ms: int) -> bool:
    """Every followed symbol's trades up to ``t_ms`` have arrived: a later one has (one
    symbol's stream is in order), or the recording's last one has."""
    status = stream.status()
    return bool(status) and all(
        st.last_trade_ms is not None
        and (st.last_trade_ms > t_ms or st.last_trade_ms >= RAW[symbol][-1][0])
        for symbol, st in status.items()
    )


def listed_exits(state: SqliteStateStore) -> list[dict[str, Any]]:
    """The worker's exits as stored: rule, reason, decision time, price, numbers."""
    out = []
    for doc in state.query(Collections.POSITIONS):
        position = Position.model_validate(doc)
        if position.status is not PositionStatus.CLOSED:
            continue
        assert position.exit_reason is not None and position.closed_at is not None
        out.append(
            {
                "position": position.id,
                "symbol": position.symbol,
                "direction": position.direction.value,
                "rule": RULE[position.exit_reason.value],
                "reason": position.exit_reason.value,
                "decided_at_ms": int(position.closed_at.timestamp() * 1000),
                "price": position.exit_price,
                "detail": position.exit_detail,
            }
        )
    return sorted(out, key=lambda e: (e["decided_at_ms"], e["position"]))


def trigger_level(exit_: dict[str, Any]) -> float:
    """The crossed level the worker recorded for its exit."""
    detail = exit_["detail"]
    key = {
        "stop_loss": "stop_loss",
        "trailing_stop": "trail_stop",
        "take_profit": "take_profit",
        "profit_lock": "lock_price",
        "max_hold": "held_minutes",
    }[exit_["reason"]]
    return float(detail[key])


def test_every_exit_on_the_replayed_stream_is_listed_and_recomputed_from_raw_messages(
    server: BinanceStreamStandIn, tmp_path: Path
) -> None:
    expected = {plan.pid: recompute(plan) for plan in PLANS}
    # the scenario exercises several rules, and leaves positions open too
    reasons = {e.reason for e in expected.values() if e is not None}
    assert {"stop_loss", "trailing_stop", "take_profit", "profit_lock", "max_hold"} <= reasons
    assert any(e is None for e in expected.values())

    clock = SimulatedClock(datetime.fromtimestamp(START / 1000, UTC))
    state = SqliteStateStore(tmp_path / "state.sqlite")
    for plan in PLANS:
        p = position_of(plan)
        state.set(Collections.POSITIONS, p.id, p.model_dump(mode="json"))
    exchange = HeldPositions(clock, PLANS)
    factory = binance_usdm_client_factory(ws_url=server.ws_url, rest_url=server.rest_url)
    stream = CcxtTradeStream(factory, exchange_id="binance", stale_after_s=120.0)
    monitor = ExitMonitor(
        state,
        exchange,  # type: ignore[arg-type]
        InMemoryBus(),
        LocalBlobStore(tmp_path / "blobs"),
        clock,
        CONFIG,
        ticks=stream,
    )
    stop = threading.Event()
    cycles: list[int] = []

    def next_cycle(_seconds: float) -> bool:
        """Between two cycles: move the clock 2 s on once the stream has delivered."""
        cycles.append(clock.now_ms())
        target = clock.now_ms() + CYCLE_MS
        if target > CYCLES[-1]:
            return True
        assert wait_until(lambda: delivered_through(stream, target), timeout=60), (
            f"stream did not deliver up to {target}: {stream.status()}"
        )
        clock.set_ms(target)
        return False

    try:
        status = run_worker(SimpleNamespace(monitor=monitor), stop, 0.0, sleep=next_cycle)
    finally:
        stream.close()
    assert status.failed_cycles == 0 and status.reconciled
    assert cycles == [START, *CYCLES]

    listed = listed_exits(state)
    (tmp_path / "exits.json").write_text(json.dumps(listed, indent=2), encoding="utf-8")
    print(json.dumps(listed, indent=2))  # the listing, for the log

    by_id = {e["position"]: e for e in listed}
    for plan in PLANS:
        want = expected[plan.pid]
        got = by_id.get(plan.pid)
        if want is None:
            assert got is None, f"{plan.pid}: the worker exited where no rule fires: {got}"
            doc = state.get(Collections.POSITIONS, plan.pid)
            assert doc is not None and doc["status"] == PositionStatus.OPEN.value
            continue
        assert got is not None, f"{plan.pid}: missed exit {want}"
        assert (got["rule"], got["reason"]) == (3, want.reason), plan.pid
        assert got["decided_at_ms"] == want.at_ms, (plan.pid, got, want)
        assert got["price"] == want.price, (plan.pid, got, want)
        if "price" in got["detail"]:
            assert got["detail"]["price"] == want.price
        assert trigger_level(got) == pytest.approx(want.level, rel=1e-12), (plan.pid, got, want)
    assert len(listed) == sum(e is not None for e in expected.values())
