"""Benchmark: `prometheus-trader backtest` on a market store, beside reference engines.

Run: ``.venv/bin/python bench/backtest.py --store /tmp/month`` where the store was made by
``prometheus-trader data import ../shared/data/binance-usdm-2025-05 --store /tmp/month``
(the 16-perp month, 708,180 1m candles in the common range). Each engine runs in its own
process (so each peak RSS is its own), one after the other in the same invocation:

* ``prometheus``: the backtest (the live domain code, the pipeline's semantics) with the
  three demo users over the whole store window;
* ``plain-loop``: a plain Python loop over the same candles running an SMA(20/50)
  crossover with market fills: the floor any event-driven engine pays per candle;
* ``jesse``: the same SMA crossover in jesse's research ``backtest()`` when jesse is
  importable by ``--jesse-python`` (a separate venv); otherwise the reason is recorded.

Prints the side-by-side table (candles, CPU and wall seconds of the loop, candles per
CPU-second and per wall-second, peak RSS, signals / decisions / trades, the backtest's
ledger sha256) with the load averages before and after each engine, and writes it all to
``bench/results/backtest.json``. Candles/s = 1m candles inside the replayed window / seconds
of the loop (data loading is reported separately). The machine may be shared: CPU seconds
compare across engines, wall seconds follow the load. jesse gets ``--jesse-days`` of each
series (it does not finish the month in ``JESSE_TIMEOUT_S``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(
    os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)
RESULTS = RESULTS_DIR / "backtest.json"
FAST, SLOW = 20, 50
JESSE_TIMEOUT_S = 900  # wall seconds; jesse on the whole month takes far longer


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_prometheus(store: Path) -> dict[str, Any]:
    """The backtest over the store's window with the demo users."""
    from prometheus_trader.app.backtest.data import MemoryMarketData
    from prometheus_trader.app.backtest.runner import build_engine, build_ledger, window_for
    from prometheus_trader.app.demo import DEMO_USERS
    from prometheus_trader.app.ledger import canonical_json
    from prometheus_trader.app.settings import Settings
    from prometheus_trader.domain.market import MINUTE_MS

    settings = Settings(data_dir=store)
    began = time.perf_counter()
    data = MemoryMarketData.from_parquet(store, settings.exchange, settings.market_type)
    start, until, end = window_for(settings, data)
    loaded = time.perf_counter()
    first = start - int(settings.warmup_hours * 60) * MINUTE_MS
    candles = sum(int(((s.ts_ms >= first) & (s.ts_ms < end)).sum()) for s in data.series.values())
    engine = build_engine(settings, data, DEMO_USERS, start, until, end)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = engine.run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ledger = hashlib.sha256(canonical_json(build_ledger(engine, DEMO_USERS))).hexdigest()
    return {
        "candles": candles,
        "load_seconds": round(loaded - began, 2),
        "loop_wall_seconds": round(wall, 2),
        "loop_cpu_seconds": round(cpu, 2),
        "candles_per_second": round(candles / wall),
        "candles_per_cpu_second": round(candles / cpu),
        "peak_rss_mib": round(_rss_mib(), 1),
        "signals": len(result.signals),
        "decisions": len(result.executions),
        "trades": len(result.journal),
        "rankings": result.rankings,
        "monitor_cycles": result.monitor_cycles,
        "ledger_sha256": ledger,
    }


def _arrays(store: Path) -> dict[str, Any]:
    """The candles every engine replays: the backtest's window, as numpy arrays."""
    from prometheus_trader.app.backtest.data import MemoryMarketData
    from prometheus_trader.app.backtest.runner import window_for
    from prometheus_trader.app.settings import Settings

    settings = Settings(data_dir=store)
    data = MemoryMarketData.from_parquet(store, settings.exchange, settings.market_type)
    start, _, end = window_for(settings, data)
    first = start - int(settings.warmup_hours * 3600_000)
    loaded = data.candles_many(data.series_keys(), "1m", first, end)
    return {k.symbol: s for k, s in loaded.items() if len(s)}


def run_plain_loop(store: Path) -> dict[str, Any]:
    """SMA(20/50) crossover, one Python iteration per candle, market fills at the close."""
    series = _arrays(store)
    closes = {sym: s.close.tolist() for sym, s in series.items()}
    candles = sum(len(c) for c in closes.values())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trades = 0
    pnl = 0.0
    for prices in closes.values():
        fast = slow = 0.0
        position = 0
        entry = 0.0
        for i, price in enumerate(prices):
            fast += price
            slow += price
            if i >= FAST:
                fast -= prices[i - FAST]
            if i >= SLOW:
                slow -= prices[i - SLOW]
            if i < SLOW:
                continue
            want = 1 if fast / FAST > slow / SLOW else -1
            if want != position:
                if position:
                    pnl += position * (price - entry) / entry - 0.001
                    trades += 1
                position, entry = want, price
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "candles": candles,
        "loop_wall_seconds": round(wall, 3),
        "loop_cpu_seconds": round(cpu, 3),
        "candles_per_second": round(candles / wall),
        "candles_per_cpu_second": round(candles / cpu),
        "peak_rss_mib": round(_rss_mib(), 1),
        "trades": trades,
    }


def run_jesse(store: Path, jesse_python: str, days: float | None = None) -> dict[str, Any]:
    """The SMA crossover in jesse's research backtest, in jesse's own interpreter (on the
    first ``days`` of each series when given: jesse is slow enough to need it on a loaded
    machine; candles/s is what compares)."""
    series = _arrays(store)
    if days is not None:
        series = {sym: s.rows(0, int(days * 1440)) for sym, s in series.items()}
    arrays = Path("/tmp/bench-jesse-candles.npz")
    import numpy as np

    np.savez(
        arrays,
        **{
            sym.split("/")[0]: np.column_stack(
                [s.ts_ms, s.open, s.close, s.high, s.low, s.volume]
            ).astype(np.float64)
            for sym, s in series.items()
        },
    )
    try:
        proc = subprocess.run(
            [jesse_python, "-c", _JESSE_SCRIPT, str(arrays)],
            capture_output=True,
            text=True,
            check=False,
            timeout=JESSE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"not done in {JESSE_TIMEOUT_S} s of wall time: use --jesse-days"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


_JESSE_SCRIPT = """
import json, resource, sys, time
import numpy as np
import jesse.helpers as jh
from jesse.research import backtest
from jesse.strategies import Strategy
import jesse.indicators as ta

class SmaCross(Strategy):
    def should_long(self): return ta.sma(self.candles, 20) > ta.sma(self.candles, 50)
    def should_short(self): return ta.sma(self.candles, 20) < ta.sma(self.candles, 50)
    def should_cancel_entry(self): return False
    def go_long(self): self.buy = 0.001, self.price
    def go_short(self): self.sell = 0.001, self.price
    def update_position(self):
        if self.is_long and self.should_short(): self.liquidate()
        if self.is_short and self.should_long(): self.liquidate()

data = np.load(sys.argv[1])
config = {"starting_balance": 1_000_000, "fee": 0.0005, "type": "futures",
          "futures_leverage": 1, "futures_leverage_mode": "cross",
          "exchange": "Binance Perpetual Futures", "warm_up_candles": 0}
routes, candles, n = [], {}, 0
for base in data.files:
    sym = f"{base}-USDT"
    arr = data[base]
    n += len(arr)
    candles[jh.key("Binance Perpetual Futures", sym)] = {
        "exchange": "Binance Perpetual Futures", "symbol": sym, "candles": arr}
    routes.append({"exchange": "Binance Perpetual Futures", "strategy": SmaCross,
                   "symbol": sym, "timeframe": "1m"})
t0, c0 = time.perf_counter(), time.process_time()
result = backtest(config, routes, [], candles)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"candles": n, "loop_wall_seconds": round(wall, 2),
                  "loop_cpu_seconds": round(cpu, 2), "candles_per_second": round(n / wall),
                  "candles_per_cpu_second": round(n / cpu), "peak_rss_mib": round(rss, 1)}))
"""


def _child(engine: str, store: Path, jesse_python: str, jesse_days: float | None) -> dict[str, Any]:
    extra = [] if jesse_days is None else ["--jesse-days", str(jesse_days)]
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--store",
            str(store),
            "--one",
            engine,
            "--jesse-python",
            jesse_python,
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> int:
    """Run every engine (or ``--one``) and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--one", choices=["prometheus", "plain-loop", "jesse"])
    parser.add_argument("--jesse-python", default="/tmp/jesse-venv/bin/python")
    parser.add_argument("--engines", default="plain-loop,jesse,prometheus")
    parser.add_argument("--jesse-days", type=float, help="replay only the first days in jesse")
    args = parser.parse_args()
    if args.one:
        runner = {
            "prometheus": lambda: run_prometheus(args.store),
            "plain-loop": lambda: run_plain_loop(args.store),
            "jesse": lambda: run_jesse(args.store, args.jesse_python, args.jesse_days),
        }[args.one]
        print(json.dumps(runner()))
        return 0
    engines = {}
    load = {"before": _load_average()}
    for name in args.engines.split(","):
        engines[name] = _child(name, args.store, args.jesse_python, args.jesse_days)
        load[f"after_{name}"] = _load_average()
        print(name, json.dumps(engines[name]), flush=True)
    result = {
        "benchmark": "backtest on a 1m market store, engines measured in one invocation",
        "store": str(args.store),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": load,
        "jesse_days": args.jesse_days,
        "targets": {"candles_per_second": 400_000, "peak_rss_mib": 400},
        "engines": engines,
    }
    print(table(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


def _load_average() -> list[float]:
    """The 1/5/15-minute load averages (the machine is shared: CPU seconds compare,
    wall seconds depend on the load)."""
    return [round(x, 2) for x in os.getloadavg()]


_COLUMNS = (
    ("candles", "candles", "{:,}"),
    ("CPU s", "loop_cpu_seconds", "{:,.2f}"),
    ("wall s", "loop_wall_seconds", "{:,.2f}"),
    ("candles/CPU-s", "candles_per_cpu_second", "{:,}"),
    ("candles/wall-s", "candles_per_second", "{:,}"),
    ("peak RSS MiB", "peak_rss_mib", "{:,.1f}"),
    ("signals", "signals", "{:,}"),
    ("decisions", "decisions", "{:,}"),
    ("trades", "trades", "{:,}"),
    ("ledger sha256", "ledger_sha256", "{:.8}…"),
)


def table(result: dict[str, Any]) -> str:
    """The side-by-side table (markdown): one row per engine, ``–`` where an engine has no
    such figure; the load averages under it."""
    header = "| engine | " + " | ".join(name for name, _, _ in _COLUMNS) + " |"
    lines = [header, "|" + " --- |" * (len(_COLUMNS) + 1)]
    for engine, row in result["engines"].items():
        if "error" in row:
            lines.append(f"| {engine} | error: {row['error']} |")
            continue
        cells = [fmt.format(row[key]) if key in row else "–" for _, key, fmt in _COLUMNS]
        lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    loads = ", ".join(f"{k} {v[0]}/{v[1]}/{v[2]}" for k, v in result["load_average"].items())
    lines.append(f"load average (1/5/15 min): {loads}; {result['cpus']} CPUs")
    if result.get("jesse_days") is not None:
        lines.append(f"jesse: the first {result['jesse_days']:g} day(s) of each series")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
