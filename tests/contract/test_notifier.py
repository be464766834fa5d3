"""Contract suite for the ``Notifier`` port."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.standins import notify_harnesses
from tests.standins.notify_harnesses import NotifierHarness

from prometheus_trader.adapters.embedded.console_notifier import ConsoleNotifier
from prometheus_trader.ports import Notification, Notifier

pytestmark = pytest.mark.contract


def _console(tmp: Path, _stack: contextlib.ExitStack) -> NotifierHarness:
    outbox = tmp / "out" / "outbox.jsonl"
    notifier = ConsoleNotifier(outbox)

    def delivered() -> list[dict[str, Any]]:
        if not outbox.exists():
            return []
        return [json.loads(line) for line in outbox.read_text("utf-8").splitlines()]

    return NotifierHarness(notifier, delivered)


Factory = Callable[[Path, contextlib.ExitStack], NotifierHarness]
# every adapter of the port; the HTTP ones deliver to loopback stand-ins (tests/standins)
FACTORIES: list[tuple[str, Factory]] = [
    ("console-outbox", _console),
    ("webhook", notify_harnesses.webhook),
    ("sendgrid", notify_harnesses.sendgrid),
    ("telegram", notify_harnesses.telegram),
    ("routing", notify_harnesses.routing),
]


@pytest.fixture(params=[f for _, f in FACTORIES], ids=[i for i, _ in FACTORIES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifierHarness]:
    factory: Factory = request.param
    with contextlib.ExitStack() as stack:
        yield factory(tmp_path, stack)


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
