"""Benchmark: the backtest's private state store, SQLite ``:memory:`` against ``MemoryStateStore``.

Run: ``.venv/bin/python bench/backtest_state_store.py [--rounds 2] [backtest options]``,
e.g. ``--data /tmp/month --end 2025-05-14T00:18Z`` (default: the bundled sample). Two
figures, both CPU seconds:

* end to end: ``prometheus-trader backtest`` in a child process per store and round
  (alternating, so a changing machine load hits both alike), user + system CPU and peak
  RSS of the child, and whether both wrote the same ``ledger.json`` bytes;
* the store alone: the first SQLite run records every state-store call (documents,
  queries, transactions with their reads and writes, watches and polls); the trace is then
  replayed against a fresh store of each kind in this process, alternating.

Writes ``bench/results/backtest_state_store.json``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded import sqlite_change_feed
from prometheus_trader.adapters.embedded.local_transaction import LocalTransaction
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import AlreadyExists, StateStore, StateTransaction

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(
    os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)
RESULTS = RESULTS_DIR / "backtest_state_store.json"
STORES: dict[str, Callable[[], StateStore]] = {
    "sqlite-memory": lambda: SqliteStateStore(":memory:"),
    "memory": MemoryStateStore,
}
Op = tuple[Any, ...]


# ----------------------------------------------------------------- child: one backtest
def _record(trace_path: str) -> None:
    """Wrap the SQLite store's calls so that the run writes its trace at exit."""
    store_cls, tx_cls = SqliteStateStore, LocalTransaction
    watch_cls = sqlite_change_feed.SqliteWatch
    trace: list[Op] = []
    frames: list[list[Op]] = [trace]
    depth = [0]

    def wrap(cls: Any, name: str, inner: bool) -> None:
        original = getattr(cls, name)

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if inner or depth[0] == 0:  # a store call made by another store call: not twice
                frames[-1].append((("tx." if inner else "") + name, copy.deepcopy(args), kwargs))
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(cls, name, call)

    for name in ("get", "create", "set", "update", "delete", "query"):
        wrap(store_cls, name, inner=False)
    for name in ("get", "create", "set", "update"):
        wrap(tx_cls, name, inner=True)
    transaction = store_cls.transaction

    def recorded_transaction(self: Any, fn: Any) -> Any:
        ops: list[Op] = []
        frames.append(ops)
        outer, depth[0] = depth[0], 0  # store calls inside fn belong to the transaction
        ok = False
        try:
            result = transaction(self, fn)
            ok = True
            return result
        finally:
            depth[0] = outer
            frames.pop()
            frames[-1].append(("transaction", ops, ok))

    store_cls.transaction = recorded_transaction
    watch, poll, close = store_cls.watch, watch_cls.poll, watch_cls.close

    def recorded_watch(self: Any, collection: str, filters: Any = ()) -> Any:
        handle = watch(self, collection, filters)
        handle.bench_id = next(numbers)  # (object ids are reused once a watch is freed)
        trace.append(("watch", handle.bench_id, collection, list(filters)))
        return handle

    def recorded_poll(self: Any) -> Any:
        trace.append(("poll", self.bench_id))
        return poll(self)

    def recorded_close(self: Any) -> None:
        trace.append(("close", self.bench_id))
        close(self)

    numbers = itertools.count()
    store_cls.watch = recorded_watch
    watch_cls.poll, watch_cls.close = recorded_poll, recorded_close

    import atexit

    atexit.register(lambda: Path(trace_path).write_bytes(pickle.dumps(trace)))


def child(store: str, trace_path: str, args: list[str]) -> None:
    """``prometheus-trader backtest args`` with the private store of kind ``store``."""
    from prometheus_trader.app.backtest import runner
    from prometheus_trader.cli import app

    runner.MemoryStateStore = STORES[store]  # type: ignore[assignment,misc]
    if trace_path:
        _record(trace_path)
    sys.argv = ["prometheus-trader", "backtest", *args]
    app()


# ----------------------------------------------------------------- replay
class _Abort(Exception):
    pass


def _calls(target: Any, store: Any, ops: list[Op]) -> None:
    for name, args, kwargs in ops:
        on = target if name.startswith("tx.") else store
        with contextlib.suppress(AlreadyExists, KeyError):
            getattr(on, name.removeprefix("tx."))(*args, **kwargs)


def replay(trace: list[Op], store: Any) -> None:
    """Make ``store`` answer the recorded calls (results are not compared here: the
    contract and unit tests do that)."""
    watches: dict[int, Any] = {}
    for op in trace:
        kind = op[0]
        if kind == "transaction":
            ops, ok = op[1], op[2]

            def fn(tx: StateTransaction, ops: list[Op] = ops, ok: bool = ok) -> None:
                _calls(tx, store, ops)
                if not ok:
                    raise _Abort

            with contextlib.suppress(_Abort, AlreadyExists, KeyError):
                store.transaction(fn)
        elif kind == "watch":
            watches[op[1]] = store.watch(op[2], op[3])
        elif kind == "poll":
            watches[op[1]].poll()
        elif kind == "close":
            watches[op[1]].close()
        else:
            _calls(store, store, [op])


# ----------------------------------------------------------------- parent
def _run(store: str, out: Path, trace: Path | None, args: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", store, str(trace or ""), "--out", str(out)]
    started = time.monotonic()
    proc = subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"backtest on {store} failed")
    ledger = (out / "ledger.json").read_bytes()
    return {
        "store": store,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "user_s": round(usage.ru_utime, 2),
        "wall_s": round(time.monotonic() - started, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "ledger_sha256": hashlib.sha256(ledger).hexdigest(),
        "load_average": os.getloadavg()[0],
    }


def main(argv: list[str]) -> None:
    rounds = 2
    if argv[:1] == ["--rounds"]:
        rounds, argv = int(argv[1]), argv[2:]
    runs: list[dict[str, Any]] = []
    replays: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        trace_path = Path(tmp) / "trace.pkl"
        for n in range(rounds):
            for store in STORES:
                record = trace_path if n == 0 and store == "sqlite-memory" else None
                runs.append(_run(store, Path(tmp) / f"{store}-{n}", record, argv))
                print(json.dumps(runs[-1]), flush=True)
        trace: list[Op] = pickle.loads(trace_path.read_bytes())
        for n in range(rounds + 1):
            for store, make in STORES.items():
                instance = make()
                started = time.process_time()
                replay(trace, instance)
                replays.append({"store": store, "round": n, "cpu_s": time.process_time() - started})
                print(json.dumps(replays[-1]), flush=True)
    kinds = {op[0] for op in trace}
    result = {
        "args": argv,
        "python": platform.python_version(),
        "runs": runs,
        "same_ledger": len({r["ledger_sha256"] for r in runs}) == 1,
        "trace_calls": {k: sum(1 for op in trace if op[0] == k) for k in sorted(kinds)},
        "replays": replays,
        "replay_cpu_s_best": {
            s: round(min(r["cpu_s"] for r in replays if r["store"] == s), 3) for s in STORES
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("same_ledger", "replay_cpu_s_best")}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main(sys.argv[1:])
