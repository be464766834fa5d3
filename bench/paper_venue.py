"""Benchmark: the paper venue's cost per order and per balance, one by one and batched.

Run: ``.venv/bin/python bench/paper_venue.py [accounts ...]`` (default 1000). For each
ledger store (the private in-memory SQLite store the fan-out bench and ``run`` use, a
SQLite file, the backtest's ``MemoryStateStore``) and each account count: fresh accounts
each get a bracket of 3 orders (market entry, stop loss, take profit: what an executor
places for one decision), once with ``create_order`` call by call and once with one
``create_orders`` batch on a second, identical exchange; then ``fetch_balance`` of every
account one by one and ``fetch_balances`` of all, and the monitor's reads
(``fetch_open_orders`` and ``fetch_balance`` of an account with resting orders). Reports
CPU microseconds (``time.process_time``) per order / per call, checks the two ledgers are
identical, and writes ``bench/results/paper_venue.json``.
"""

from __future__ import annotations

import json
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
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.adapters.paper.ledger import PaperCollections
from prometheus_trader.domain.market import Side
from prometheus_trader.domain.trading import Order, OrderRequest, OrderType
from prometheus_trader.ports import MarketStore, OrderRejected, StateStore
from prometheus_trader.sample import SAMPLE_STORE_DIR

RESULTS = Path(__file__).resolve().parent / "results" / "paper_venue.json"
START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SYMBOL = "ETH/USDT:USDT"
MONITOR_READS = 2_000  # monitor-style reads per measurement


def bracket(account: str, price: float) -> list[tuple[str, OrderRequest]]:
    """One decision's orders: a market entry, its stop loss and its take profit."""
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
        (account, req("sl", Side.SELL, OrderType.STOP_MARKET, round(price * 0.99, 2))),
        (account, req("tp", Side.SELL, OrderType.TAKE_PROFIT_MARKET, round(price * 1.03, 2))),
    ]


def _ledger_text(exchange: ReplayExchange) -> str:
    state = exchange.ledger.state
    collections = (PaperCollections.ACCOUNTS, PaperCollections.ORDERS, PaperCollections.FILLS)
    return json.dumps([state.query(c) for c in collections])


def _cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.process_time()
    result = fn()
    return time.process_time() - began, result


def measure(source: MarketStore, accounts: int, ledger: str, tmp: Path) -> dict[str, Any]:
    """One account count on one ledger store: one by one vs batched."""

    def exchange(tag: str) -> ReplayExchange:
        clock = SimulatedClock(START)
        state: StateStore | None
        if ledger == "private in-memory SQLite":
            state = None
        elif ledger == "SQLite file":
            state = SqliteStateStore(tmp / f"ledger-{tag}.sqlite")
        else:
            state = MemoryStateStore()
        ex = ReplayExchange(source, clock, ledger=state, ledger_exclusive=True)
        ex.load_markets()
        ex.fetch_tickers([SYMBOL])
        return ex

    single, batched = exchange("single"), exchange("batched")
    price = single.fetch_tickers([SYMBOL])[0].last
    names = [f"u{i:06d}" for i in range(accounts)]
    items = [item for name in names for item in bracket(name, price)]

    def one_by_one() -> list[Order | OrderRejected]:
        out: list[Order | OrderRejected] = []
        for account, request in items:
            try:
                out.append(single.create_order(account, request))
            except OrderRejected as exc:
                out.append(exc)
        return out

    cpu_single, got_single = _cpu(one_by_one)
    cpu_batch, got_batch = _cpu(lambda: batched.create_orders(items))
    rejected = sum(isinstance(r, OrderRejected) for r in got_batch)
    same = [str(r) for r in got_single] == [str(r) for r in got_batch] and _ledger_text(
        single
    ) == _ledger_text(batched)
    cpu_bal_single, balances = _cpu(lambda: {a: single.fetch_balance(a) for a in names})
    cpu_bal_batch, balances_batch = _cpu(lambda: batched.fetch_balances(names))
    same = same and balances == balances_batch
    # the monitor's reads: an account with a position and two resting orders
    probe = names[0]
    cpu_open, _ = _cpu(lambda: [single.fetch_open_orders(probe) for _ in range(MONITOR_READS)])
    cpu_one_bal, _ = _cpu(lambda: [single.fetch_balance(probe) for _ in range(MONITOR_READS)])
    orders = len(items)
    return {
        "ledger": ledger,
        "accounts": accounts,
        "orders": orders,
        "rejected": rejected,
        "identical": same,
        "cpu_us_per_order_one_by_one": round(cpu_single / orders * 1e6, 1),
        "cpu_us_per_order_batched": round(cpu_batch / orders * 1e6, 1),
        "cpu_us_per_balance_one_by_one": round(cpu_bal_single / accounts * 1e6, 1),
        "cpu_us_per_balance_batched": round(cpu_bal_batch / accounts * 1e6, 1),
        "cpu_us_per_fetch_open_orders": round(cpu_open / MONITOR_READS * 1e6, 1),
        "cpu_us_per_fetch_balance_repeated": round(cpu_one_bal / MONITOR_READS * 1e6, 1),
    }


LEDGERS = ("private in-memory SQLite", "SQLite file", "MemoryStateStore")


def main(argv: list[str]) -> int:
    """Measure each account count on each ledger store; print and write the results."""
    counts = [int(a) for a in argv] or [1000]
    rows = []
    with DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True) as source:
        for ledger in LEDGERS:
            for n in counts:
                with tempfile.TemporaryDirectory() as tmp:
                    row = measure(source, n, ledger, Path(tmp))
                rows.append(row)
                print(
                    f"{ledger:26s} {n:6d} accounts: per order"
                    f" {row['cpu_us_per_order_one_by_one']:7.1f} µs one by one,"
                    f" {row['cpu_us_per_order_batched']:7.1f} µs batched; per balance"
                    f" {row['cpu_us_per_balance_one_by_one']:6.1f} /"
                    f" {row['cpu_us_per_balance_batched']:6.1f}; open orders"
                    f" {row['cpu_us_per_fetch_open_orders']:5.1f}, balance"
                    f" {row['cpu_us_per_fetch_balance_repeated']:5.1f}; identical"
                    f" {row['identical']}"
                )
    result = {
        "benchmark": "paper venue: N accounts x 3 orders (entry, stop, take profit), "
        "create_order one by one vs one create_orders batch; balances; monitor reads",
        "python": platform.python_version(),
        "symbol": SYMBOL,
        "start": START.isoformat(),
        "runs": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
