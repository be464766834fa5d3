"""The append-only order audit log: every order action, one JSON line per action."""

from __future__ import annotations

import json
from datetime import datetime

from prometheus_trader.ports import BlobStore


def audit_key(now: datetime, user_id: str) -> str:
    """The log object of one user's order actions on one UTC day.

    One object per user and day, not one per day: appending to a Cloud Storage object
    rewrites it under a generation precondition, so writers of one object queue behind
    each other and each append copies (and, with versioning, keeps) the whole object. A
    user's executions run one at a time (the ``executions`` ordering key) and the
    monitor closes one user's positions on one thread, so a user's object has about one
    writer at a time however many users trade at once.
    """
    return f"audit/orders/{now:%Y-%m-%d}/{user_id}.jsonl"


def audit_order(blobs: BlobStore, now: datetime, record: dict[str, object]) -> None:
    """Append one order action (its ``user_id`` names the log) to the audit log."""
    key = audit_key(now, str(record["user_id"]))
    blobs.append_line(key, json.dumps(record, sort_keys=True, default=str))
