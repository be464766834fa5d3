"""Benchmark: the CPU cost of one user's decision in a fan-out, without any I/O.

Run: ``.venv/bin/python bench/decision.py [users] [--profile]`` (default 10000). A fan-out
reads, per user, the user document, the open position documents, the stats document, the
journal documents (Kelly users only) and the balance; this bench builds those documents
for ``users`` users (all three risk profiles, every order style, with and without open
positions, fresh and stored stats, Kelly users, paused and excluding users, shrunk and
rejected plans) and then runs the decision work over all of them in stages, each stage
timed in CPU seconds (time.process_time) for every user at once (best of three passes;
then two more with the garbage collector off, reported apart):

* ``parse``: the user and position documents to models;
* ``plan``: the journal edge (Kelly users) and ``plan_for_user``;
* ``account``: ``usecases.stats.account_fields`` (stats document -> RiskContext fields,
  breaker transitions, the stats document to write);
* ``gate``: the ``RiskContext`` and ``evaluate_risk``;
* ``record``: the ``Execution`` record and its JSON (``model_dump(mode="json")``, as the
  executor stores it).

Prints and writes ``bench/results/decision.json`` with µs per decision per stage, and a
sha256 of every decision's stored JSON (canonical text, as the SQLite store writes it):
a speed change must leave it unchanged. ``--profile`` adds the top cProfile entries.
"""

from __future__ import annotations

import cProfile
import gc
import hashlib
import json
import os
import platform
import pstats
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.market import Instrument, MarketType
from prometheus_trader.domain.planner import plan_for_user
from prometheus_trader.domain.risk import RiskContext, evaluate_risk
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import (
    Execution,
    ExecutionPhase,
    Position,
    RiskDecision,
    TradePlan,
)
from prometheus_trader.domain.users import (
    PROFILE_LIMITS,
    OrderStyle,
    RiskProfile,
    User,
)

try:
    from prometheus_trader.usecases.portfolio import edge_from_journal
    from prometheus_trader.usecases.stats import AccountReading, account_fields
except ImportError:  # the code before the pure API: run it the same way, to compare
    from bench_decision_compat import (  # type: ignore[import-not-found,no-redef]
        AccountReading,
        account_fields,
        edge_from_journal,
    )

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(
    os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)
RESULTS = RESULTS_DIR / "decision.json"
NOW = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SYMBOL = "ETH/USDT:USDT"
PRICE = 2500.0
STAGES = ("parse", "plan", "account", "gate", "record")

INSTRUMENT = Instrument(
    exchange="binance",
    market_type=MarketType.PERP,
    symbol=SYMBOL,
    base="ETH",
    quote="USDT",
    settle="USDT",
    price_step=0.01,
    amount_step=0.001,
    min_amount=0.001,
    min_notional=5.0,
    max_leverage=100.0,
)


def make_signal(
    levels: tuple[tuple[float, float], ...] = ((2.2, 0.5), (3.0, 0.3), (4.0, 0.2)),
) -> OpportunitySignal:
    """The fan-out's one signal (the conservative profile's minimum 2.5 rejects it)."""
    return OpportunitySignal(
        id="bench-signal",
        symbol=SYMBOL,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=Direction.LONG,
        entry_price=PRICE,
        entry_low=PRICE * 0.999,
        entry_high=PRICE * 1.001,
        stop_loss=PRICE * 0.99,
        stop_loss_pct=1.0,
        take_profits=[
            TakeProfitLevel(price=PRICE * (1 + r / 100), pct=r, size_fraction=f) for r, f in levels
        ],
        reward_risk=sum(r * f for r, f in levels),
        confidence=0.8,
        created_at=NOW - timedelta(minutes=1),
        expires_at=NOW + timedelta(minutes=19),
        strategy="consensus",
    )


@dataclass(frozen=True)
class UserDocs:
    """What a batched executor reads for one user."""

    user: dict[str, Any]
    positions: list[dict[str, Any]]
    stats: dict[str, Any] | None
    journal: list[dict[str, Any]]
    equity: float
    free: float


def _position_doc(
    uid: str, k: int, symbol: str, direction: Direction, amount: float
) -> dict[str, Any]:
    entry = PRICE if symbol == SYMBOL else 60000.0
    sign = direction.sign
    return Position(
        id=f"pos-{uid}-{k}",
        user_id=uid,
        signal_id=f"old-{k}",
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=symbol,
        direction=direction,
        amount=amount,
        entry_price=entry,
        entry_fee=amount * entry * 0.0005,
        leverage=5.0,
        stop_loss=entry * (1 - 0.01 * sign),
        take_profits=[TakeProfitLevel(price=entry * (1 + 0.03 * sign), pct=3.0, size_fraction=1.0)],
        trailing_stop_pct=0.5,
        best_price=entry,
        worst_price=entry,
        stop_order_id=f"sl-{uid}-{k}",
        take_profit_order_ids=[f"tp-{uid}-{k}"],
        entry_order_id=f"e-{uid}-{k}",
        opened_at=NOW - timedelta(hours=2),
        opened_ms=int((NOW - timedelta(hours=2)).timestamp() * 1000),
        max_hold_minutes=240,
    ).model_dump(mode="json")


def make_population(n: int) -> list[UserDocs]:
    """``n`` users' documents, deterministic; every kind of decision occurs."""
    profiles = list(RiskProfile)
    styles = list(OrderStyle)
    out: list[UserDocs] = []
    for i in range(n):
        uid = f"u{i:06d}"
        profile = profiles[i % 3]
        overrides: dict[str, Any] = {"order_style": styles[(i // 3) % 3]}
        if i % 7 == 0:
            overrides["kelly_fraction"] = 0.5
            overrides["kelly_min_trades"] = 10
        if i % 11 == 0:
            overrides["scaling"] = "increasing"
        if i % 13 == 0:
            overrides["excluded_symbols"] = ["eth"]
        if i % 17 == 0:
            overrides["paused"] = True
            overrides["paused_reason"] = "holiday"
        if i % 5 == 0 and profile is not RiskProfile.CONSERVATIVE:
            # a tight position cap: the gate shrinks the plan to fit
            overrides["limits"] = PROFILE_LIMITS[profile].model_copy(
                update={"max_position_pct": 40.0}
            )
        if i % 19 == 0:
            overrides["breakers_resume_requested_at"] = NOW - timedelta(minutes=5)
        user = User.with_profile(uid, profile, **overrides)
        equity = 1000.0 + (i % 50) * 137.5
        positions: list[dict[str, Any]] = []
        shape = i % 6
        if shape == 1:
            positions.append(_position_doc(uid, 0, "BTC/USDT:USDT", Direction.LONG, 0.01))
        elif shape == 2:
            positions.append(_position_doc(uid, 0, SYMBOL, Direction.LONG, 0.2))
        elif shape == 3:
            positions.append(_position_doc(uid, 0, "BTC/USDT:USDT", Direction.SHORT, 0.05))
            positions.append(_position_doc(uid, 1, SYMBOL, Direction.SHORT, 0.5))
        used = sum(p["amount"] * p["entry_price"] / 5 for p in positions)
        stats: dict[str, Any] | None = None
        if i % 4 != 0:
            losses = (i % 10) // 2
            stats = {
                "kind": "user",
                "user_id": uid,
                "consecutive_losses": losses,
                "last_loss_at": (NOW - timedelta(minutes=30 + i % 300)).isoformat()
                if losses
                else None,
                "peak_equity": equity * (1.0 + (i % 9) * 0.01),
                "day": "2025-05-21" if i % 8 else "2025-05-20",
                "day_start_equity": equity * (1.0 + (i % 3) * 0.02),
                "realized_pnl_today_pct": -(i % 4) * 0.5,
                "tripped": {"daily_loss": "2025-05-21T07:00:00+00:00"} if i % 23 == 0 else {},
                "resumed_at": None,
                "trades": 10 + i % 30,
                "wins": 5 + i % 10,
                "losses": 5 + i % 20,
                "ladder_day": "2025-05-21" if i % 29 == 0 else "",
                "ladder_step_pct": 3.0 if i % 29 == 0 else 0.0,
            }
        journal = (
            [
                {"user_id": uid, "equity_pnl_pct": ((j * 7 + i) % 11 - 4) * 0.35}
                for j in range(12 + i % 20)
            ]
            if "kelly_fraction" in overrides
            else []
        )
        out.append(
            UserDocs(user.model_dump(mode="json"), positions, stats, journal, equity, equity - used)
        )
    return out


def run(
    signal: OpportunitySignal, population: list[UserDocs]
) -> tuple[dict[str, float], list[dict[str, Any]], list[AccountReading]]:
    """The decision work for every user, stage by stage; CPU seconds per stage."""
    cpu: dict[str, float] = {}
    instrument = INSTRUMENT

    t = time.process_time()
    parsed = [
        (User.model_validate(d.user), [Position.model_validate(p) for p in d.positions])
        for d in population
    ]
    cpu["parse"] = time.process_time() - t

    t = time.process_time()
    plans: list[TradePlan] = []
    for d, (user, _) in zip(population, parsed, strict=True):
        edge = edge_from_journal(d.journal) if user.kelly_fraction is not None else None
        plans.append(plan_for_user(signal, user, instrument, d.equity, edge=edge))
    cpu["plan"] = time.process_time() - t

    t = time.process_time()
    readings = [
        account_fields(d.stats, user, NOW, d.equity)
        for d, (user, _) in zip(population, parsed, strict=True)
    ]
    cpu["account"] = time.process_time() - t

    t = time.process_time()
    decisions: list[RiskDecision] = []
    for d, (user, positions), plan, reading in zip(
        population, parsed, plans, readings, strict=True
    ):
        context = RiskContext(
            now=NOW,
            equity=d.equity,
            free_margin=d.free,
            open_positions=positions,
            **reading.fields,
            data_quality_ok=True,
            data_age_s=12.0,
            max_data_age_s=120.0,
        )
        decisions.append(evaluate_risk(signal, plan, user, context, instrument))
    cpu["gate"] = time.process_time() - t

    t = time.process_time()
    records = [
        Execution(
            id=execution_id(signal.id, user.user_id),
            signal_id=signal.id,
            user_id=user.user_id,
            symbol=signal.symbol,
            reasons=decision.reasons,
            decision=decision,
            phase=ExecutionPhase.DECIDED,
            created_at=NOW,
        ).model_dump(mode="json")
        for (user, _), decision in zip(parsed, decisions, strict=True)
    ]
    cpu["record"] = time.process_time() - t
    return cpu, records, readings


def digest(records: list[dict[str, Any]], readings: list[AccountReading]) -> str:
    """sha256 of the canonical JSON of every stored record and stats document."""
    h = hashlib.sha256()
    for record, reading in zip(records, readings, strict=True):
        h.update(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())
        h.update(json.dumps(reading.new_doc, sort_keys=True, separators=(",", ":")).encode())
        h.update(
            json.dumps(
                [t.model_dump(mode="json") for t in reading.transitions],
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        )
    return h.hexdigest()


def main(argv: list[str]) -> int:
    """Measure; print and write the results."""
    profile = "--profile" in argv
    args = [a for a in argv if not a.startswith("--")]
    users = int(args[0]) if args else 10000
    signal = make_signal()
    population = make_population(users)
    run(signal, population[: min(users, 500)])  # warm-up (imports, pydantic caches)
    best: dict[str, float] = {}
    for _ in range(3):  # the least disturbed of three passes, per stage
        cpu, records, readings = run(signal, population)
        for stage, s in cpu.items():
            best[stage] = min(best.get(stage, s), s)
    # the same without the cyclic garbage collector: its share grows with the live heap
    # (here every user's documents, models and records at once), which the caller
    # controls (batch size, gc.freeze() after a read); the rest is the code's own cost
    nogc: dict[str, float] = {}
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            cpu, records, readings = run(signal, population)
            for stage, s in cpu.items():
                nogc[stage] = min(nogc.get(stage, s), s)
    finally:
        gc.enable()
    us_nogc = {stage: round(nogc[stage] / users * 1e6, 2) for stage in STAGES}
    us = {stage: round(best[stage] / users * 1e6, 2) for stage in STAGES}
    domain_us = round(us["plan"] + us["account"] + us["gate"], 2)
    total_us = round(sum(us.values()), 2)
    outcomes = Counter(
        "approved" + (" shrunk" if r["decision"]["shrunk"] else "")
        if r["decision"]["approved"]
        else "rejected"
        for r in records
    )
    result: dict[str, Any] = {
        "benchmark": "one user's decision in a fan-out, from its documents, no I/O (CPU)",
        "python": platform.python_version(),
        "users": users,
        "us_per_decision_by_stage": us,
        "us_per_decision_domain (plan + account + gate)": domain_us,
        "us_per_decision_total": total_us,
        "decisions_per_cpu_second": round(1e6 / total_us, 1),
        "without_gc": {
            "us_per_decision_by_stage": us_nogc,
            "us_per_decision_domain": round(
                us_nogc["plan"] + us_nogc["account"] + us_nogc["gate"], 2
            ),
            "us_per_decision_total": round(sum(us_nogc.values()), 2),
        },
        "outcomes": dict(sorted(outcomes.items())),
        "transitions": sum(len(r.transitions) for r in readings),
        "stats_docs_to_write": sum(r.new_doc is not None for r in readings),
        "records_sha256": digest(records, readings),
    }
    for stage in STAGES:
        print(f"  {stage:8s} {us[stage]:8.2f} µs")
    print(f"domain (plan+account+gate) {domain_us:.2f} µs; total {total_us:.2f} µs per decision")
    print(f"without the garbage collector: {result['without_gc']}")
    print(f"outcomes {result['outcomes']}; sha256 {result['records_sha256']}")
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        run(signal, population)
        prof.disable()
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(25)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
