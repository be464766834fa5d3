"""The run summary's trading part on a real run's state (tests/fixtures/run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from prometheus_trader.app.summary import summarize, summary_tables
from prometheus_trader.usecases.trades import REASON_EXPLANATIONS, breaker_trips, closed_trades

pytestmark = pytest.mark.unit
RUN = Path(__file__).parents[1] / "fixtures" / "run"


def test_rejections_counted_once_and_explained_with_per_user_pnl() -> None:
    state = json.loads((RUN / "state.json").read_text())
    users = sorted(u["user_id"] for u in state["users"])
    trades = closed_trades(state["positions"], state["journal"])
    trips = breaker_trips(state["executions"], state["events"])
    s = summarize(users, trades, state["executions"], trips)
    rejected = [e for e in state["executions"] if e["outcome"] == "rejected"]
    assert s["rejections"] == len(rejected) == 43
    assert sum(s["rejection_reasons"].values()) == 43  # once each
    assert sum(s["rejection_reasons_all"].values()) == sum(len(e["reasons"]) for e in rejected)
    assert set(s["rejection_reason_explanations"]) == set(s["rejection_reasons_all"])
    assert all(v == REASON_EXPLANATIONS[k] for k, v in s["rejection_reason_explanations"].items())
    for user in users:
        row = s["per_user"][user]
        positions = [p for p in state["positions"] if p["user_id"] == user]
        assert row["trades"] == len(positions)
        assert row["net_pnl"] == pytest.approx(sum(p["realized_pnl"] for p in positions))
        assert row["fees"] == pytest.approx(sum(p["entry_fee"] + p["exit_fee"] for p in positions))
        assert row["max_drawdown_pct"] is not None and row["max_drawdown_pct"] >= 0
    assert s["totals"]["net_pnl"] == pytest.approx(
        sum(p["realized_pnl"] for p in state["positions"])
    )
    fired = s["breakers_fired"]
    assert sum(b["count"] for b in fired.values()) == 49
    assert fired["consecutive_loss_breaker"]["values"]["max_consecutive_losses"] > 0
    console = Console(record=True, width=200)
    for table in summary_tables(s):
        console.print(table)
    text = console.export_text()
    assert "consecutive_loss_breaker" in text and "demo-conservative" in text
    assert REASON_EXPLANATIONS["consecutive_loss_breaker"] in text
    assert "Per user (USDT)" in text and "0000000" not in text  # formatted, no float noise
    assert "-368.18" in text  # demo-aggressive's net PnL to the cent


def test_a_breaker_without_detail_shows_its_first_trip_time_alone() -> None:
    trip = {"count": 2, "first": "2025-05-21T08:15:00+00:00", "last": "x", "detail": ""}
    summary = {
        "per_user": {
            "u1": {
                "trades": 0,
                "net_pnl": 0.0,
                "fees": 0.0,
                "win_rate_pct": None,
                "max_drawdown_pct": None,
                "breakers": {"kill_switch": trip, "daily_loss_breaker": {**trip, "detail": "-5 %"}},
            }
        }
    }
    console = Console(record=True, width=200)
    for table in summary_tables(summary):
        console.print(table)
    lines = console.export_text().splitlines()
    (kill,) = [line for line in lines if "kill_switch" in line]
    assert kill.rstrip().rstrip("│").rstrip().endswith("05-21 08:15")
    (daily,) = [line for line in lines if "daily_loss_breaker" in line]
    assert "05-21 08:15: -5 %" in daily
