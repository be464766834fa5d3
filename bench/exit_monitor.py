"""Benchmark: the exit monitor's tick ingestion, one monitor cycle, and tick→decision latency.

Run: ``make bench-exit`` (or ``.venv/bin/python bench/exit_monitor.py [--laps N]``).
Writes ``bench/results/exit_monitor.json`` and prints the figures.

1. **Ingestion** (ticks per CPU-second, one core): the recorded Binance USD-M trade
   messages in ``tests/fixtures/data/ws/`` are parsed by ccxt's own websocket parser once
   (not timed: that is the websocket read), looped ``--laps`` times (timestamps shifted by
   the recording's span, ids made unique per lap), then fed in 2-second cycles: each
   symbol's ccxt unified dicts of the cycle (ccxt hands them over per market) in →
   ``buffered_batches`` (what ``CcxtTradeStream.poll_ticks`` returns: numpy columns,
   ``checked``: the hand-over below already dropped repeated ids, so the window does not
   look again) → ``TradeWindow.add_batch`` and prune → ``evaluate_exit`` for one long and one short
   position per symbol (decisions out). This is the worker's path. For comparison, the
   ``Trade`` path the worker used before (one ``Trade`` per tick, one ``window.add`` per
   tick). Separately, the read side's hand-over (``CcxtTradeStream.accept_unified``,
   called by the websocket loop with each ccxt result, dropping recently seen ids) per
   message of one trade, the worst case.
2. **Cycle**: one ``ExitMonitor.cycle()`` over 1,000 and 10,000 open positions on 500
   symbols, through the use-case with the embedded SQLite state store (a file; CPU is the
   figure) and with the Firestore emulator (started here on loopback; wall is the figure),
   and a bench exchange that answers from memory (open stops, fills at the last price), so
   the time is the use-case's and the store's. Each symbol gets every 50th recorded tick
   of one of the two recorded markets (price-scaled). Cycle 1 loads 15 minutes of ticks
   (and the open positions: the monitor holds them in memory from then on, fed by the
   store's change stream); the last two cycles (2 s of ticks each) are the steady state
   and are reported (the emulator runs one more: its listener's first complete result
   arrives in cycle 2). After each cycle the positions it closed are stored again as
   open under new ids (new positions arriving as fast as old ones close), so every cycle
   sees all N open positions, and the change stream carries them in. Two rule sets: the defaults
   (on the emulator up to ``--emulator-default-max`` positions: each close is several
   round trips), and "quiet" (every rule computed, thresholds out of reach: the cost
   with no exits). ``state_updates``/``state_sets`` count the cycle's writes.
3. **Latency**: one tick at a time, in process: the tick's dict in → its column batch →
   window updated → decisions for the symbol's positions out; p50/p99 over
   ``--latency-laps`` laps of the recording (and per lap), in wall time (``perf_counter``:
   includes being descheduled on a busy machine) and in the thread's CPU time
   (``thread_time``), with the load average before and after, the ticks whose wall time
   exceeds their CPU time by over 1 ms (they waited for a core), and every garbage
   collector pass during the laps (count, longest).

CPU is ``time.process_time``; wall is ``time.perf_counter``. No assertion on either.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the recording and its exchangeInfo live with the stand-in

from tests.standins.binance_ws import EXCHANGE_INFO, load_recording  # noqa: E402

from prometheus_trader.adapters.embedded.clocks import SimulatedClock  # noqa: E402
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore  # noqa: E402
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus  # noqa: E402
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore  # noqa: E402
from prometheus_trader.adapters.streaming.ccxt_trade_stream import (  # noqa: E402
    CcxtTradeStream,
    buffered_batches,
)
from prometheus_trader.domain.exits import ExitConfig, evaluate_exit  # noqa: E402
from prometheus_trader.domain.market import MarketType, Side, Trade  # noqa: E402
from prometheus_trader.domain.signals import Direction, TakeProfitLevel  # noqa: E402
from prometheus_trader.domain.trade_window import TradeWindow  # noqa: E402
from prometheus_trader.domain.trading import (  # noqa: E402
    Balance,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
)
from prometheus_trader.domain.users import RiskProfile, User  # noqa: E402
from prometheus_trader.usecases.monitor import ExitMonitor  # noqa: E402
from prometheus_trader.usecases.names import Collections  # noqa: E402
from prometheus_trader.usecases.stats import UserStats, user_stats_id  # noqa: E402

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or ROOT / "bench" / "results")
RESULTS = RESULTS_DIR / "exit_monitor.json"
CLOSE_HEAVY_RESULTS = RESULTS_DIR / "exit_monitor_close_heavy.json"
CYCLE_MS = 2_000
SYMBOLS = 500
STRIDE = 50
Raw = dict[str, Any]


# ----------------------------------------------------------------- recorded ticks
def parsed_recording() -> list[Raw]:
    """The recorded ``@trade`` messages as ccxt unified trades (ccxt's own parser)."""
    import ccxt.pro

    client = ccxt.pro.binanceusdm()
    client.set_markets([client.parse_market(s) for s in EXCHANGE_INFO["symbols"]])
    by_id = {m["id"]: m for m in client.markets.values()}
    out = [client.parse_ws_trade(m.data, by_id[m.data["s"]]) for m in load_recording()]
    out.sort(key=lambda t: t["timestamp"])  # the two recordings interleave by local time
    return out


def looped(base: Sequence[Raw], laps: int) -> list[Raw]:
    """``laps`` copies of the recording back to back (times shifted, ids unique)."""
    span = base[-1]["timestamp"] - base[0]["timestamp"] + 1
    out: list[Raw] = []
    for lap in range(laps):
        shift = lap * span
        for t in base:
            row = dict(t)
            row["timestamp"] = t["timestamp"] + shift
            row["id"] = f"{t['id']}-{lap}" if lap else t["id"]
            out.append(row)
    return out


def in_cycles(raws: Sequence[Raw], cycle_ms: int = CYCLE_MS) -> list[list[Raw]]:
    """The ticks split into what each 2-second monitor cycle would receive."""
    batches: list[list[Raw]] = []
    end = raws[0]["timestamp"] + cycle_ms
    current: list[Raw] = []
    for t in raws:
        while t["timestamp"] >= end:
            batches.append(current)
            current = []
            end += cycle_ms
        current.append(t)
    batches.append(current)
    return batches


def position(
    pid: str, user: str, symbol: str, direction: Direction, entry: float, opened_ms: int
) -> Position:
    """An open position with its stop 1 % and first target 2 % away (bench exchange ids)."""
    sign = direction.sign
    return Position(
        id=pid,
        user_id=user,
        signal_id=f"sig-{pid}",
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=symbol,
        direction=direction,
        amount=1.0,
        entry_price=entry,
        leverage=3.0,
        stop_loss=entry * (1 - sign * 0.01),
        take_profits=[TakeProfitLevel(price=entry * (1 + sign * 0.02), pct=2.0, size_fraction=1)],
        trailing_stop_pct=0.5,
        best_price=entry,
        worst_price=entry,
        stop_order_id=f"stop-{pid}",
        take_profit_order_ids=[f"tp-{pid}"],
        entry_order_id=f"entry-{pid}",
        opened_at=datetime.fromtimestamp(opened_ms / 1000, UTC),
        opened_ms=opened_ms,
        max_hold_minutes=24 * 60,
    )


def to_trade(raw: Mapping[str, Any]) -> Trade:
    """What the stream built per tick before the fast path (``CcxtTradeStream._to_trade``)."""
    return Trade.model_construct(
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=str(raw["symbol"]),
        ts_ms=int(raw["timestamp"]),
        trade_id=str(raw["id"]),
        price=float(raw["price"]),
        amount=float(raw["amount"]),
        side=Side.BUY if raw["side"] == "buy" else Side.SELL,
        source="trade",
    )


# ------------------------------------------------------------------- 1. ingestion
Cycle = tuple[int, list[Raw], dict[str, list[Raw]]]  # (now, mixed ticks, per symbol)


def ingest(
    cycles: Sequence[Cycle],
    feed: Callable[[dict[str, TradeWindow], Cycle], object],
    positions: Mapping[str, list[Position]],
    config: ExitConfig,
) -> dict[str, float]:
    windows: dict[str, TradeWindow] = {}
    ticks = decisions = exits = 0
    since: int | None = None
    began_cpu, began_wall = time.process_time(), time.perf_counter()
    for cycle in cycles:
        feed(windows, cycle)
        now_ms = cycle[0]
        for symbol, window in windows.items():
            window.prune(now_ms)
            for p in positions[symbol]:
                evaluation = evaluate_exit(p, window, now_ms, config, since_ms=since)
                decisions += 1
                exits += evaluation.exit is not None
        since = now_ms
        ticks += len(cycle[1])
    cpu, wall = time.process_time() - began_cpu, time.perf_counter() - began_wall
    return {
        "ticks": ticks,
        "decisions": decisions,
        "exit_decisions": exits,
        "cpu_seconds": round(cpu, 4),
        "wall_seconds": round(wall, 4),
        "ticks_per_cpu_second": round(ticks / cpu),
    }


def feed_columns(windows: dict[str, TradeWindow], cycle: Cycle) -> None:
    """The worker's path: per-symbol column batches, one vectorised append per window."""
    for symbol, batch in buffered_batches(cycle[2]).items():
        window = windows.get(symbol)
        if window is None:
            window = windows[symbol] = TradeWindow(symbol)
        window.add_batch(batch)


def feed_trades(windows: dict[str, TradeWindow], cycle: Cycle) -> None:
    """The worker's old path: a ``Trade`` per tick, one ``window.add`` per trade."""
    for trade in (to_trade(r) for r in cycle[1]):
        window = windows.get(trade.symbol)
        if window is None:
            window = windows[trade.symbol] = TradeWindow(trade.symbol)
        window.add([trade])


def as_cycles(raws: Sequence[Raw]) -> list[Cycle]:
    """The 2-second cycles with ticks, each also split per symbol (as ccxt delivers)."""
    out: list[Cycle] = []
    for batch in in_cycles(raws):
        if batch:
            per_symbol: dict[str, list[Raw]] = {}
            for r in batch:
                per_symbol.setdefault(r["symbol"], []).append(r)
            out.append((batch[-1]["timestamp"], batch, per_symbol))
    return out


class _IdleClient:
    """A ccxt.pro stand-in that never delivers (the bench feeds the stream itself)."""

    async def watch_trades_for_symbols(self, symbols: list[str]) -> list[Raw]:
        import asyncio

        await asyncio.Event().wait()
        return []

    async def close(self) -> None:
        return None


def bench_handover(raws: Sequence[Raw]) -> dict[str, object]:
    """The read side: ``accept_unified`` per ccxt message of one trade (worst case)."""
    with CcxtTradeStream(_IdleClient, exchange_id="binance", stale_after_s=3600) as stream:
        stream.follow(sorted({r["symbol"] for r in raws}))
        began = time.process_time()
        for r in raws:
            stream.accept_unified([r])
        cpu = time.process_time() - began
    return {
        "messages": len(raws),
        "trades_per_message": 1,
        "cpu_seconds": round(cpu, 4),
        "ns_per_trade": round(cpu / len(raws) * 1e9),
    }


def bench_ingestion(base: Sequence[Raw], laps: int) -> dict[str, object]:
    raws = looped(base, laps)
    cycles = as_cycles(raws)
    start = raws[0]["timestamp"]
    positions = {
        s: [
            position(f"{s}-L", "u", s, Direction.LONG, p, start - 1),
            position(f"{s}-S", "u", s, Direction.SHORT, p, start - 1),
        ]
        for s, p in _first_prices(raws).items()
    }
    config = ExitConfig()
    load_before = load_average()
    # best of five runs: the machine is shared, the least disturbed run is the figure
    # (every run's figure is kept: the median says how it holds under load)
    runs = [ingest(cycles, feed_columns, positions, config) for _ in range(5)]
    fast = max(runs, key=lambda r: r["ticks_per_cpu_second"])
    old = ingest(cycles, feed_trades, positions, config)
    same = fast["exit_decisions"] == old["exit_decisions"]
    return {
        "recording": "tests/fixtures/data/ws/usdm_trades_20240808_60s.txt.gz",
        "recorded_ticks": len(base),
        "laps": laps,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "cycle_ms": CYCLE_MS,
        "positions_evaluated_per_cycle": sum(len(v) for v in positions.values()),
        "worker_path_tick_columns": fast,
        "worker_path_runs_ticks_per_cpu_second": sorted(r["ticks_per_cpu_second"] for r in runs),
        "trade_objects_per_tick": old,
        "same_decisions": same,
        "speedup": round(fast["ticks_per_cpu_second"] / old["ticks_per_cpu_second"], 2),
        "read_side_handover": bench_handover(raws[: 4 * len(base)]),
    }


def _first_prices(raws: Iterable[Raw]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in raws:
        out.setdefault(r["symbol"], r["price"])
    return out


# ---------------------------------------------------------------------- 3. latency
def load_average() -> list[float]:
    """The machine's 1/5/15-minute load averages (``/proc/loadavg``; empty elsewhere)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def bench_latency(base: Sequence[Raw], laps: int = 5, freeze: bool = False) -> dict[str, object]:
    """Tick→decision, one tick at a time, over ``laps`` laps of the recording (the window
    warm with one lap before). Every garbage-collector pass during the laps is counted
    and timed (a pass is a real wall-time stall); ``freeze``: ``gc.freeze()`` after the
    warm-up (the collector then never walks the objects alive before), to compare."""
    raws = looped(base, laps + 1)
    warm, live = raws[: len(base)], raws[len(base) :]
    windows: dict[str, TradeWindow] = {}
    for symbol, batch in buffered_batches(_per_symbol(warm)).items():
        windows.setdefault(symbol, TradeWindow(symbol)).add_batch(batch)
    start = live[0]["timestamp"]
    positions = {
        s: [
            position(f"{s}-L", "u", s, Direction.LONG, p, start - 1),
            position(f"{s}-S", "u", s, Direction.SHORT, p, start - 1),
        ]
        for s, p in _first_prices(live).items()
    }
    config = ExitConfig()
    wall: list[int] = []
    cpu: list[int] = []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    collections: list[int] = []  # wall ns of each GC pass during the laps

    def on_gc(phase: str, info: Mapping[str, int], _t: list[int] = [0]) -> None:  # noqa: B006
        if phase == "start":
            _t[0] = clock()
        else:
            collections.append(clock() - _t[0])

    load_before = load_average()
    if freeze:
        gc.collect()
        gc.freeze()
    gc.callbacks.append(on_gc)
    try:
        for raw in live:
            began, began_cpu = clock(), cpu_clock()
            symbol = raw["symbol"]
            window = windows[symbol]
            window.add_batch(buffered_batches({symbol: [raw]})[symbol])
            now_ms = raw["timestamp"]
            window.prune(now_ms)
            for p in positions[symbol]:
                evaluate_exit(p, window, now_ms, config, since_ms=now_ms - 1)
            cpu.append(cpu_clock() - began_cpu)
            wall.append(clock() - began)
    finally:
        gc.callbacks.remove(on_gc)
        if freeze:
            gc.unfreeze()
    per_lap = len(base)
    # a tick whose wall time exceeds its CPU time by > 1 ms waited for a core (or slept)
    waited = [w - c for w, c in zip(wall, cpu, strict=True) if w - c > 1_000_000]
    return {
        "ticks": len(wall),
        "laps": laps,
        "positions_per_symbol": 2,
        "path": "dict → buffered_batches → add_batch → prune → evaluate_exit × 2",
        "gc_frozen_after_warm_up": freeze,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        **_quantiles("wall", wall),
        **_quantiles("cpu", cpu),
        "ticks_waiting_over_1ms": len(waited),
        "gc_passes": len(collections),
        "gc_max_us": round(max(collections, default=0) / 1000, 1),
        "per_lap": [
            {
                **_quantiles("wall", wall[i : i + per_lap]),
                **_quantiles("cpu", cpu[i : i + per_lap]),
            }
            for i in range(0, len(wall), per_lap)
        ],
    }


def _per_symbol(raws: Iterable[Raw]) -> dict[str, list[Raw]]:
    out: dict[str, list[Raw]] = {}
    for r in raws:
        out.setdefault(r["symbol"], []).append(r)
    return out


def _quantiles(label: str, samples: list[int]) -> dict[str, float]:
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=100)
    return {
        f"{label}_p50_us": round(q[49] / 1000, 1),
        f"{label}_p99_us": round(q[98] / 1000, 1),
        f"{label}_max_us": round(samples[-1] / 1000, 1),
    }


# ------------------------------------------------------------------------ 2. cycle
class BenchExchange:
    """Answers the monitor from memory: stops stay open, exits fill at the last price."""

    def __init__(self, ticks: Mapping[str, Sequence[Raw]]) -> None:
        self._ticks = ticks  # symbol → its unified trades, in time order
        self._times = {s: [r["timestamp"] for r in rows] for s, rows in ticks.items()}
        self._last: dict[str, float] = {}
        self.fetch_order_calls = 0
        self.open_orders_calls = 0
        # resting protective orders per account, built once (the exchange's cost is not
        # what is measured): stop and take-profit of every seeded position
        self._orders: dict[str, Order] = {}
        self._resting: dict[str, dict[str, Order]] = {}
        self._lock = threading.Lock()  # the monitor's closes may run on several threads

    def rest(self, account: str, order_id: str, symbol: str) -> None:
        """Seed one resting reduce-only order."""
        order = Order(
            id=order_id,
            client_order_id=order_id,
            account=account,
            symbol=symbol,
            side=Side.SELL,
            type=OrderType.STOP_MARKET,
            amount=1.0,
            stop_price=1.0,
            reduce_only=True,
            status=OrderStatus.OPEN,
            created_ms=0,
            updated_ms=0,
        )
        self._orders[order_id] = order
        self._resting.setdefault(account, {})[order_id] = order

    def exchange_id(self) -> str:
        return "binance"

    def poll_trades(self, symbols: Sequence[str], after_ms: int) -> list[Trade]:
        out: list[Trade] = []
        for s in symbols:
            times = self._times.get(s, [])
            lo, hi = bisect_right(times, after_ms), bisect_right(times, self.now_ms)
            rows = [to_trade(r) for r in self._ticks[s][lo:hi]]
            if rows:
                self._last[s] = rows[-1].price
            out.extend(rows)
        return out

    now_ms = 0

    def fetch_order(self, account: str, order_id: str) -> Order:
        with self._lock:
            self.fetch_order_calls += 1
            return self._orders[order_id]

    def create_order(self, account: str, request: OrderRequest) -> Order:
        price = self._last.get(request.symbol, 1.0)
        return Order(
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
            fee=price * request.amount * 0.0005,
            created_ms=self.now_ms,
            updated_ms=self.now_ms,
        )

    def cancel_order(self, account: str, order_id: str) -> Order:
        with self._lock:
            self._resting.get(account, {}).pop(order_id, None)
            order = self._orders[order_id].model_copy(update={"status": OrderStatus.CANCELED})
            self._orders[order_id] = order
            return order

    def fetch_balance(self, account: str) -> Balance:
        return Balance(wallet=10_000.0)

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> list[Any]:
        return []

    def fetch_ohlcv(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def fetch_open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        with self._lock:
            self.open_orders_calls += 1
            return list(self._resting.get(account, {}).values())

    def fetch_positions(self, account: str) -> list[Any]:
        return []


# every rule computed, none fires: the cost of watching N positions with no exits
QUIET = ExitConfig(
    order_flow_long_exit_ratio=1e-9,
    order_flow_short_exit_ratio=1e9,
    adverse_move_thresholds=[(0.3, 10**6)],
    adverse_move_default=10**6,
    trail_arm_r=100.0,
)


def open_state(store: str, tmp: Path, name: str) -> Any:
    """The state store under test: a SQLite file, or the Firestore emulator (the env
    points at it; a unique collection prefix per run)."""
    if store == "sqlite":
        return SqliteStateStore(tmp / f"{name}.sqlite")
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

    return FirestoreStateStore(prefix=f"bench-{name}-{os.getpid()}-")


class NoFeed:
    """The state store without its change stream (no ``watch``): the monitor queries the
    open positions every cycle. On the emulator the listener costs what the emulator
    does (it re-sends every matching document per change); this isolates the closes."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "watch":
            raise AttributeError(name)
        return getattr(self._inner, name)


_RUN = [0]


def _runs() -> int:
    """A new number per cycle bench (its own state file or collection prefix)."""
    _RUN[0] += 1
    return _RUN[0]


STORES = {"sqlite": "embedded SQLite (file)", "firestore": "Firestore emulator"}
SEED_CHUNK = 400  # writes per seeding transaction (Firestore takes at most 500)


def bench_cycle(
    base: Sequence[Raw],
    positions_n: int,
    tmp: Path,
    config: ExitConfig,
    label: str,
    store: str = "sqlite",
    concurrency: int = 1,
    listener: bool = True,
    symbols_n: int = SYMBOLS,
) -> dict[str, object]:
    """Cycles 2 and 3 (steady state) over ``positions_n`` positions on 500 symbols."""
    raws = looped(base, 17)  # > 15 minutes of ticks, so cycle 1 fills the whole window
    first = _first_prices(raws)
    recorded = sorted(first)
    symbols = [f"S{i:03d}/USDT:USDT" for i in range(symbols_n)]
    ticks: dict[str, list[Raw]] = {}
    for i, s in enumerate(symbols):
        src = recorded[i % len(recorded)]
        scale = 1.0 + i / 1000  # distinct price levels per symbol
        own = [r for r in raws if r["symbol"] == src]
        # every STRIDE-th recorded tick: 500 symbols do not all trade like BTC and ETH
        ticks[s] = [
            {**r, "symbol": s, "price": r["price"] * scale} for r in own[i % STRIDE :: STRIDE]
        ]
    t0 = raws[0]["timestamp"]
    end_ms = raws[-1]["timestamp"] - 10 * CYCLE_MS
    opened_ms = end_ms - 60_000
    users = max(1, positions_n // 10)
    state = open_state(store, tmp, f"state-{positions_n}-{label[:5]}-c{concurrency}-{_runs()}")
    if not listener:
        state = NoFeed(state)
    exchange = BenchExchange(ticks)
    # the emulator's listener starts in cycle 1 (that cycle queries) and delivers its
    # first complete result by cycle 2: one more cycle, and the last two are reported
    cycles = 4
    clock = SimulatedClock(datetime.fromtimestamp((end_ms - (cycles - 1) * CYCLE_MS) / 1000, UTC))

    docs: dict[str, dict[str, Any]] = {}
    for k in range(positions_n):
        s = symbols[k % symbols_n]
        price = ticks[s][-1]["price"]
        d = Direction.LONG if k % 2 == 0 else Direction.SHORT
        p = position(f"p{k:06d}", f"u{k % users:05d}", s, d, price, opened_ms)
        docs[p.id] = p.model_dump(mode="json")

    def seed(ids: Iterable[str] | None = None) -> None:
        """Store the users (first time) and the positions, in chunked transactions."""
        writes: list[tuple[str, str, dict[str, Any]]] = []
        if ids is None:
            equity = exchange.fetch_balance("").equity
            day = datetime.fromtimestamp(end_ms / 1000, UTC).strftime("%Y-%m-%d")
            for u in range(users):
                user = User.with_profile(f"u{u:05d}", RiskProfile.MODERATE)
                writes.append((Collections.USERS, user.user_id, user.model_dump(mode="json")))
                # users who trade have their running stats (the portfolio rules' equity
                # readings) from earlier cycles: the steady state, where they change nothing
                stats = UserStats(
                    user_id=user.user_id, day=day, day_start_equity=equity, peak_equity=equity
                )
                writes.append(
                    (Collections.STATS, user_stats_id(user.user_id), stats.model_dump(mode="json"))
                )
        for pid in docs if ids is None else ids:
            doc = docs[pid]
            writes.append((Collections.POSITIONS, pid, doc))
            exchange.rest(doc["user_id"], f"stop-{pid}", doc["symbol"])
            exchange.rest(doc["user_id"], f"tp-{pid}", doc["symbol"])
        for at in range(0, len(writes), SEED_CHUNK):
            chunk = writes[at : at + SEED_CHUNK]
            state.transaction(lambda tx, c=chunk: [tx.set(*w) for w in c])

    seed()
    monitor = ExitMonitor(
        state,
        exchange,  # type: ignore[arg-type]
        InMemoryBus(),
        LocalBlobStore(tmp / "blobs"),
        clock,
        config,
        close_concurrency=concurrency,
    )
    writes = {"update": 0, "set": 0}  # the cycle's state writes (tracking; closes, events)
    counting = threading.Lock()
    for kind in writes:
        inner = getattr(state, kind)

        def counted(*args: Any, _inner: Any = inner, _kind: str = kind) -> Any:
            with counting:  # closes may run on several threads
                writes[_kind] += 1
            return _inner(*args)

        setattr(state, kind, counted)
    rows: list[dict[str, float]] = []
    reopened: list[str] = []
    for cycle in range(cycles):
        clock.set_ms(end_ms - (cycles - 1) * CYCLE_MS + cycle * CYCLE_MS)
        exchange.now_ms = clock.now_ms()
        if store != "sqlite":
            time.sleep(1.0)  # not timed: the listener hears the re-stored positions
        calls, listed = exchange.fetch_order_calls, exchange.open_orders_calls
        before = dict(writes)
        began_cpu, began_wall = time.process_time(), time.perf_counter()
        report = monitor.cycle()
        cpu, wall = time.process_time() - began_cpu, time.perf_counter() - began_wall
        # positions open as fast as they close: the closed ones come back (as new), so
        # every measured cycle sees all ``positions_n`` open positions
        # (under new ids: a closed position never reopens)
        for pid in sorted(report.closed):
            fresh = {**docs[pid], "id": f"{pid}-{cycle + 1}"}
            for key in ("signal_id", "stop_order_id", "entry_order_id"):
                fresh[key] = f"{docs[pid][key]}-{cycle + 1}"
            fresh["take_profit_order_ids"] = [f"tp-{fresh['id']}"]
            fresh["stop_order_id"] = f"stop-{fresh['id']}"
            docs[fresh["id"]] = fresh
            reopened.append(fresh["id"])
        seed(reopened)
        reopened.clear()
        rows.append(
            {
                "cycle": cycle + 1,
                "positions": report.positions,
                "trades_in": report.trades_seen,
                "closed": len(report.closed),
                "failed": len(report.failed),
                "fetch_order_calls": exchange.fetch_order_calls - calls,
                "fetch_open_orders_calls": exchange.open_orders_calls - listed,
                "state_updates": writes["update"] - before["update"],
                "state_sets": writes["set"] - before["set"],
                "cpu_ms": round(cpu * 1000, 1),
                "wall_ms": round(wall * 1000, 1),
            }
        )
    monitor.close()
    state.close()
    steady = rows[-2:]
    return {
        "positions": positions_n,
        "rules": label,
        "symbols": symbols_n,
        "users": users,
        "store": STORES[store],
        "close_concurrency": concurrency,
        "change_stream": listener,
        "ticks_recorded_span_ms": raws[-1]["timestamp"] - t0,
        "cycles": rows,
        "steady_cpu_ms": max(r["cpu_ms"] for r in steady),
        "steady_wall_ms": max(r["wall_ms"] for r in steady),
    }


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laps", type=int, default=40, help="recording loops for ingestion")
    parser.add_argument("--latency-laps", type=int, default=5, help="recording loops, latency")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() before latency")
    parser.add_argument("--positions", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument(
        "--stores", nargs="*", default=["sqlite", "firestore"], choices=sorted(STORES)
    )
    parser.add_argument(
        "--emulator-default-max",
        type=int,
        default=1_000,
        help="largest position count run with the default rules on the emulator (each "
        "close is several emulator round trips)",
    )
    parser.add_argument(
        "--close-heavy",
        action="store_true",
        help="only the close-heavy cycle: the default rules (about 60 %% of the positions "
        "close each cycle) over --positions (default 1,000), once per --close-concurrency, "
        "back to back, --repeat times; writes bench/results/exit_monitor_close_heavy.json",
    )
    parser.add_argument("--close-concurrency", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--symbols", type=int, default=SYMBOLS, help="cycle: symbols (a smoke run)")
    parser.add_argument("--repeat", type=int, default=2, help="close-heavy rounds")
    parser.add_argument(
        "--no-listener",
        action="store_true",
        help="close-heavy: the store without its change stream (the monitor queries the "
        "open positions each cycle; on the emulator this leaves out the listener's cost)",
    )
    args = parser.parse_args()
    base = parsed_recording()
    if args.close_heavy:
        close_heavy(base, args)
        return
    result: dict[str, object] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "ingestion": bench_ingestion(base, args.laps),
        "latency": bench_latency(base, args.latency_laps, args.gc_freeze),
    }
    rule_sets = ((QUIET, "quiet: no rule fires"), (ExitConfig(), "default"))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if "firestore" in args.stores:
            from prometheus_trader.app.emulators import EmulatorStack

            emulator = stack.enter_context(EmulatorStack(Path(tmp), services=("firestore",)))
            os.environ.update(emulator.env())
        result["cycle"] = [
            bench_cycle(base, n, Path(tmp), config, label, store, symbols_n=args.symbols)
            for store in args.stores
            for n in args.positions
            for config, label in rule_sets
            if store == "sqlite" or label != "default" or n <= args.emulator_default_max
        ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    ing = result["ingestion"]
    assert isinstance(ing, dict)
    print(
        f"ingestion: {ing['worker_path_tick_columns']['ticks_per_cpu_second']:,} ticks/CPU-s "
        f"worker path (tick columns; runs {ing['worker_path_runs_ticks_per_cpu_second']}, "
        f"load average {ing['load_average_before']}), "
        f"{ing['trade_objects_per_tick']['ticks_per_cpu_second']:,}"
        f" with a Trade per tick (x{ing['speedup']}), same decisions: {ing['same_decisions']}; "
        f"read-side hand-over {ing['read_side_handover']['ns_per_trade']} ns/trade"
    )
    lat = result["latency"]
    assert isinstance(lat, dict)
    print(
        f"tick→decision ({lat['ticks']:,} ticks, load average {lat['load_average_before']}): "
        f"wall p50 {lat['wall_p50_us']} µs, p99 {lat['wall_p99_us']} µs; "
        f"CPU p50 {lat['cpu_p50_us']} µs, p99 {lat['cpu_p99_us']} µs; "
        f"{lat['ticks_waiting_over_1ms']} ticks waited > 1 ms for a core; "
        f"{lat['gc_passes']} GC passes (max {lat['gc_max_us']} µs); per lap wall/CPU p99: "
        f"{[(r['wall_p99_us'], r['cpu_p99_us']) for r in lat['per_lap']]}"
    )
    for c in result["cycle"]:  # type: ignore[attr-defined]
        print(
            f"cycle {c['store']}, {c['positions']:>6} positions / {c['symbols']} symbols "
            f"({c['rules']}): "
            f"{c['steady_cpu_ms']} ms CPU, {c['steady_wall_ms']} ms wall "
            f"(cycles: {[(r['cpu_ms'], r['closed']) for r in c['cycles']]})"
        )
    print(f"wrote {RESULTS}")


def close_heavy(base: Sequence[Raw], args: argparse.Namespace) -> None:
    """Cycles where most positions close, the closes run on 1 and N threads, back to
    back (same machine load for both), on each store."""
    positions = args.positions if args.positions != [1_000, 10_000] else [1_000]
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if "firestore" in args.stores:
            from prometheus_trader.app.emulators import EmulatorStack

            emulator = stack.enter_context(EmulatorStack(Path(tmp), services=("firestore",)))
            os.environ.update(emulator.env())
        for store in args.stores:
            for n in positions:
                for round_ in range(args.repeat):
                    for c in args.close_concurrency:
                        load = os.getloadavg()[0]
                        run = bench_cycle(
                            base,
                            n,
                            Path(tmp),
                            ExitConfig(),
                            "default",
                            store,
                            c,
                            listener=not args.no_listener,
                            symbols_n=args.symbols,
                        )
                        run["round"] = round_ + 1
                        cycles = run["cycles"][1:]  # type: ignore[index]
                        run["heaviest"] = max(cycles, key=lambda r: r["closed"])
                        run["load_average_before"] = round(load, 1)
                        runs.append(run)
                        print(
                            f"close-heavy {run['store']}"
                            f"{'' if run['change_stream'] else ' (no change stream)'}, "
                            f"{n} positions, concurrency {c}, "
                            f"round {round_ + 1} (load average {load:.1f}): "
                            f"heaviest steady cycle {run['heaviest']['closed']} closes "  # type: ignore[index]
                            f"{run['heaviest']['wall_ms']} ms wall, "  # type: ignore[index]
                            f"{run['heaviest']['cpu_ms']} ms CPU "  # type: ignore[index]
                            f"(cycles wall/CPU/closed: "
                            f"{[(r['wall_ms'], r['cpu_ms'], r['closed']) for r in run['cycles']]})",  # type: ignore[attr-defined]
                            flush=True,
                        )
    result = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "close_heavy": runs,
    }
    CLOSE_HEAVY_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    CLOSE_HEAVY_RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {CLOSE_HEAVY_RESULTS}")


if __name__ == "__main__":
    main()
