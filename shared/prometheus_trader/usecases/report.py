"""Daily reporter: per user, at 00:00 UTC, the day's report as JSON, HTML and tax CSVs."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from prometheus_trader.domain import formatting as fmt
from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.metrics import (
    ClosedTrade,
    compute_metrics,
    drawdown_series,
    equity_curve,
    metrics_report,
)
from prometheus_trader.domain.performance import DAY_MS, EquityCurve
from prometheus_trader.domain.tax import (
    row_from_trade,
    tax_csv,
    yearly_summary_csv,
)
from prometheus_trader.ports import (
    BlobStore,
    Bus,
    Clock,
    Filter,
    MarketStore,
    SeriesKey,
    StateStore,
)
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.report_html import render_report
from prometheus_trader.usecases.trades import (
    breaker_trips,
    load_closed_trades,
    load_marks,
    starting_equity,
)

log = logging.getLogger(__name__)
PRICE_CONTEXT_MS = 30 * 60_000  # price shown before the entry and after the exit


class DailyReporter:
    """Builds each active user's report for one UTC day: JSON (every number), HTML
    (charts, offline), the day's tax CSV and the year-to-date tax CSV with its yearly
    summary. Idempotent: the same day's report is rebuilt byte-identically from the state
    (and candles) and overwrites itself. With a market store the equity curve is marked
    to market and trades are drawn on their price; without one the curve is realized-only.
    """

    def __init__(
        self,
        state: StateStore,
        blobs: BlobStore,
        bus: Bus,
        clock: Clock,
        market: MarketStore | None = None,
        *,
        exchange: str = "binance",
        market_type: MarketType = MarketType.PERP,
        currency: str = "USDT",
    ) -> None:
        self._state = state
        self._blobs = blobs
        self._bus = bus
        self._clock = clock
        self._market = market
        self._exchange = exchange
        self._market_type = market_type
        self._currency = currency

    def run(self, day: date) -> list[str]:
        """Reports for ``day``; returns the blob keys written."""
        keys: list[str] = []
        users = self._state.query(Collections.USERS, [Filter("active", "==", True)])
        for user_id in sorted(u["user_id"] for u in users):
            keys.extend(self._report(user_id, day))
        return keys

    def _report(self, user_id: str, day: date) -> list[str]:
        day_start = _ms(datetime.combine(day, time(), tzinfo=UTC))
        day_end = day_start + DAY_MS
        trades = [t for t in load_closed_trades(self._state, user_id) if t.closed_ms < day_end]
        executions = [
            e
            for e in self._state.query(Collections.EXECUTIONS, [Filter("user_id", "==", user_id)])
            if _iso_ms(e["created_at"]) < day_end
        ]
        events = self._state.query(Collections.EVENTS, [Filter("user_id", "==", user_id)])
        todays = [t for t in trades if t.closed_ms >= day_start]
        recent = [t for t in trades if t.closed_ms >= day_end - 30 * DAY_MS]
        marks = self._marks(recent)
        curve = _curve(starting_equity(executions, user_id), trades, marks, executions, day_end)
        trips = [t for t in breaker_trips(executions, events) if day_start <= t.ts_ms < day_end]
        body = report_body(
            user_id, day, trades, todays, curve, [t.model_dump() for t in trips], self._currency
        )
        prices = self._prices(todays)
        base = f"reports/{user_id}/{day.isoformat()}"
        keys = [f"{base}.json", f"{base}.html", f"{base}.csv"]
        self._blobs.put(
            keys[0], json.dumps(body, indent=2, sort_keys=True).encode(), "application/json"
        )
        self._blobs.put(keys[1], render_report(body, prices).encode(), "text/html")
        self._blobs.put(
            keys[2],
            tax_csv([row_from_trade(t, currency=self._currency) for t in todays]).encode(),
            "text/csv",
        )
        year = [t for t in trades if _year(t.closed_ms) == day.year]
        year_rows = [row_from_trade(t, currency=self._currency) for t in year]
        year_base = f"reports/{user_id}/tax-{day.year}"
        keys += [f"{year_base}.csv", f"{year_base}-summary.csv"]
        self._blobs.put(keys[3], tax_csv(year_rows).encode(), "text/csv")
        self._blobs.put(keys[4], yearly_summary_csv(year_rows).encode(), "text/csv")
        self._state.set(
            Collections.REPORTS,
            f"{user_id}-{day.isoformat()}",
            {"user_id": user_id, "day": day.isoformat(), "keys": keys},
        )
        today = body["metrics"]["today"]
        publish_event(
            self._bus,
            self._state,
            EventType.DAILY_SUMMARY,
            key=f"{user_id}-{day.isoformat()}",
            now=self._clock.now(),
            user_id=user_id,
            payload={
                "day": day.isoformat(),
                "pnl_today_pct": today["total_return_pct"] or 0.0,
                "net_pnl": today["net_pnl"],
                "trades": today["trades"],
                "breaker_trips": len(trips),
                "reports": keys,
            },
        )
        log.info(
            "daily report %s: %d trades, net %s",
            day.isoformat(),
            today["trades"],
            fmt.money(today["net_pnl"], self._currency),
            extra=labels(stage="report", user=user_id),
        )
        return keys

    def _marks(self, trades: list[ClosedTrade]) -> dict[str, list[tuple[int, float]]] | None:
        if self._market is None or not trades:
            return None
        return load_marks(self._market, self._exchange, self._market_type, trades)

    def _prices(self, trades: list[ClosedTrade]) -> dict[str, list[tuple[int, float]]]:
        """1m closes around each of the day's trades, per symbol (for the trade charts)."""
        if self._market is None:
            return {}
        out: dict[str, dict[int, float]] = {}
        for t in trades:
            key = SeriesKey(self._exchange, self._market_type, t.symbol)
            bars = self._market.candles(
                key, "1m", t.opened_ms - PRICE_CONTEXT_MS, t.closed_ms + PRICE_CONTEXT_MS
            )
            points = out.setdefault(t.symbol, {})
            for ts, close in zip(bars.ts_ms.tolist(), bars.close.tolist(), strict=True):
                points[int(ts) + 60_000] = float(close)
        return {s: sorted(p.items()) for s, p in sorted(out.items())}


def _curve(
    start_equity: float | None,
    trades: list[ClosedTrade],
    marks: dict[str, list[tuple[int, float]]] | None,
    executions: Sequence[Mapping[str, Any]],
    end_ms: int,
) -> EquityCurve:
    """Equity from the user's first decision (at most 30 days back) to the day's end."""
    if start_equity is None:
        return []
    first = min(_iso_ms(e["created_at"]) for e in executions)
    return equity_curve(
        start_equity, trades, marks, start_ms=max(first, end_ms - 30 * DAY_MS), end_ms=end_ms - 1
    )


def _window(curve: EquityCurve, start_ms: int) -> EquityCurve | None:
    """The part of ``curve`` from ``start_ms`` on, starting with the value then."""
    before = [p for p in curve if p[0] <= start_ms]
    inside = [p for p in curve if p[0] > start_ms]
    part = ([(start_ms, before[-1][1])] if before else []) + inside
    return part if len(part) >= 2 else None


def report_body(
    user_id: str,
    day: date,
    trades: list[ClosedTrade],
    todays: list[ClosedTrade],
    curve: EquityCurve,
    trips: list[dict[str, Any]],
    currency: str,
) -> dict[str, Any]:
    """The report's JSON body from plain inputs (``render_report`` draws it): metrics of
    the day, 7 and 30 days ending with ``day``, 30-day breakdowns, the breaker trips
    (``BreakerTrip.model_dump()``), the curve and its drawdown, the day's trades.
    Backtests call this with their own trades and curve."""
    end = _ms(datetime.combine(day, time(), tzinfo=UTC)) + DAY_MS
    windows = {"today": 1, "week": 7, "month": 30}
    metrics = {
        name: compute_metrics(
            [t for t in trades if t.closed_ms >= end - n * DAY_MS],
            _window(curve, end - n * DAY_MS),
            period_ms=(max(end - n * DAY_MS, curve[0][0]) if curve else end - n * DAY_MS, end),
        ).model_dump(mode="json")
        for name, n in windows.items()
    }
    month = metrics_report([t for t in trades if t.closed_ms >= end - 30 * DAY_MS])
    body = {
        "user_id": user_id,
        "day": day.isoformat(),
        "currency": currency,
        "metrics": metrics,
        "breakdown": month.model_dump(mode="json", exclude={"overall", "by_user"}),
        "breaker_trips": trips,
        "equity_curve": [list(p) for p in curve],
        "drawdown": [list(p) for p in drawdown_series(curve)],
        "trades": [
            t.model_dump(mode="json")
            | {"fees": t.fees, "r_multiple": t.r_multiple, "risk": t.risk, "gross_pnl": t.gross_pnl}
            for t in todays
        ],
        "recommendations": _recommendations(metrics["today"], todays),
    }
    cleaned: dict[str, Any] = fmt.clean(body)
    return cleaned


def _recommendations(today: Mapping[str, Any], todays: list[ClosedTrade]) -> list[str]:
    tips: list[str] = []
    if not todays:
        return ["No trades closed today: nothing to change."]
    win_rate = today.get("win_rate_pct")
    if win_rate is not None and win_rate < 40:
        tips.append(
            f"Win rate {fmt.pct(win_rate, 0)} is below 40 %: review the signals' "
            "confidence threshold or the excluded symbols."
        )
    bad = [t for t in todays if t.category == "bad_plan"]
    if bad:
        tips.append(f"{len(bad)} trade(s) classified as bad plan: check stop distances.")
    gave_back = [t for t in todays if t.category == "could_be_better"]
    if gave_back:
        tips.append(
            f"{len(gave_back)} winner(s) gave back much of their run-up: consider a tighter "
            "trailing stop or the profit-lock ladder."
        )
    return tips or ["Trading within plan: keep the current settings."]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _iso_ms(iso: str) -> int:
    return _ms(datetime.fromisoformat(iso.replace("Z", "+00:00")))


def _year(ms: int) -> int:
    return datetime.fromtimestamp(ms / 1000, UTC).year


__all__ = ["DailyReporter", "report_body"]
