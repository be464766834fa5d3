"""Embedded ``Notifier``: an outbox file of JSON lines, optionally echoed to the console."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from prometheus_trader.ports import Notification


def notification_to_dict(notification: Notification) -> dict[str, Any]:
    """The JSON-ready form of a notification (only its own fields)."""
    return {
        "event_type": notification.event_type,
        "severity": notification.severity,
        "title": notification.title,
        "user_id": notification.user_id,
        "body": dict(notification.body),
    }


class ConsoleNotifier:
    """``Notifier`` that records notifications instead of sending them.

    Each notification is appended to ``path`` (when given) as one JSON line with sorted
    keys, and kept in ``sent``. With ``console=True`` a one-line summary goes to stdout.
    """

    def __init__(self, path: Path | None = None, console: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.console = console
        self.sent: list[Notification] = []
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ConsoleNotifier(path={str(self.path) if self.path else None!r})"

    def send(self, notification: Notification) -> None:
        """Record one notification."""
        # default=str keeps odd body values (datetimes, decimals) deterministic and printable
        line = json.dumps(notification_to_dict(notification), sort_keys=True, default=str)
        with self._lock:
            if self.path is not None:
                with self.path.open("a", encoding="utf-8", newline="\n") as fh:
                    fh.write(line + "\n")
            self.sent.append(notification)
            if self.console:
                recipient = notification.user_id or "operator"
                print(
                    f"[{notification.severity}] {recipient} {notification.event_type}: "
                    f"{notification.title}",
                    file=sys.stdout,
                )
