"""Evaluate exit defaults and breakers on a month of recorded 1m bars, fast.

A full ``prometheus-trader run`` over a month spends most of its time in the collector
(copying bars) and the ranker. The signals do not depend on the exits, so this script
splits the run in two:

1. ``signals``: the real ranker (same wiring as ``app.wiring.wire``) over the store, every
   ``rank_interval_minutes``, written to a JSONL file. Run several windows in parallel
   (``--start``/``--end``) and concatenate. The ranker reads the source store directly
   (no collector copy); its symbol success-rate feedback is empty (no trades here).
2. ``trade``: the real dispatcher, executor (planner, risk gate, breakers), paper
   exchange (``ReplayExchange``), exit monitor and evaluator over the same store, with
   the recorded signals injected at their creation minute. One monitor cycle per minute:
   with bar-derived trades nothing new becomes visible between two minutes, so this
   changes only time-based exits by < 1 min. ``--exits`` picks an exit configuration.

Output: exits by reason, net PnL after fees, profit factor, max drawdown per user, and the
breaker trips, as JSON (and a Markdown table with ``--markdown``).

    .venv/bin/python scripts/eval_exits.py signals --store /tmp/store --out s1.jsonl \\
        --start 2025-05-10T00:00 --end 2025-05-18T00:00
    .venv/bin/python scripts/eval_exits.py trade --store /tmp/store --signals s.jsonl \\
        --exits new --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.console_notifier import ConsoleNotifier
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.demo import DEMO_USERS
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.wiring import replay_exchange, wire
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.market import MINUTE_MS
from prometheus_trader.domain.trading import ExitReason
from prometheus_trader.domain.users import RiskLimits, User
from prometheus_trader.ports import Filter
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Subscriptions, Topics

try:  # the same script also runs on the code before issue 11 (the "before" numbers)
    from prometheus_trader.usecases.scaled import SCALED_ENTRIES
except ImportError:  # pragma: no cover
    SCALED_ENTRIES = "scaled_entries"

# Exit configurations compared. "old" is the behaviour before issue 11 (0.5% trail from
# entry, ladder on unleveraged price moves); "new" is the default ExitConfig().
EXIT_CONFIGS: dict[str, dict[str, Any]] = {
    "old": {
        "trail_arm_r": 0.0,
        "trail_width_r": None,
        "profit_lock_on_leveraged_return": False,
    },
    "new": {},
    "arm1-w1": {"trail_arm_r": 1.0, "trail_width_r": 1.0},
    "arm1-w0.5": {"trail_arm_r": 1.0, "trail_width_r": 0.5},
    "arm1.5-w1": {"trail_arm_r": 1.5, "trail_width_r": 1.0},
    "arm0.5-w0.5": {"trail_arm_r": 0.5, "trail_width_r": 0.5},
    "arm1-w1.5": {"trail_arm_r": 1.0, "trail_width_r": 1.5},
    "no-trail": {"enable_trailing_stop": False},
}
# User settings before issue 11: a 0.5% trailing floor and no consecutive-loss cool-down.
OLD_USER = {"trailing_stop_pct": 0.5, "consecutive_loss_cooldown_minutes": 10**8}


def _ms(text: str) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _settings(store: Path, run_dir: Path) -> Settings:
    return Settings(data_dir=store, var_dir=run_dir)  # type: ignore[call-arg]


class _Run:
    """The pipeline's use-cases over one store, with the store as the market too."""

    def __init__(self, store: Path, run_dir: Path, start_ms: int, exits: ExitConfig) -> None:
        self.settings = _settings(store, run_dir)
        self.clock = SimulatedClock(datetime.fromtimestamp(start_ms / 1000, UTC))
        self.source = DuckDBMarketStore(store, read_only=True)
        self.exchange = replay_exchange(self.settings, self.source, self.clock)
        self.state = SqliteStateStore(run_dir / "state.sqlite")
        self.bus = InMemoryBus(max_delivery_attempts=3)
        self.blobs = LocalBlobStore(run_dir / "blobs")
        self.usecases = wire(
            self.settings,
            clock=self.clock,
            exchange=self.exchange,
            market=self.source,
            state=self.state,
            bus=self.bus,
            blobs=self.blobs,
            notifier=ConsoleNotifier(run_dir / "outbox.jsonl"),
        )
        self.monitor = ExitMonitor(
            self.state, self.exchange, self.bus, self.blobs, self.clock, exits
        )

    def close(self) -> None:
        self.state.close()
        self.source.close()


def cmd_signals(args: argparse.Namespace) -> None:
    """Run the ranker alone and write every published signal (JSONL)."""
    start, end = _ms(args.start), _ms(args.end)
    with tempfile.TemporaryDirectory() as tmp:
        run = _Run(Path(args.store), Path(tmp), start, ExitConfig())
        interval = run.settings.rank_interval_minutes
        t = start - start % (interval * MINUTE_MS)
        began = time.perf_counter()
        while t < end:
            run.clock.set_ms(t)
            run.usecases.housekeeping.run()
            run.usecases.ranker.run()
            t += interval * MINUTE_MS
        docs = sorted(run.state.query(Collections.SIGNALS), key=lambda d: d["created_at"])
        with open(args.out, "w") as f:
            for doc in docs:
                f.write(json.dumps(doc, sort_keys=True) + "\n")
        run.close()
    print(f"{len(docs)} signals in {time.perf_counter() - began:.0f}s -> {args.out}")


def _users(old: bool) -> list[User]:
    if not old:
        return list(DEMO_USERS)
    known = {k: v for k, v in OLD_USER.items() if k in RiskLimits.model_fields}
    return [u.model_copy(update={"limits": u.limits.model_copy(update=known)}) for u in DEMO_USERS]


def cmd_trade(args: argparse.Namespace) -> dict[str, Any]:
    """Replay the recorded signals through executor, exchange, monitor and evaluator."""
    signals = [json.loads(line) for line in Path(args.signals).read_text().splitlines() if line]
    signals.sort(key=lambda d: d["created_at"])
    by_minute: dict[int, list[dict[str, Any]]] = {}
    for doc in signals:
        ms = _ms(doc["created_at"])
        by_minute.setdefault(ms - ms % MINUTE_MS, []).append(doc)
    start = _ms(args.start) if args.start else min(by_minute)
    end = _ms(args.end) if args.end else max(by_minute) + int(args.drain_hours * 3600_000)
    known = ExitConfig.model_fields  # the same script also runs on the code before issue 11
    exits = ExitConfig(**{k: v for k, v in EXIT_CONFIGS[args.exits].items() if k in known})
    with tempfile.TemporaryDirectory() as tmp:
        run = _Run(Path(args.store), Path(tmp), start, exits)
        u = run.usecases
        run.bus.subscribe(Topics.SIGNALS, Subscriptions.DISPATCHER, u.dispatcher.handle)
        run.bus.subscribe(Topics.EXECUTIONS, Subscriptions.EXECUTOR, u.executor.handle)
        run.bus.subscribe(Topics.EVENTS, Subscriptions.EVALUATOR, u.evaluator.handle)
        for user in _users(args.exits == "old" and not args.new_breakers):
            run.state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        began = time.perf_counter()
        minutes = sorted(by_minute)
        t = start - start % MINUTE_MS
        run.monitor.reconcile()
        while t < end:
            run.clock.set_ms(t)
            if not args.end or t < _ms(args.end):
                for doc in by_minute.get(t, []):
                    if run.state.create(Collections.SIGNALS, doc["id"], doc):
                        run.bus.publish(Topics.SIGNALS, doc, dedupe_key=doc["id"], ordering_key="x")
                run.bus.drain_all()
            report = run.monitor.cycle()
            run.bus.drain_all()
            t += MINUTE_MS
            pending = run.state.query(SCALED_ENTRIES, [Filter("status", "==", "pending")])
            if report.positions == 0 and not pending:
                # an empty book: nothing happens until the next signal (gaps between windows)
                upcoming = [m for m in minutes if m >= t]
                t = max(t, min(upcoming)) if upcoming else end
        run.monitor.close_all(ExitReason.END_OF_DATA, {"end_ms": end})
        run.bus.drain_all()
        result = _summarize(run, time.perf_counter() - began, args)
        run.close()
    return result


def _summarize(run: _Run, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    positions = run.state.query(Collections.POSITIONS)
    executions = run.state.query(Collections.EXECUTIONS)
    events = run.state.query(Collections.EVENTS)
    per_user: dict[str, Any] = {}
    start_balance = run.settings.paper_starting_balance
    for user in DEMO_USERS:
        mine = sorted(
            (p for p in positions if p["user_id"] == user.user_id and p.get("closed_ms")),
            key=lambda p: p["closed_ms"],
        )
        pnls = [float(p["realized_pnl"]) for p in mine]
        wins = sum(p for p in pnls if p > 0)
        losses = -sum(p for p in pnls if p <= 0)
        equity, peak, max_dd = start_balance, start_balance, 0.0
        for pnl in pnls:
            equity += pnl
            peak = max(peak, equity)
            max_dd = max(max_dd, (peak - equity) / peak * 100)
        rejections = Counter(
            r for e in executions if e["user_id"] == user.user_id for r in e.get("reasons", [])
        )
        trips = Counter(
            ev["payload"].get("breaker")
            for ev in events
            if ev["type"] == "circuit_breaker"
            and ev.get("user_id") == user.user_id
            and ev["payload"].get("action") == "tripped"
        )
        by_week: dict[str, float] = {}
        by_symbol: dict[str, float] = {}
        for p in mine:
            week = datetime.fromisoformat(p["closed_at"]).strftime("%G-W%V")
            by_week[week] = by_week.get(week, 0.0) + float(p["realized_pnl"])
            by_symbol[p["symbol"]] = by_symbol.get(p["symbol"], 0.0) + float(p["realized_pnl"])
        per_user[user.user_id] = {
            "pnl_pct_by_week": {
                k: round(v / start_balance * 100, 2) for k, v in sorted(by_week.items())
            },
            "symbols_traded": len(by_symbol),
            "symbols_net_positive": sum(1 for v in by_symbol.values() if v > 0),
            "trades": len(pnls),
            "exits": dict(sorted(Counter(p["exit_reason"] for p in mine).items())),
            "net_pnl_pct": round((equity - start_balance) / start_balance * 100, 2),
            "profit_factor": round(wins / losses, 2) if losses > 0 else None,
            "win_rate": round(sum(1 for p in pnls if p > 0) / len(pnls), 2) if pnls else None,
            "max_drawdown_pct": round(max_dd, 2),
            "last_trade": mine[-1]["closed_at"][:10] if mine else None,
            "rejections": dict(sorted(rejections.items())),
            "breaker_trips": dict(sorted(trips.items())),
        }
    return {
        "exits_config": args.exits,
        "signals": args.signals,
        "seconds": round(seconds, 1),
        "users": per_user,
    }


def markdown(result: dict[str, Any]) -> str:
    """One table row per user."""
    rows = [
        "| config | user | trades | exits by reason | net PnL % | PF | win | max DD % | "
        "last trade | breaker trips |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for user, r in result["users"].items():
        exits = ", ".join(f"{k} {v}" for k, v in r["exits"].items())
        trips = ", ".join(f"{k} {v}" for k, v in r["breaker_trips"].items()) or "-"
        rows.append(
            f"| {result['exits_config']} | {user} | {r['trades']} | {exits} | "
            f"{r['net_pnl_pct']} | {r['profit_factor']} | {r['win_rate']} | "
            f"{r['max_drawdown_pct']} | {r['last_trade']} | {trips} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("signals")
    s.add_argument("--store", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--start", required=True)
    s.add_argument("--end", required=True)
    t = sub.add_parser("trade")
    t.add_argument("--store", required=True)
    t.add_argument("--signals", required=True)
    t.add_argument("--exits", choices=sorted(EXIT_CONFIGS), default="new")
    t.add_argument("--new-breakers", action="store_true", help="with --exits old")
    t.add_argument("--start")
    t.add_argument("--end")
    t.add_argument("--drain-hours", type=float, default=6.0)
    t.add_argument("--markdown", action="store_true")
    t.add_argument("--json-out")
    args = parser.parse_args(argv)
    if args.cmd == "signals":
        cmd_signals(args)
        return
    result = cmd_trade(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result) if args.markdown else json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
