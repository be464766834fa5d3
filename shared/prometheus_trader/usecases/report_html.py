"""The daily report's HTML: plotly charts in one self-contained, offline file.

plotly.js is inlined once per file (no CDN, no request of any kind) and every chart has
a fixed div id, so the same report renders byte-identically. Input is the report body
(JSON-ready dict, see ``usecases.report``) plus the price points of the day's trades.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from prometheus_trader.domain import formatting as fmt

_templates = Environment(
    loader=PackageLoader("prometheus_trader.usecases", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)
_CONFIG = {"responsive": True, "displaylogo": False, "displayModeBar": False}
# figures are plotly.js JSON built here (plotly's Python objects validate every property:
# seconds per report); a small template of our own keeps the look plain
_AXIS = {"gridcolor": "#e9ecf3", "zerolinecolor": "#cfd4e0", "linecolor": "#cfd4e0"}
_TEMPLATE = {
    "layout": {
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "xaxis": _AXIS,
        "yaxis": _AXIS,
        "hovermode": "closest",
    }
}
_GREEN, _RED, _BLUE, _GREY, _ORANGE = "#0a7d32", "#b3261e", "#3457d5", "#8a90a0", "#c26a00"
Prices = Mapping[str, Sequence[tuple[int, float]]]  # symbol → [(ts_ms, price)]
Figure = dict[str, Any]  # a plotly.js figure: {"data": [...], "layout": {...}}


def render_report(body: Mapping[str, Any], prices: Prices) -> str:
    """The whole HTML page for one user and day."""
    currency = body.get("currency", "USDT")
    charts: list[dict[str, Any]] = []
    if len(body["equity_curve"]) >= 2:
        charts.append(_chart("chart-equity", "Equity and drawdown", _equity_figure(body)))
    by_symbol: dict[str, list[Mapping[str, Any]]] = {}
    for t in body["trades"]:
        by_symbol.setdefault(t["symbol"], []).append(t)
    for i, (symbol, trades) in enumerate(sorted(by_symbol.items())):
        fig = _trades_figure(symbol, trades, prices.get(symbol, ()))
        charts.append(_chart(f"chart-trades-{i}", f"{symbol}: trades of the day", fig))
    month = body["breakdown"]
    if month["by_exit_reason"]:
        charts.append(
            _chart("chart-exits", "Exits by reason (30 days)", _exits_figure(month, currency))
        )
    if month["analyst_accuracy"]:
        charts.append(
            _chart("chart-analysts", "Analyst accuracy (30 days)", _analysts_figure(month))
        )
    if body["breaker_trips"]:
        charts.append(_chart("chart-breakers", "Breaker trips", _breakers_figure(body)))
    return _templates.get_template("daily_report.html.j2").render(
        report=_view(body, currency),
        charts=charts,
        plotly_js=Markup(get_plotlyjs()),  # plotly's own bundle, trusted
    )


def _chart(div_id: str, title: str, fig: Figure) -> dict[str, Any]:
    """One chart: its div and the ``Plotly.newPlot`` call (figure as plotly.js JSON)."""
    layout = {
        "template": _TEMPLATE,
        "autosize": True,
        "height": 340,
        "margin": {"l": 52, "r": 12, "t": 28, "b": 36},
        "legend": {"orientation": "h", "y": 1.14, "x": 0},
        "font": {"size": 12},
        **fig["layout"],
    }
    args = ", ".join(_js(x) for x in (div_id, fig["data"], layout, _CONFIG))
    html = (
        f'<div id="{div_id}" class="plotly-graph-div" style="height:340px; width:100%;"></div>'
        f"<script>Plotly.newPlot({args});</script>"
    )
    return {"id": div_id, "title": title, "html": Markup(html)}  # our JSON, escaped below


def _js(value: Any) -> str:
    """JSON safe inside <script> (no "</" to end it early)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return text.replace("</", "<\\/")


def _equity_figure(body: Mapping[str, Any]) -> Figure:
    curve = body["equity_curve"]
    xs = [_dt(ts) for ts, _ in curve]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "x": xs,
            "y": [eq for _, eq in curve],
            "name": "equity (marked to market)",
            "mode": "lines",
            "line": {"color": _BLUE, "width": 2},
        },
        {
            "type": "scatter",
            "x": xs,
            "y": [dd for _, dd in body["drawdown"]],
            "name": "drawdown %",
            "mode": "lines",
            "fill": "tozeroy",
            "line": {"color": _RED, "width": 1},
            "yaxis": "y2",
        },
    ]
    trips = body["breaker_trips"]
    if trips:
        data.append(
            {
                "type": "scatter",
                "x": [_dt(t["ts_ms"]) for t in trips],
                "y": [_value_at(curve, t["ts_ms"]) for t in trips],
                "name": "breaker trips",
                "mode": "markers",
                "marker": {"symbol": "x", "size": 10, "color": _ORANGE},
                "text": [f"{t['code']}: {t['detail']}" for t in trips],
                "hoverinfo": "text+x",
            }
        )
    layout = {
        "xaxis": {"type": "date", "anchor": "y2"},
        "yaxis": {"domain": [0.36, 1], "title": {"text": body.get("currency", "USDT")}},
        "yaxis2": {"domain": [0, 0.28], "title": {"text": "drawdown %"}},
    }
    return {"data": data, "layout": layout}


def _trades_figure(
    symbol: str, trades: Sequence[Mapping[str, Any]], prices: Sequence[tuple[int, float]]
) -> Figure:
    data: list[dict[str, Any]] = []
    if prices:
        data.append(
            {
                "type": "scatter",
                "x": [_dt(ts) for ts, _ in prices],
                "y": [p for _, p in prices],
                "name": f"{symbol} price",
                "mode": "lines",
                "line": {"color": _GREY, "width": 1},
            }
        )
    for i, t in enumerate(trades):
        span = [_dt(t["opened_ms"]), _dt(t["closed_ms"])]
        long = t["direction"] == "long"
        label = f"#{i + 1} {t['direction']}"
        data.append(
            {
                "type": "scatter",
                "x": [span[0]],
                "y": [t["entry_price"]],
                "name": f"{label} entry",
                "mode": "markers",
                "marker": {
                    "symbol": "triangle-up" if long else "triangle-down",
                    "size": 12,
                    "color": _BLUE,
                },
                "text": [f"entry {fmt.price(t['entry_price'])}"],
            }
        )
        if t.get("stop_loss"):
            data.append(_level(span, t["stop_loss"], f"{label} stop", _RED, "dash"))
        for k, target in enumerate(t.get("take_profits") or []):
            data.append(_level(span, target, f"{label} target {k + 1}", _GREEN, "dot"))
        data.append(
            {
                "type": "scatter",
                "x": [span[1]],
                "y": [t["exit_price"]],
                "name": f"{label} exit ({t['exit_reason']})",
                "mode": "markers",
                "marker": {"symbol": "x", "size": 12, "color": _GREEN if t["pnl"] > 0 else _RED},
                "text": [f"exit {fmt.price(t['exit_price'])}, {fmt.money(t['pnl'], signed=True)}"],
            }
        )
    return {
        "data": data,
        "layout": {"xaxis": {"type": "date"}, "yaxis": {"title": {"text": "price"}}},
    }


def _level(span: list[str], price: float, name: str, color: str, dash: str) -> dict[str, Any]:
    return {
        "type": "scatter",
        "x": span,
        "y": [price, price],
        "name": name,
        "mode": "lines",
        "line": {"color": color, "dash": dash},
    }


def _exits_figure(month: Mapping[str, Any], currency: str) -> Figure:
    reasons = sorted(month["by_exit_reason"])
    rows = [month["by_exit_reason"][r] for r in reasons]
    bar = {
        "type": "bar",
        "x": reasons,
        "y": [r["trades"] for r in rows],
        "name": "trades",
        "marker": {"color": [_GREEN if r["net_pnl"] > 0 else _RED for r in rows]},
        "text": [fmt.money(r["net_pnl"], currency, signed=True) for r in rows],
        "textposition": "auto",
    }
    return {"data": [bar], "layout": {"yaxis": {"title": {"text": "trades"}}}}


def _analysts_figure(month: Mapping[str, Any]) -> Figure:
    names = sorted(month["analyst_accuracy"])
    acc = [month["analyst_accuracy"][n] for n in names]
    bar = {
        "type": "bar",
        "x": names,
        "y": [a["accuracy_pct"] for a in acc],
        "name": "accuracy %",
        "marker": {"color": _BLUE},
        "text": [f"{a['right']}/{a['right'] + a['wrong']}" for a in acc],
        "textposition": "auto",
    }
    return {"data": [bar], "layout": {"yaxis": {"title": {"text": "% right"}, "range": [0, 100]}}}


def _breakers_figure(body: Mapping[str, Any]) -> Figure:
    trips = body["breaker_trips"]
    points = {
        "type": "scatter",
        "x": [_dt(t["ts_ms"]) for t in trips],
        "y": [t["code"] for t in trips],
        "name": "breaker trips",
        "mode": "markers",
        "marker": {"symbol": "x", "size": 11, "color": _ORANGE},
        "text": [f"{t['symbol']}: {t['detail']}" for t in trips],
        "hoverinfo": "text+x",
    }
    layout = {"showlegend": False, "xaxis": {"type": "date"}, "yaxis": {"automargin": True}}
    return {"data": [points], "layout": layout}


def _view(body: Mapping[str, Any], currency: str) -> dict[str, Any]:
    """The tables of the page, every number formatted."""
    m = body["metrics"]
    today, month = m["today"], m["month"]
    headline = [
        ("Net PnL today", fmt.money(today["net_pnl"], currency, signed=True)),
        ("Return today", fmt.pct(today["total_return_pct"], signed=True)),
        ("Return 7 days", fmt.pct(m["week"]["total_return_pct"], signed=True)),
        ("Return 30 days", fmt.pct(month["total_return_pct"], signed=True)),
        ("Annualised (30 days)", fmt.pct(month["annualised_return_pct"], signed=True)),
        ("Equity", fmt.money(today["end_equity"], currency)),
        ("Trades today", str(today["trades"])),
        ("Win rate today", fmt.pct(today["win_rate_pct"], 1)),
        ("Fees today", fmt.money(today["fees"], currency)),
        ("Funding today", fmt.money(today["funding"], currency)),
        ("Max drawdown today", fmt.pct(today["max_drawdown_pct"])),
        ("Max drawdown 30 days", fmt.pct(month["max_drawdown_pct"])),
        ("Average R today", fmt.ratio(today["avg_r"])),
        ("Expectancy 30 days", fmt.money(month["expectancy"], currency, signed=True)),
        ("Profit factor 30 days", fmt.ratio(month["profit_factor"])),
        ("Sharpe 30 days (daily, ×√365)", fmt.ratio(month["sharpe"])),
        ("Sortino 30 days (daily, ×√365)", fmt.ratio(month["sortino"])),
        ("Exposure today", fmt.pct(today["exposure_pct"], 1)),
        ("Breaker trips today", str(len(body["breaker_trips"]))),
    ]
    trades = [
        {
            "symbol": t["symbol"],
            "direction": t["direction"],
            "opened": _hm(t["opened_ms"]),
            "closed": _hm(t["closed_ms"]),
            "quantity": fmt.qty(t["quantity"]),
            "entry": fmt.price(t["entry_price"]),
            "stop": fmt.price(t["stop_loss"]),
            "targets": ", ".join(fmt.price(x) for x in t["take_profits"]) or fmt.DASH,
            "exit": fmt.price(t["exit_price"]),
            "fees": fmt.money(t["fees"], currency),
            "pnl": fmt.money(t["pnl"], currency, signed=True),
            "positive": t["pnl"] > 0,
            "r": fmt.ratio(t["r_multiple"]),
            "exit_reason": t["exit_reason"],
        }
        for t in body["trades"]
    ]
    groups = []
    for title, key in (
        ("By exit reason (30 days)", "by_exit_reason"),
        ("By strategy (30 days)", "by_strategy"),
        ("By analyst taking part (30 days)", "by_analyst"),
    ):
        groups.append(
            {
                "title": title,
                "rows": [
                    [
                        name,
                        str(g["trades"]),
                        fmt.pct(g["win_rate_pct"], 1),
                        fmt.money(g["net_pnl"], currency, signed=True),
                        fmt.ratio(g["avg_r"]),
                        fmt.ratio(g["profit_factor"]),
                    ]
                    for name, g in body["breakdown"][key].items()
                ],
            }
        )
    breakers = [
        {
            "time": _hm(t["ts_ms"]),
            "code": t["code"],
            "symbol": t["symbol"],
            "detail": t["detail"],
            "numbers": ", ".join(f"{k} {fmt.num(v)}" for k, v in sorted(t["values"].items())),
        }
        for t in body["breaker_trips"]
    ]
    per_code: dict[str, dict[str, Any]] = {}
    for b in breakers:  # oldest first: the last one seen is the latest trip
        row = per_code.setdefault(b["code"], {"code": b["code"], "count": 0, "first": b["time"]})
        row.update(count=row["count"] + 1, last=b["time"], detail=b["detail"], numbers=b["numbers"])
    return {
        "user_id": body["user_id"],
        "day": body["day"],
        "currency": currency,
        "headline": headline,
        "trades": trades,
        "groups": groups,
        "breakers": breakers,
        "breaker_codes": [per_code[c] for c in sorted(per_code)],
        "definitions": DEFINITIONS,
        "recommendations": body["recommendations"],
    }


DEFINITIONS = [
    ("R", "initial risk: |entry − stop| × quantity, what the trade stood to lose at its stop"),
    ("R multiple", "net PnL ÷ R; +1 R won what was risked, −1 R lost it"),
    ("Average R", "mean R multiple of the trades that had a stop"),
    ("Expectancy", "mean net PnL per trade (win rate × average win + loss rate × average loss)"),
    ("Profit factor", "sum of winning trades ÷ |sum of losing trades|"),
    ("Max drawdown", "largest fall of the marked-to-market equity from a running peak"),
    ("Sharpe / Sortino", "mean daily return ÷ its standard / downside deviation, × √365"),
    ("Exposure", "share of the period with at least one position open"),
    ("Net PnL", "price PnL − fees − funding, in quote currency"),
]


def _value_at(curve: Sequence[Sequence[float]], ts: int) -> float:
    value = curve[0][1]
    for t, eq in curve:
        if t > ts:
            break
        value = eq
    return value


def _dt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _hm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")
