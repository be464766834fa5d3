"""Benchmark: the paper venue's cost per order and per balance, one by one and batched.

Run: ``.venv/bin/python bench/paper_venue.py [accounts ...]`` (default 1000). For each
ledger store (the private one a ``ReplayExchange`` makes when given none: a
``MemoryStateStore``, as in the backtest and the fan-out bench; SQLite in memory; a SQLite
file, as ``run``'s) and each account count: fresh accounts each get a bracket of 3 orders
(market entry, stop loss, take profit: what an executor places for one decision), with
``create_order`` call by call on one exchange, in one ``create_orders`` call on a second
and in 3 ``create_orders`` calls on a third (every entry, then every stop, then every take
profit: how the batched executor places them); the three ledgers' documents must be
identical. Then ``fetch_balance`` of every account one by one and ``fetch_balances`` of
all; then the exit monitor's reads of one account with resting orders
(``fetch_open_orders``, ``fetch_balance``, ``fetch_positions``), the simulated clock 2 s
further each cycle. Reports CPU microseconds (``time.process_time``, best of 3 fresh runs)
per order, per balance and per monitor cycle; writes ``bench/results/paper_venue.json``.
With the code before the batch calls on ``PYTHONPATH`` it measures the single calls only.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.adapters.paper.ledger import PaperCollections
from prometheus_trader.domain.market import Side
from prometheus_trader.domain.trading import Order, OrderRequest, OrderType
from prometheus_trader.ports import MarketStore, OrderRejected, StateStore
from prometheus_trader.sample import SAMPLE_STORE_DIR

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(
    os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)
RESULTS = RESULTS_DIR / "paper_venue.json"
START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SYMBOL = "ETH/USDT:USDT"
# the code before the batch calls (the "before" column: run with that checkout on
# PYTHONPATH) measures the single calls only
BATCH_CALLS = hasattr(ReplayExchange, "create_orders")
MONITOR_CYCLES = 1_500  # monitor cycles (open orders, balance, positions) per measurement


def bracket(account: str, price: float, width: float = 0.01) -> list[tuple[str, OrderRequest]]:
    """One decision's orders: a market entry, its stop loss ``width`` below and its take
    profit 3 × ``width`` above."""
    amount = round(500 / price, 3)

    def req(leg: str, side: Side, kind: OrderType, stop: float | None = None) -> OrderRequest:
        return OrderRequest(
            client_order_id=f"sig-{account}-{leg}",
            symbol=SYMBOL,
            side=side,
            type=kind,
            amount=amount,
            stop_price=stop,
            reduce_only=leg != "entry",
            leverage=3 if leg == "entry" else None,
        )

    return [
        (account, req("entry", Side.BUY, OrderType.MARKET)),
        (account, req("sl", Side.SELL, OrderType.STOP_MARKET, round(price * (1 - width), 2))),
        (
            account,
            req("tp", Side.SELL, OrderType.TAKE_PROFIT_MARKET, round(price * (1 + 3 * width), 2)),
        ),
    ]


def one_by_one(
    exchange: ReplayExchange, items: list[tuple[str, OrderRequest]]
) -> list[Order | OrderRejected]:
    """``create_order`` for each item; a refusal in its place."""
    out: list[Order | OrderRejected] = []
    for account, request in items:
        try:
            out.append(exchange.create_order(account, request))
        except OrderRejected as exc:
            out.append(exc)
    return out


def _ledger_text(exchange: ReplayExchange) -> str:
    state = exchange.ledger.state
    collections = (PaperCollections.ACCOUNTS, PaperCollections.ORDERS, PaperCollections.FILLS)
    return json.dumps([state.query(c) for c in collections])


def _cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    """CPU seconds of ``fn()`` and its result."""
    began = time.process_time()
    result = fn()
    return time.process_time() - began, result


def measure(
    source: MarketStore, accounts: int, ledger: str, tmp: Path, repeats: int
) -> dict[str, Any]:
    """One account count on one ledger store: one by one vs batched (best of ``repeats``
    fresh pairs of exchanges), then the monitor's reads."""

    def exchange(tag: str) -> tuple[ReplayExchange, SimulatedClock]:
        clock = SimulatedClock(START)
        state: StateStore | None
        if ledger == "private (the default store)":
            state = None  # the default: what the fan-out bench and tests use
        elif ledger == "SQLite in memory":
            state = SqliteStateStore()
        else:
            state = SqliteStateStore(tmp / f"ledger-{tag}.sqlite")
        ex = ReplayExchange(source, clock, ledger=state, ledger_exclusive=True)
        ex.load_markets()
        ex.fetch_tickers([SYMBOL])
        return ex, clock

    names = [f"u{i:06d}" for i in range(accounts)]
    best: dict[str, float] = {}
    same = True
    rejected = 0
    for n in range(repeats):
        (single, _), (batched, clock) = exchange(f"single{n}"), exchange(f"batched{n}")
        rounds, _ = exchange(f"rounds{n}")
        price = single.fetch_tickers([SYMBOL])[0].last
        items = [item for name in names for item in bracket(name, price)]

        gc.collect()
        cpu = {}
        cpu["single"], got_single = _cpu(lambda ex=single, todo=items: one_by_one(ex, todo))
        rejected = sum(isinstance(r, OrderRejected) for r in got_single)
        cpu["balance_single"], balances = _cpu(
            lambda ex=single: {a: ex.fetch_balance(a) for a in names}
        )
        if BATCH_CALLS:
            gc.collect()
            cpu["batched"], got_batch = _cpu(lambda ex=batched, todo=items: ex.create_orders(todo))
            same = same and [str(r) for r in got_single] == [str(r) for r in got_batch]
            same = same and _ledger_text(single) == _ledger_text(batched)
            cpu["balance_batched"], balances_batch = _cpu(
                lambda ex=batched: ex.fetch_balances(names)
            )
            same = same and balances == balances_batch
            # as the batched executor places them: every entry, then every stop, then
            # every take profit (one call each)
            legs = [items[leg::3] for leg in range(3)]
            gc.collect()
            cpu["rounds"], got_rounds = _cpu(
                lambda ex=rounds, todo=legs: [ex.create_orders(leg) for leg in todo]
            )
            by_leg = [r for leg in got_rounds for r in leg]
            in_order = [by_leg[(i % 3) * accounts + i // 3] for i in range(len(items))]
            same = same and [str(r) for r in got_single] == [str(r) for r in in_order]
            same = same and _ledger_text(single) == _ledger_text(rounds)
        # the exit monitor's reads of one account (a position, its stop and take profit,
        # wide enough not to fill) as the simulated time moves on by 2 s per cycle
        one_by_one(batched, bracket("probe", price, width=0.2))

        def monitor(ex: ReplayExchange = batched, clk: SimulatedClock = clock) -> None:
            for _ in range(MONITOR_CYCLES):
                clk.advance(2)
                ex.fetch_open_orders("probe")
                ex.fetch_balance("probe")
                ex.fetch_positions("probe")

        cpu["monitor"], _ = _cpu(monitor)
        assert len(batched.fetch_open_orders("probe")) == 2, "the probe's orders filled"
        for key, value in cpu.items():
            best[key] = min(best.get(key, value), value)
    orders = accounts * 3

    def per(key: str, count: int) -> float | None:
        return round(best[key] / count * 1e6, 1) if key in best else None

    return {
        "ledger": ledger,
        "accounts": accounts,
        "orders": orders,
        "rejected": rejected,
        "identical": same if BATCH_CALLS else None,
        "repeats": repeats,
        "cpu_us_per_order_one_by_one": per("single", orders),
        "cpu_us_per_order_batched": per("batched", orders),
        "cpu_us_per_order_batched_in_rounds": per("rounds", orders),
        "cpu_us_per_balance_one_by_one": per("balance_single", accounts),
        "cpu_us_per_balance_batched": per("balance_batched", accounts),
        "cpu_us_per_monitor_cycle": per("monitor", MONITOR_CYCLES),
    }


LEDGERS = ("private (the default store)", "SQLite in memory", "SQLite file")


def main(argv: list[str]) -> int:
    """Measure each account count on each ledger store; print and write the results."""
    counts = [int(a) for a in argv] or [1000]
    repeats = 3
    rows = []
    with DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True) as source:
        for ledger in LEDGERS:
            for n in counts:
                with tempfile.TemporaryDirectory() as tmp:
                    row = measure(source, n, ledger, Path(tmp), repeats)
                rows.append(row)
                print(
                    f"{ledger:27s} {n:6d} accounts: µs CPU per order"
                    f" {row['cpu_us_per_order_one_by_one']} one by one,"
                    f" {row['cpu_us_per_order_batched']} batched,"
                    f" {row['cpu_us_per_order_batched_in_rounds']} in 3 rounds; per balance"
                    f" {row['cpu_us_per_balance_one_by_one']} /"
                    f" {row['cpu_us_per_balance_batched']}; per monitor cycle"
                    f" {row['cpu_us_per_monitor_cycle']}; identical {row['identical']}"
                )
    result = {
        "benchmark": "paper venue: N accounts x 3 orders (market entry, stop loss, take "
        "profit), create_order one by one vs one create_orders call; fetch_balance one by "
        "one vs fetch_balances; a monitor cycle (fetch_open_orders + fetch_balance + "
        "fetch_positions of one account, 2 simulated seconds apart); best of the repeats",
        "python": platform.python_version(),
        "symbol": SYMBOL,
        "start": START.isoformat(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "runs": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0 if all(r["identical"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
