"""The close pool's gain against a slow venue: one exit-monitor cycle in which every
position closes, through the real ccxt client talking to the loopback Binance USD-M
stand-in with a fixed delay per request.

``--users`` users each get ``--per-user`` long positions (one per symbol), opened by the
real executor on the stand-in answering at once (``tests/integration/close_world.py``).
Then, for each ``--latency-ms`` and each ``--concurrency``, the same opened world (the
venue's books put back, a copy of the state store) is closed by one monitor cycle (max
hold passed for every position), with the stand-in waiting that long before each
request. Per run: the cycle's wall seconds, closes, closes per second, the requests and
orders the stand-in received, and the time the cycle's thread spent reading (resting
orders per account, trades per symbol: decisions, not closes). The outcome of each run
(which positions closed, and every order change at the venue per account and symbol)
must be the same across concurrencies. ``--rate-limit-ms`` repeats one latency with
ccxt's client-side throttle on (``enableRateLimit``, as deployed).

``.venv/bin/python bench/close_latency.py`` writes ``bench/results/close_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stand-in and the world live with the tests

from tests.integration.close_world import World, venue_world  # noqa: E402

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or ROOT / "bench" / "results")
RESULTS = RESULTS_DIR / "close_latency.json"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed_phases(monitor: Any) -> dict[str, float]:
    """Add up the wall time of the cycle's thread in the exchange reads that decide
    (resting orders per account, trades per symbol; balances, candles and tickers for
    the portfolio rules)
    and in the closes (inline ``_close`` at concurrency 1, ``ClosePool.run`` above)."""
    spent = {"reads_s": 0.0, "closes_s": 0.0}
    cycle_thread = threading.get_ident()

    def wrap(owner: Any, name: str, into: str) -> None:
        inner: Callable[..., Any] = getattr(owner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                if threading.get_ident() == cycle_thread:
                    spent[into] += time.perf_counter() - t

        setattr(owner, name, call)

    reads = ("fetch_open_orders", "poll_trades", "fetch_balance", "fetch_ohlcv", "fetch_tickers")
    for name in reads:
        wrap(monitor._exchange, name, "reads_s")
    wrap(monitor, "_close", "closes_s")  # resolved at call time by the deferred lambdas
    wrap(monitor._closes, "run", "closes_s")
    return spent


def outcome(world: World, log_from: int, closed: dict[str, str]) -> dict[str, Any]:
    """What the cycle did, independent of timing: the closed positions and, per account
    and symbol, the venue's order changes in order (client ids are deterministic)."""
    per: dict[str, list[list[Any]]] = {}
    for entry in world.engine.log[log_from:]:
        key = f"{entry['account']} {entry['symbol']}"
        per.setdefault(key, []).append(
            [
                entry["action"],
                entry["client_id"],
                entry["type"],
                entry["side"],
                entry["reduce_only"],
                entry["status"],
            ]
        )
    return {"closed": dict(sorted(closed.items())), "orders": dict(sorted(per.items()))}


def run_one(
    world: World, latency_ms: float, jitter_ms: float, concurrency: int, rate_limit: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    fork = world.fork()
    fork.stand.venue.latency_s = latency_ms / 1000
    fork.stand.venue.jitter_s = jitter_ms / 1000
    monitor = fork.monitor(concurrency, rate_limit=rate_limit)
    try:
        phases = timed_phases(monitor)
        requests0, log0 = len(fork.engine.requests), len(fork.engine.log)
        load = load_average()
        t0, c0 = time.perf_counter(), time.process_time()
        report = monitor.cycle()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        monitor.close()
        fork.stand.venue.latency_s = fork.stand.venue.jitter_s = 0.0
    new_log = fork.engine.log[log0:]
    closes = len(report.closed)
    row = {
        "latency_ms": latency_ms,
        "jitter_ms": jitter_ms,
        "concurrency": concurrency,
        "ccxt_rate_limit": rate_limit,
        "positions": report.positions,
        "closes": closes,
        "failed": len(report.failed),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "closes_per_s": round(closes / wall, 2),
        "closing_s": round(phases["closes_s"], 3),
        "reads_on_cycle_thread_s": round(phases["reads_s"], 3),
        "requests_by_path": dict(
            sorted(Counter(f"{m} {p}" for m, p in fork.engine.requests[requests0:]).items())
        ),
        "requests": len(fork.engine.requests) - requests0,
        "orders_created": sum(1 for e in new_log if e["action"] == "create"),
        "orders_cancelled": sum(1 for e in new_log if e["action"] == "cancel"),
        "load_average": load,
    }
    return row, outcome(fork, log0, dict(report.closed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--per-user", type=int, default=2, help="positions per user (max 6)")
    parser.add_argument("--latency-ms", type=float, nargs="*", default=[50.0, 150.0])
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="seeded, uniform [0, j)")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument(
        "--rate-limit-ms",
        type=float,
        nargs="*",
        default=[50.0],
        help="latencies to repeat with ccxt's throttle on (at the highest concurrency)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    runs: list[dict[str, Any]] = []
    outcomes: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        venue_world(Path(tmp), args.users, args.per_user) as world,
    ):
        opened_s = time.perf_counter() - t_start
        print(
            f"opened {len(world.positions)} positions for {args.users} users "
            f"in {opened_s:.1f} s (stand-in answering at once)"
        )
        plan = [(lat, c, False) for lat in args.latency_ms for c in args.concurrency]
        top = max(args.concurrency)
        plan += [(lat, top, True) for lat in args.rate_limit_ms]
        for lat, c, limited in plan:
            row, seen = run_one(world, lat, args.jitter_ms, c, limited)
            runs.append(row)
            outcomes[f"{lat}ms c{c} rl{int(limited)}"] = seen
            print(
                f"latency {lat:>5.0f} ms, concurrency {c:>2}, ccxt rate limit "
                f"{'on ' if limited else 'off'}: {row['closes']} closes in {row['wall_s']:.2f} s "
                f"wall ({row['closes_per_s']:.1f}/s; closing {row['closing_s']:.2f} s, reads "
                f"on the cycle thread {row['reads_on_cycle_thread_s']:.2f} s), "
                f"{row['requests']} requests, "
                f"{row['orders_created']} orders created, {row['orders_cancelled']} cancelled"
            )
    first = next(iter(outcomes.values()))
    equal = all(o == first for o in outcomes.values())
    every_closed = all(r["closes"] == r["positions"] and r["failed"] == 0 for r in runs)
    print(
        f"outcomes equal across runs: {equal}; every position closed in every run: "
        f"{every_closed}; total {time.perf_counter() - t_start:.0f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "command": "python bench/close_latency.py " + " ".join(sys.argv[1:]),
                "users": args.users,
                "per_user": args.per_user,
                "positions": args.users * args.per_user,
                "opened_s": round(opened_s, 2),
                "runs": runs,
                "outcomes_equal": equal,
                "every_position_closed": every_closed,
            },
            indent=2,
        )
        + "\n"
    )
    if not (equal and every_closed):
        raise SystemExit("outcomes differ across runs")


if __name__ == "__main__":
    main()
