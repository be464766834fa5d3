"""The append-only order audit log: every order action, one JSON line per action."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from prometheus_trader.domain.ids import stable_id
from prometheus_trader.domain.trading import Order
from prometheus_trader.ports import BlobStore

# json.dumps(record, sort_keys=True, default=str) without building an encoder per line
_ENCODE = json.JSONEncoder(sort_keys=True, default=str).encode


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


def audit_batch_key(now: datetime, signal_id: str, user_ids: Sequence[str]) -> str:
    """The log object of one batch attempt's order actions (``audit_batch``).

    Named by the signal and the users whose lines it holds: a batched executor writes
    lines only for the users whose execution records its own attempt created, so two
    attempts of one batch message (a redelivery, a racing delivery) never name the same
    object, and each object has exactly one writer (one ``put``, never an append).
    """
    users = stable_id(*sorted(set(user_ids)), length=16)
    return f"audit/orders/{now:%Y-%m-%d}/batch-{signal_id}-{users}.jsonl"


def executor_line(
    action: str, user_id: str, signal_id: str, order: Order, amount: float, ts_ms: int
) -> dict[str, object]:
    """The audit line of an order an executor placed or saw (both executor paths write
    this one shape; tests/integration/test_execute_batch.py compares their lines)."""
    return {
        "action": action,
        "user_id": user_id,
        "signal_id": signal_id,
        "client_order_id": order.client_order_id,
        "order_id": order.id,
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.type.value,
        "amount": amount,
        "stop_price": order.stop_price,
        "status": order.status.value,
        "filled": order.filled,
        "average": order.average,
        "ts_ms": ts_ms,
    }


def audit_order(blobs: BlobStore, now: datetime, record: dict[str, object]) -> None:
    """Append one order action (its ``user_id`` names the log) to the audit log."""
    key = audit_key(now, str(record["user_id"]))
    blobs.append_line(key, _ENCODE(record))


def audit_batch(
    blobs: BlobStore, now: datetime, signal_id: str, records: Sequence[dict[str, object]]
) -> str | None:
    """Write a batch's order actions (each with its ``user_id``) as one object, in one
    write; the same lines ``audit_order`` would append, in the same order. Its key (None
    when there is nothing to write)."""
    if not records:
        return None
    key = audit_batch_key(now, signal_id, [str(r["user_id"]) for r in records])
    text = "".join(f"{_ENCODE(r)}\n" for r in records)
    blobs.put(key, text.encode("utf-8"), content_type="text/plain; charset=utf-8")
    return key
