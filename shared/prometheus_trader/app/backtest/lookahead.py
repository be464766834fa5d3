"""Look-ahead analysis: does any decision change when the future is cut off?

Like freqtrade's lookahead-analysis: the backtest runs once on the full data, then once
per cut time ``t`` on the data known at ``t`` (bars closed by ``t``, funding, open interest
and trades stamped by ``t``) from the same start up to ``t``. Every decision the full run
made up to ``t`` must be made identically by the cut run: the signals published (symbol,
direction, prices, confidence, analysts), each user's decision on them (outcome, reasons,
plan) and the trades closed before ``t``. Any difference means some input read the future.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_trader.app.backtest.data import MemoryMarketData
from prometheus_trader.app.backtest.engine import BacktestResult, Progress, utc
from prometheus_trader.app.backtest.runner import build_engine, window_for
from prometheus_trader.app.demo import DEMO_USERS
from prometheus_trader.app.logging import configure_logging
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.market import MINUTE_MS
from prometheus_trader.domain.trading import ExitReason
from prometheus_trader.domain.users import User

Decisions = dict[str, dict[str, Any]]


@dataclass
class Difference:
    """One decision that is not the same with and without the future."""

    cut: str
    kind: str  # signal | decision | trade
    key: str
    full: dict[str, Any] | None
    known: dict[str, Any] | None

    def fields(self) -> list[str]:
        """The fields that differ."""
        a, b = self.full or {}, self.known or {}
        return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@dataclass
class LookaheadReport:
    """What the analysis compared and what differed."""

    cuts: list[str] = field(default_factory=list)
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "cuts": self.cuts,
            "decisions_compared": self.compared,
            "differences": [
                {
                    "cut": d.cut,
                    "kind": d.kind,
                    "key": d.key,
                    "fields": d.fields(),
                    "full": d.full,
                    "known_at_cut": d.known,
                }
                for d in self.differences
            ],
        }


def decisions_until(result: BacktestResult, t_ms: int) -> Decisions:
    """Every decision made before ``t_ms``, keyed by kind and id, as plain JSON."""
    out: Decisions = {}
    t = utc(t_ms)
    for s in result.signals:
        if s.created_at < t:
            doc = s.model_dump(mode="json")
            out[f"signal {s.id}"] = doc
    for e in result.executions.values():
        if e.created_at < t:
            out[f"decision {e.id}"] = {
                "outcome": e.outcome.value if e.outcome else None,
                "reasons": [r.value for r in e.reasons],
                "plan": e.decision.plan.model_dump(mode="json")
                if e.decision and e.decision.plan
                else None,
                "error": e.error,
            }
    for p in result.positions.values():
        if (
            p.closed_ms is not None
            and p.closed_ms < t_ms
            and p.exit_reason
            not in (
                ExitReason.END_OF_DATA,
                None,
            )
        ):
            out[f"trade {p.id}"] = p.model_dump(mode="json", exclude={"closed_at"})
    return out


def cut_times(start_ms: int, trade_until_ms: int, cuts: int, every_minutes: int) -> list[int]:
    """``cuts`` ranking times spread evenly over (start, trade_until]."""
    step = every_minutes * MINUTE_MS
    first = start_ms + step
    slots = max(1, (trade_until_ms - first) // step)
    picks = sorted({first + (slots * (i + 1) // cuts) * step for i in range(cuts)})
    return [t for t in picks if t <= trade_until_ms]


def analyse(
    settings: Settings,
    *,
    cuts: int = 8,
    users: tuple[User, ...] = DEMO_USERS,
    progress: Progress | None = None,
    engine_hook: Callable[[Any], None] | None = None,
) -> LookaheadReport:
    """Run the full backtest and one per cut time; report every differing decision.

    ``engine_hook`` may adjust each engine before it runs (tests plant a leak with it).
    """
    # the live use-cases' log lines (as ``run`` and ``backtest`` keep them)
    configure_logging(
        settings.log_level, file=settings.log_file or settings.var_dir / "lookahead.log.jsonl"
    )
    data = MemoryMarketData.from_parquet(settings.data_dir, settings.exchange, settings.market_type)
    start_ms, trade_until_ms, end_ms = window_for(settings, data)
    times = cut_times(start_ms, trade_until_ms, cuts, settings.rank_interval_minutes)
    full_engine = build_engine(settings, data, users, start_ms, trade_until_ms, end_ms)
    if engine_hook is not None:
        engine_hook(full_engine)
    full = full_engine.run()
    report = LookaheadReport(cuts=[utc(t).isoformat() for t in times])
    for n, t in enumerate(times, start=1):
        # the cut run ranks at t too (as the full run does, if t is before its
        # trade_until) and stops after minute t
        until = min(t + 1, trade_until_ms)
        engine = build_engine(settings, data.cut(t), users, start_ms, until, t + MINUTE_MS)
        if engine_hook is not None:
            engine_hook(engine)
        known = decisions_until(engine.run(), t + 1)
        seen = decisions_until(full, t + 1)
        report.compared += len(seen)
        for key in sorted(seen.keys() | known.keys()):
            if _canonical(seen.get(key)) != _canonical(known.get(key)):
                kind, _, ident = key.partition(" ")
                report.differences.append(
                    Difference(utc(t).isoformat(), kind, ident, seen.get(key), known.get(key))
                )
        if progress is not None:
            progress(n, len(times), "lookahead")
    return report


def _canonical(doc: dict[str, Any] | None) -> str:
    return json.dumps(doc, sort_keys=True)


__all__ = ["Difference", "LookaheadReport", "analyse", "cut_times", "decisions_until"]
