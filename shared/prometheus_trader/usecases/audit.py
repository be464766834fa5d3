"""The append-only order audit log: every order action, one JSON line per action."""

from __future__ import annotations

import json
from datetime import datetime

from prometheus_trader.ports import BlobStore


def audit_order(blobs: BlobStore, now: datetime, record: dict[str, object]) -> None:
    """Append one order action to the append-only audit log (one JSON line)."""
    key = f"audit/orders/{now:%Y-%m-%d}.jsonl"
    blobs.append_line(key, json.dumps(record, sort_keys=True, default=str))
