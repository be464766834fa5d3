"""Contract suite for the ``Notifier`` port."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prometheus_trader.adapters.embedded.console_notifier import ConsoleNotifier
from prometheus_trader.ports import Notification, Notifier

pytestmark = pytest.mark.contract


@dataclass
class NotifierHarness:
    """A notifier plus what actually reached the channel, as JSON-ready dicts."""

    notifier: Notifier
    delivered: Callable[[], list[dict[str, Any]]]


def _console(tmp: Path) -> NotifierHarness:
    outbox = tmp / "out" / "outbox.jsonl"
    notifier = ConsoleNotifier(outbox)

    def delivered() -> list[dict[str, Any]]:
        if not outbox.exists():
            return []
        return [json.loads(line) for line in outbox.read_text("utf-8").splitlines()]

    return NotifierHarness(notifier, delivered)


# Add webhook / email adapters here (with a local capturing endpoint).
FACTORIES: list[tuple[str, Callable[[Path], NotifierHarness]]] = [("console-outbox", _console)]


@pytest.fixture(params=[f for _, f in FACTORIES], ids=[i for i, _ in FACTORIES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> NotifierHarness:
    factory: Callable[[Path], NotifierHarness] = request.param
    return factory(tmp_path)


def make(n: int, user_id: str | None = "u1") -> Notification:
    return Notification(
        event_type="position_closed",
        severity="info" if n % 2 else "critical",
        title=f"BTC/USDT closed #{n}",
        body={"pnl_pct": 1.25 * n, "reasons": ["take_profit"], "n": n},
        user_id=user_id,
    )


def test_implements_port(harness: NotifierHarness) -> None:
    assert isinstance(harness.notifier, Notifier)


def test_delivers_every_field_in_order(harness: NotifierHarness) -> None:
    for n in range(3):
        harness.notifier.send(make(n))
    assert harness.delivered() == [
        {
            "event_type": "position_closed",
            "severity": "info" if n % 2 else "critical",
            "title": f"BTC/USDT closed #{n}",
            "body": {"pnl_pct": 1.25 * n, "reasons": ["take_profit"], "n": n},
            "user_id": "u1",
        }
        for n in range(3)
    ]


def test_operator_notification_has_no_user(harness: NotifierHarness) -> None:
    harness.notifier.send(make(1, user_id=None))
    (only,) = harness.delivered()
    assert only["user_id"] is None
    assert only["title"] == "BTC/USDT closed #1"


def test_only_the_notification_is_sent(harness: NotifierHarness) -> None:
    harness.notifier.send(make(1))
    (only,) = harness.delivered()
    assert set(only) == {"event_type", "severity", "title", "body", "user_id"}
