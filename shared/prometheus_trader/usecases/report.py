"""Daily reporter: per user, at 00:00 UTC, the day's report as JSON, HTML and tax CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.journal import JournalEntry
from prometheus_trader.domain.performance import (
    DailyReportMetrics,
    TradeResult,
    daily_report_metrics,
)
from prometheus_trader.ports import BlobStore, Bus, Clock, Filter, StateStore
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import Collections, labels

log = logging.getLogger(__name__)
_templates = Environment(
    loader=PackageLoader("prometheus_trader.usecases", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


class DailyReporter:
    """Builds each active user's report for one UTC day. Idempotent: the same day's
    report is rebuilt byte-identically from the journal and overwrites itself."""

    def __init__(self, state: StateStore, blobs: BlobStore, bus: Bus, clock: Clock) -> None:
        self._state = state
        self._blobs = blobs
        self._bus = bus
        self._clock = clock

    def run(self, day: date) -> list[str]:
        """Reports for ``day``; returns the blob keys written."""
        keys: list[str] = []
        users = self._state.query(Collections.USERS, [Filter("active", "==", True)])
        for user_id in sorted(u["user_id"] for u in users):
            keys.extend(self._report(user_id, day))
        return keys

    def _report(self, user_id: str, day: date) -> list[str]:
        entries = sorted(
            (
                JournalEntry.model_validate(d)
                for d in self._state.query(Collections.JOURNAL, [Filter("user_id", "==", user_id)])
            ),
            key=lambda e: (e.closed_at, e.position_id),
        )
        day_start = datetime.combine(day, time(), tzinfo=UTC)
        entries = [e for e in entries if e.closed_at < day_start + timedelta(days=1)]
        metrics = daily_report_metrics([TradeResult.from_journal(e) for e in entries], None, day)
        todays = [e for e in entries if e.closed_at >= day_start]
        breakers = [
            e["type"]
            for e in self._state.query(Collections.EVENTS, [Filter("user_id", "==", user_id)])
            if e["type"] == EventType.CIRCUIT_BREAKER.value
            and e["created_at"][:10] == day.isoformat()
        ]
        body = _report_body(user_id, day, metrics, todays, breakers)
        base = f"reports/{user_id}/{day.isoformat()}"
        keys = [f"{base}.json", f"{base}.html", f"{base}.csv"]
        self._blobs.put(
            keys[0], json.dumps(body, indent=2, sort_keys=True).encode(), "application/json"
        )
        self._blobs.put(keys[1], _render_html(body).encode(), "text/html")
        self._blobs.put(keys[2], _tax_csv(todays).encode(), "text/csv")
        self._state.set(
            Collections.REPORTS,
            f"{user_id}-{day.isoformat()}",
            {"user_id": user_id, "day": day.isoformat(), "keys": keys},
        )
        publish_event(
            self._bus,
            self._state,
            EventType.DAILY_SUMMARY,
            key=f"{user_id}-{day.isoformat()}",
            now=self._clock.now(),
            user_id=user_id,
            payload={
                "day": day.isoformat(),
                "pnl_today_pct": metrics.pnl_today_pct,
                "trades": metrics.trades_today,
                "reports": keys,
            },
        )
        log.info(
            "daily report %s: %d trades, %.3f%%",
            day.isoformat(),
            metrics.trades_today,
            metrics.pnl_today_pct,
            extra=labels(stage="report", user=user_id),
        )
        return keys


def _report_body(
    user_id: str,
    day: date,
    metrics: DailyReportMetrics,
    todays: list[JournalEntry],
    breakers: list[str],
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "day": day.isoformat(),
        "metrics": metrics.model_dump(mode="json"),
        "circuit_breakers": breakers,
        "trades": [e.model_dump(mode="json") for e in todays],
        "recommendations": _recommendations(metrics, todays),
    }


def _recommendations(metrics: DailyReportMetrics, todays: list[JournalEntry]) -> list[str]:
    tips: list[str] = []
    today = metrics.today
    if not todays:
        return ["No trades closed today: nothing to change."]
    if today.win_rate_pct is not None and today.win_rate_pct < 40:
        tips.append(
            f"Win rate {today.win_rate_pct:.0f}% is below 40%: review the signals' "
            "confidence threshold or the excluded symbols."
        )
    bad = [e for e in todays if e.category.value == "bad_plan"]
    if bad:
        tips.append(f"{len(bad)} trade(s) classified as bad plan: check stop distances.")
    gave_back = [e for e in todays if e.category.value == "could_be_better"]
    if gave_back:
        tips.append(
            f"{len(gave_back)} winner(s) gave back much of their run-up: consider a tighter "
            "trailing stop or the profit-lock ladder."
        )
    return tips or ["Trading within plan: keep the current settings."]


def _render_html(body: dict[str, Any]) -> str:
    metrics = body["metrics"]
    today = metrics["today"]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}%"

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    headline = [
        ("PnL today", pct(metrics["pnl_today_pct"])),
        ("PnL 7 days", pct(metrics["pnl_week_pct"])),
        ("PnL 30 days", pct(metrics["pnl_month_pct"])),
        ("Trades today", str(metrics["trades_today"])),
        ("Win rate", pct(today["win_rate_pct"])),
        ("Average R:R", num(today["avg_reward_risk"])),
        ("Max drawdown", pct(today["max_drawdown_pct"])),
        ("Sharpe (per trade)", num(today["sharpe"])),
        ("Best trade", f"{today['best_trade_symbol'] or '-'} {pct(today['best_trade_pct'])}"),
        ("Worst trade", f"{today['worst_trade_symbol'] or '-'} {pct(today['worst_trade_pct'])}"),
        ("Circuit breakers", ", ".join(body["circuit_breakers"]) or "none"),
    ]
    equity = [0.0]
    for trade in body["trades"]:
        equity.append(equity[-1] + trade["equity_pnl_pct"])
    template = _templates.get_template("daily_report.html.j2")
    return template.render(
        report={
            "user_id": body["user_id"],
            "day": body["day"],
            "headline": headline,
            "curve_points": _polyline(equity) if len(equity) > 1 else "",
            "trades": [
                {
                    "symbol": t["symbol"],
                    "direction": t["direction"],
                    "opened_at": t["opened_at"][11:19],
                    "closed_at": t["closed_at"][11:19],
                    "entry_price": t["entry_price"],
                    "exit_price": t["exit_price"],
                    "pnl_pct": t["pnl_pct"],
                    "exit_reason": t["exit_reason"],
                    "category": t["category"],
                }
                for t in body["trades"]
            ],
            "recommendations": body["recommendations"],
        }
    )


def _polyline(values: list[float], width: int = 640, height: int = 200) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 10 - (v - low) / span * (height - 20):.1f}"
        for i, v in enumerate(values)
    )


def _tax_csv(entries: list[JournalEntry]) -> str:
    """Realized PnL per closed trade, one row each (the tax export)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "closed_at",
            "opened_at",
            "symbol",
            "direction",
            "entry_price",
            "exit_price",
            "pnl_pct",
            "equity_pnl_pct",
            "position_id",
        ]
    )
    for e in entries:
        writer.writerow(
            [
                e.closed_at.isoformat(),
                e.opened_at.isoformat(),
                e.symbol,
                e.direction.value,
                e.entry_price,
                e.exit_price,
                f"{e.pnl_pct:.6f}",
                f"{e.equity_pnl_pct:.6f}",
                e.position_id,
            ]
        )
    return buffer.getvalue()
