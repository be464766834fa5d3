"""The daily HTML report renders in headless Chromium, offline, with every chart drawn.

Chromium comes from Debian's package (`make test` runs scripts/ensure_chromium.sh).
The network is blocked twice over: every host name resolves to nothing and every
connection goes to a proxy on a closed loopback port.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs
from tests.report_fixture import BREAKER_DAY, build_reports

pytestmark = pytest.mark.integration
USERS = ("demo-aggressive", "demo-conservative", "demo-moderate")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reports(tmp_path_factory.mktemp("reports"))


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium missing: run scripts/ensure_chromium.sh (make test does)"
    return found


def _render(html: Path, profile: Path) -> str:
    done = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",  # tests run as root in containers
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",  # nothing listens: any request would fail
            "--window-size=390,2400",  # a phone
            "--virtual-time-budget=20000",
            "--dump-dom",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _segments(dom: str) -> dict[str, str]:
    """Rendered DOM of each chart, by its id."""
    starts = [(m.group(1), m.start()) for m in re.finditer(r'data-chart="([\w-]+)"', dom)]
    ends = [s for _, s in starts[1:]] + [dom.index("</body>")]
    return {name: dom[s:e] for (name, s), e in zip(starts, ends, strict=True)}


def _expected(body: dict[str, Any]) -> dict[str, dict[str, int]]:
    """traces and drawn points each chart must show, from the report's JSON."""
    trips = len(body["breaker_trips"])
    want = {"chart-equity": {"traces": 2 + (1 if trips else 0), "points": trips}}
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    for t in body["trades"]:
        by_symbol.setdefault(t["symbol"], []).append(t)
    for i, (_, trades) in enumerate(sorted(by_symbol.items())):
        legs = sum(2 + (1 if t["stop_loss"] else 0) + len(t["take_profits"]) for t in trades)
        want[f"chart-trades-{i}"] = {"traces": 1 + legs, "points": 2 * len(trades)}
    want["chart-exits"] = {"traces": 1, "points": len(body["breakdown"]["by_exit_reason"])}
    want["chart-analysts"] = {"traces": 1, "points": len(body["breakdown"]["analyst_accuracy"])}
    if trips:
        want["chart-breakers"] = {"traces": 1, "points": trips}
    return want


@pytest.mark.parametrize("user", USERS)
def test_every_chart_draws_its_data_offline(reports: Path, user: str, tmp_path: Path) -> None:
    base = reports / "reports" / user / BREAKER_DAY.isoformat()
    body = json.loads(base.with_suffix(".json").read_text())
    html = base.with_suffix(".html").read_text()
    # self-contained: plotly.js inlined exactly once, and nothing else names a URL
    assert html.count(get_plotlyjs()) == 1
    rest = html.replace(get_plotlyjs(), "")
    assert not re.search(r"https?://|//cdn|\bsrc=|<link\b|@import", rest), "external reference"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html

    dom = _render(base.with_suffix(".html"), tmp_path / "profile")
    charts = _segments(dom)
    want = _expected(body)
    assert set(charts) == set(want)
    for chart, need in want.items():
        seg = charts[chart]
        assert 'class="main-svg"' in seg, f"{chart}: plotly did not draw"
        traces = len(re.findall(r'class="trace (?:scatter|bars)', seg))
        points = len(re.findall(r'class="point"', seg))
        lines = re.findall(r'class="js-line" d="(M[^"]+)"', seg)
        assert traces == need["traces"], (chart, traces, need)
        assert points == need["points"], (chart, points, need)
        if chart == "chart-equity":  # the equity line and the drawdown area are drawn
            assert len(lines) >= 2 and all(len(d) > 20 for d in lines[:2]), lines[:2]


def test_a_day_with_breaker_trips_lists_them_with_their_numbers(reports: Path) -> None:
    base = reports / "reports" / "demo-aggressive" / BREAKER_DAY.isoformat()
    body = json.loads(base.with_suffix(".json").read_text())
    html = base.with_suffix(".html").read_text().replace(get_plotlyjs(), "")
    trips = body["breaker_trips"]
    assert {t["code"] for t in trips} == {"consecutive_loss_breaker", "daily_loss_breaker"}
    assert len(trips) == 20  # the JSON keeps every trip with its numbers
    assert "No breaker tripped" not in html
    assert re.search(r"<td>consecutive_loss_breaker</td><td>10</td>", html)
    assert re.search(r"<td>daily_loss_breaker</td><td>10</td>", html)
    assert "5 consecutive losses of max 4" in html
    assert "realized today -3.73% vs limit -3.00%" in html
    assert "consecutive_losses 5.00, max_consecutive_losses 4.00" in html
    every = html.split("<details>")[1].split("</details>")[0]
    assert every.count("<tr><td>") == 20  # every trip listed with its time
    assert every.count("<tr><td>09:40</td>") == 2


def test_the_report_is_rebuilt_byte_identically(reports: Path, tmp_path: Path) -> None:
    again = build_reports(tmp_path / "again")
    for user in USERS:
        for ext in (".json", ".html", ".csv"):
            name = Path("reports") / user / f"{BREAKER_DAY.isoformat()}{ext}"
            assert (again / name).read_bytes() == (reports / name).read_bytes(), name


@pytest.mark.parametrize("user", USERS)
def test_drawdown_and_return_of_the_marked_curve_match_an_independent_computation(
    reports: Path, user: str
) -> None:
    """On the real run's marked-to-market curve (1m closes while trades are open)."""
    body = json.loads((reports / "reports" / user / f"{BREAKER_DAY}.json").read_text())
    equity = [eq for _, eq in body["equity_curve"]]
    assert len(equity) > 50  # marked every minute a trade was open, not just at closes
    peak, worst = equity[0], 0.0
    for eq in equity:
        peak = max(peak, eq)
        worst = max(worst, (peak - eq) / peak)
    month = body["metrics"]["month"]
    assert month["max_drawdown_pct"] == pytest.approx(worst * 100, rel=1e-6)
    assert month["total_return_pct"] == pytest.approx((equity[-1] / equity[0] - 1) * 100, rel=1e-6)
    realized = sum(t["pnl"] for t in body["trades"])
    assert month["net_pnl"] == pytest.approx(realized, rel=1e-6)  # the run's first day
    assert equity[-1] - equity[0] == pytest.approx(realized, rel=1e-6)  # all closed by then
