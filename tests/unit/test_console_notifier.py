"""Console notifier specifics: ``sent``, console echo, byte-stable outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.console_notifier import ConsoleNotifier
from prometheus_trader.ports import Notification

pytestmark = pytest.mark.unit

NOTE = Notification(
    event_type="kill_switch",
    severity="critical",
    title="Trading halted",
    body={"b": 1, "a": datetime(2025, 5, 20, tzinfo=UTC)},
    user_id=None,
)


def test_keeps_sent_without_a_file() -> None:
    notifier = ConsoleNotifier()
    notifier.send(NOTE)
    assert notifier.sent == [NOTE]


def test_console_echo(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleNotifier(console=True).send(NOTE)
    assert capsys.readouterr().out == "[critical] operator kill_switch: Trading halted\n"


def test_outbox_bytes_are_stable(tmp_path: Path) -> None:
    ConsoleNotifier(tmp_path / "a.jsonl").send(NOTE)
    ConsoleNotifier(tmp_path / "b.jsonl").send(NOTE)
    text = (tmp_path / "a.jsonl").read_text("utf-8")
    assert text == (tmp_path / "b.jsonl").read_text("utf-8")
    assert text.startswith('{"body": {"a": "2025-05-20 00:00:00+00:00", "b": 1}')
    assert text.endswith("\n") and text.count("\n") == 1
