"""The run summary's trading part: each user's PnL, fees, win rate, drawdown and the
breakers that fired; rejections counted once by their primary reason and explained.

``performance_summary`` is merged into ``summary.json`` by ``pipeline._summarize``;
``summary_tables`` renders it for the terminal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from prometheus_trader.app.settings import Settings
from prometheus_trader.domain import formatting as fmt
from prometheus_trader.domain.metrics import ClosedTrade, Metrics, compute_metrics, equity_curve
from prometheus_trader.domain.tax import rows_from_fills, tax_csv, yearly_summary_csv
from prometheus_trader.ports import MarketStore, StateStore
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.trades import (
    BreakerTrip,
    breaker_trips,
    closed_trades,
    explain,
    load_marks,
    starting_equity,
)

Doc = Mapping[str, Any]


def performance_summary(
    state: StateStore,
    market: MarketStore | None,
    settings: Settings,
    *,
    ledger: Mapping[str, Any] | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """The summary fields computed from a finished run's state (and its candles). With
    the ledger and the run folder, also writes the run's tax CSVs from the exchange's
    fills (``tax.csv``, ``tax-summary.csv``) and names them in the summary."""
    paths: dict[str, str] = {}
    if ledger is not None and run_dir is not None:
        rows = rows_from_fills(ledger["fills"])
        (run_dir / "tax.csv").write_text(tax_csv(rows))
        (run_dir / "tax-summary.csv").write_text(yearly_summary_csv(rows))
        paths = {"tax_csv": str(run_dir / "tax.csv")}
    executions = state.query(Collections.EXECUTIONS)
    trades = closed_trades(state.query(Collections.POSITIONS), state.query(Collections.JOURNAL))
    users = sorted(u["user_id"] for u in state.query(Collections.USERS))
    marks = load_marks(market, settings.exchange, settings.market_type, trades) if market else None
    trips = breaker_trips(executions, state.query(Collections.EVENTS))
    return summarize(users, trades, executions, trips, marks) | paths


def summarize(
    users: Sequence[str],
    trades: Sequence[ClosedTrade],
    executions: Sequence[Doc],
    trips: Sequence[BreakerTrip],
    marks: Mapping[str, Sequence[tuple[int, float]]] | None = None,
) -> dict[str, Any]:
    """Plain inputs → the summary fields (JSON-ready, no float noise)."""
    per_user: dict[str, Any] = {}
    totals = {"net_pnl": 0.0, "fees": 0.0, "funding": 0.0, "trades": 0, "wins": 0}
    for user in users:
        mine = [t for t in trades if t.user_id == user]
        start = starting_equity(executions, user)
        curve = equity_curve(start, mine, marks) if start is not None and mine else None
        m = compute_metrics(mine, curve)
        per_user[user] = _user_row(m, [t for t in trips if t.user_id == user])
        totals["net_pnl"] += m.net_pnl
        totals["fees"] += m.fees
        totals["funding"] += m.funding
        totals["trades"] += m.trades
        totals["wins"] += m.wins
    rejected = [e for e in executions if e.get("outcome") == "rejected"]
    primary = Counter(e["reasons"][0] if e.get("reasons") else "unknown" for e in rejected)
    every = Counter(r for e in rejected for r in e.get("reasons", []))
    cleaned: dict[str, Any] = fmt.clean(
        {
            "per_user": per_user,
            "totals": {
                **totals,
                "win_rate_pct": totals["wins"] / totals["trades"] * 100
                if totals["trades"]
                else None,
            },
            "rejections": len(rejected),
            # each rejection once, by the first rule (in rule order) that refused it
            "rejection_reasons": dict(sorted(primary.items())),
            # every failed rule of every rejection (a rejection may list several)
            "rejection_reasons_all": dict(sorted(every.items())),
            "rejection_reason_explanations": {c: explain(c) for c in sorted(every | primary)},
            "breakers_fired": _breaker_counts(trips),
        }
    )
    return cleaned


def _user_row(m: Metrics, trips: Sequence[BreakerTrip]) -> dict[str, Any]:
    return {
        "trades": m.trades,
        "net_pnl": m.net_pnl,
        "fees": m.fees,
        "funding": m.funding,
        "win_rate_pct": m.win_rate_pct,
        "max_drawdown_pct": m.max_drawdown_pct,
        "total_return_pct": m.total_return_pct,
        "start_equity": m.start_equity,
        "end_equity": m.end_equity,
        "breakers": _breaker_counts(trips),
    }


def _breaker_counts(trips: Sequence[BreakerTrip]) -> dict[str, Any]:
    """code → times it blocked a signal, first and last time, and the first trip's numbers."""
    out: dict[str, Any] = {}
    for t in trips:
        row = out.setdefault(
            t.code,
            {"count": 0, "first": t.at, "last": t.at, "detail": t.detail, "values": t.values},
        )
        row["count"] += 1
        row["last"] = t.at
    return dict(sorted(out.items()))


def summary_tables(summary: Mapping[str, Any], currency: str = "USDT") -> list[Table]:
    """Per-user performance, breakers fired and explained rejections, for the terminal."""
    users = Table(title=f"Per user ({currency})")
    for col in ("user", "trades", "net PnL", "fees", "win rate", "max DD"):
        users.add_column(col, justify="left" if col == "user" else "right", no_wrap=True)
    breakers = Table(title="Breakers fired")
    breakers.add_column("user", no_wrap=True)
    breakers.add_column("breaker", no_wrap=True)
    breakers.add_column("blocked", justify="right")
    breakers.add_column("first trip (UTC)")
    for user, row in (summary.get("per_user") or {}).items():
        users.add_row(
            user,
            str(row["trades"]),
            fmt.num(row["net_pnl"]),
            fmt.num(row["fees"]),
            fmt.pct(row["win_rate_pct"], 1),
            fmt.pct(row["max_drawdown_pct"]),
        )
        for code, b in row["breakers"].items():
            first = b["first"][5:16].replace("T", " ")
            breakers.add_row(
                user, code, str(b["count"]), f"{first}: {b['detail']}" if b["detail"] else first
            )
    reasons = Table(title=f"Rejections: {summary.get('rejections', 0)} (each counted once)")
    for col in ("primary reason", "count", "listed in", "what it means"):
        reasons.add_column(col, justify="right" if col in ("count", "listed in") else "left")
    primary = summary.get("rejection_reasons") or {}
    every = summary.get("rejection_reasons_all") or {}
    explained = summary.get("rejection_reason_explanations") or {}
    for code in sorted(every | primary, key=lambda c: (-primary.get(c, 0), c)):
        reasons.add_row(
            code, str(primary.get(code, 0)), str(every.get(code, 0)), explained.get(code, "")
        )
    return [users, breakers, reasons] if breakers.row_count else [users, reasons]
