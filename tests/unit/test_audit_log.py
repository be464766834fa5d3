"""The order audit log: one append-only object per user and UTC day."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.usecases.audit import audit_key, audit_order

pytestmark = pytest.mark.unit


def test_each_user_and_day_has_its_own_log_object(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    day1 = datetime(2025, 5, 21, 23, 59, tzinfo=UTC)
    day2 = datetime(2025, 5, 22, 0, 1, tzinfo=UTC)
    audit_order(blobs, day1, {"user_id": "alice", "action": "create_order", "n": 1})
    audit_order(blobs, day1, {"user_id": "bob", "action": "create_order", "n": 2})
    audit_order(blobs, day1, {"user_id": "alice", "action": "cancel_order", "n": 3})
    audit_order(blobs, day2, {"user_id": "alice", "action": "close_position", "n": 4})
    assert sorted(blobs.list("audit/")) == [
        "audit/orders/2025-05-21/alice.jsonl",
        "audit/orders/2025-05-21/bob.jsonl",
        "audit/orders/2025-05-22/alice.jsonl",
    ]
    alice = blobs.get(audit_key(day1, "alice")).decode().splitlines()
    assert [json.loads(line)["n"] for line in alice] == [1, 3]
    assert json.loads(alice[0]) == {"action": "create_order", "n": 1, "user_id": "alice"}
