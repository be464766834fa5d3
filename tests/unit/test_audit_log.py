"""The order audit log: one append-only object per user and UTC day, one per batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.usecases.audit import audit_batch, audit_batch_key, audit_key, audit_order

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


def test_a_batch_writes_its_lines_as_one_object_named_by_its_users(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    day = datetime(2025, 5, 21, 12, tzinfo=UTC)
    records: list[dict[str, object]] = [
        {"user_id": "bob", "action": "create_order", "n": 1, "price": 0.1},
        {"user_id": "alice", "action": "create_order", "n": 2, "when": day},
        {"user_id": "bob", "action": "create_order", "n": 3, "price": None},
    ]
    key = audit_batch(blobs, day, "sig-1", records)
    assert key == audit_batch_key(day, "sig-1", ["alice", "bob"])
    assert key is not None and key.startswith("audit/orders/2025-05-21/batch-sig-1-")
    assert blobs.list("audit/") == [key]
    # the lines audit_order appends, in the same order
    for record in records:
        audit_order(blobs, day, record)
    appended = [
        line
        for user in ("bob", "alice")
        for line in blobs.get(audit_key(day, user)).decode().splitlines()
    ]
    written = blobs.get(key).decode().splitlines()
    assert sorted(written) == sorted(appended)
    assert [json.loads(line)["n"] for line in written] == [1, 2, 3]
    assert written[1] == json.dumps(records[1], sort_keys=True, default=str)
    # another attempt of the batch holds other users (those whose records it created):
    # another object; an attempt with nothing to log writes nothing
    assert audit_batch_key(day, "sig-1", ["carol"]) != key
    assert audit_batch_key(day, "sig-1", ["bob", "alice", "bob"]) == key
    assert audit_batch(blobs, day, "sig-2", []) is None
    assert not any("sig-2" in k for k in blobs.list("audit/"))
