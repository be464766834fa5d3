"""Where a batched fan-out's CPU goes: exclusive CPU per executor step and per store call.

Run: ``.venv/bin/python bench/fanout_stages.py [users] [--no-gc]``. One fan-out of
``bench/fanout.py`` (SQLite file, 64 buckets, every decision accepted) with the batched
executor's steps, the state store's calls (per collection) and the venue's batch calls
wrapped in CPU timers; each figure excludes the timed calls nested in it, so the rows add
up to the timed part of the fan-out. ``--no-gc``: the cyclic garbage collector off (its
cost grows with the live heap, i.e. with the number of users whose books are cached).
Writes ``bench/results/fanout_stages.json``.
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
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded import replay_exchange, sqlite_state_store
from prometheus_trader.usecases import execute_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fanout  # the bench next to this file

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(
    os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)
RESULTS = RESULTS_DIR / "fanout_stages.json"

SPENT: dict[str, float] = {}
_STACK: list[float] = []
STEPS = (
    "_decide_all",
    "_observe_all",
    "_edges",
    "_open_positions_of",
    "_record_decisions",
    "_act_all",
    "_enter_all",
    "_store_positions",
    "_publish",
    "_complete_all",
    "_audit",
    "_audit_batch",
)


def _timed(fn: Callable[..., Any], label: Callable[..., str]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        _STACK.append(0.0)
        began = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.process_time() - began
            nested = _STACK.pop()
            name = label(*args)
            SPENT[name] = SPENT.get(name, 0.0) + spent - nested
            if _STACK:
                _STACK[-1] += spent

    return call


def _instrument() -> None:
    batch = execute_batch.ExecuteSignalBatch
    for step in STEPS:
        setattr(batch, step, _timed(getattr(batch, step), lambda *a, s=step: f"step {s}"))
    store = sqlite_state_store.SqliteStateStore
    for method in ("get_many", "create_many", "set_many", "query", "get", "create", "set"):
        setattr(
            store,
            method,
            _timed(
                getattr(store, method),
                lambda self, collection, *a, m=method: f"store {m}({collection})",
            ),
        )
    venue = replay_exchange.ReplayExchange
    for method in ("create_orders", "fetch_balances"):
        setattr(venue, method, _timed(getattr(venue, method), lambda *a, m=method: f"venue {m}"))


def main(argv: list[str]) -> int:
    """Measure one fan-out and print the split (ms CPU per decision)."""
    users = int(next((a for a in argv if a.isdigit()), "1000"))
    if "--no-gc" in argv:
        gc.disable()
    _instrument()
    with tempfile.TemporaryDirectory() as tmp:
        row = fanout.measure(users, Path(tmp))
    decisions = row["decisions"]
    # the bench reads the records back after its timed part
    SPENT.pop("store query(executions)", None)
    print(f"{users} users: {row['cpu_ms_per_decision']:.3f} ms CPU per decision in all")
    for name, cpu in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"  {name:34s} {cpu / decisions * 1000:7.3f}")
    rest = row["cpu_seconds"] - sum(SPENT.values())
    print(f"  {'the rest (dispatch, bus, per-user)':34s} {rest / decisions * 1000:7.3f}")
    result = {
        "benchmark": "one batched fan-out, exclusive CPU per executor step and store call",
        "python": platform.python_version(),
        "users": users,
        "gc": "--no-gc" not in argv,
        "decisions": decisions,
        "cpu_ms_per_decision": row["cpu_ms_per_decision"],
        "cpu_ms_per_decision_by_part": {
            name: round(cpu / decisions * 1000, 4)
            for name, cpu in sorted(SPENT.items(), key=lambda kv: -kv[1])
        },
        "cpu_ms_per_decision_rest": round(rest / decisions * 1000, 4),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
