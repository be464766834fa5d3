"""A batch killed after each of its writes, then redelivered, ends as an uninterrupted one.

Each kill runs the batch in its own process (``batch_kill_harness``), which dies with
``os._exit`` right after one state-store or exchange call returned; the redelivery
(attempt 2) runs here. The stored documents (executions, positions, events, stats, the
paper ledger's orders, fills and balances in the same file) must equal those of a run
that was never interrupted: every user decided once, no order twice, every position
with its stop.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration import batch_kill_harness as harness

from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# (method, n): the kill follows the n-th call. In order: the stats of new users, the
# decisions, the rejections' and advice's events, the entries, the stop-loss round, the
# take-profit round, the positions, their events, the final records.
KILL_POINTS = [
    ("create_many", 1),
    ("create_many", 2),
    ("create_many", 3),
    ("create_orders", 1),
    ("create_orders", 2),
    ("create_orders", 3),
    ("create_many", 4),
    ("create_many", 5),
    ("set_many", 1),
]


def _documents(folder: Path) -> dict[tuple[str, str], str]:
    conn = sqlite3.connect(str(folder / "state.sqlite"))
    try:
        rows = conn.execute("SELECT collection, id, data FROM documents").fetchall()
    finally:
        conn.close()
    return {(c, i): d for c, i, d in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    harness.seed(folder)
    report = harness.run_batch(folder, 1)
    assert len(report.fast) == len(harness.users()) and not report.per_user
    return _documents(folder)


@pytest.mark.parametrize(("method", "nth"), KILL_POINTS, ids=[f"{m}-{n}" for m, n in KILL_POINTS])
def test_a_killed_batch_redelivered_ends_as_an_uninterrupted_one(
    tmp_path: Path, reference: dict[tuple[str, str], str], method: str, nth: int
) -> None:
    harness.seed(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.batch_kill_harness",
            str(tmp_path),
            method,
            str(nth),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    before = _documents(tmp_path)
    decided = {k for k in before if k[0] == "executions"}
    report = harness.run_batch(tmp_path, 2)
    after = _documents(tmp_path)
    assert sorted(k for k in after if after.get(k) != reference.get(k)) == []
    assert after.keys() == reference.keys()
    # the users recorded before the kill were resumed (per user) or already complete,
    # never decided again; the others went the fast path
    resumed = set(report.per_user) | set(report.already_done)
    assert {json.loads(before[k])["user_id"] for k in decided} == resumed
    positions = [json.loads(d) for (c, _), d in after.items() if c == "positions"]
    assert positions and all(p["stop_order_id"] for p in positions)
    # the audit log loses no order: every order of a final record has its create_order
    # line (from the killed attempt's batch object, or from the redelivery's per-user
    # path, which audits the orders it gets back), each line the same every time
    placed = {
        o for (c, _), d in after.items() if c == "executions" for o in json.loads(d)["order_ids"]
    }
    lines = [
        json.loads(line)
        for key in harness_blobs(tmp_path).list("audit/orders/")
        for line in harness_blobs(tmp_path).get(key).decode().splitlines()
    ]
    assert placed and placed <= {x["order_id"] for x in lines if x["action"] == "create_order"}
    by_order: dict[str, set[str]] = {}
    for x in lines:
        by_order.setdefault(x["order_id"], set()).add(json.dumps(x, sort_keys=True))
    assert all(len(v) == 1 for v in by_order.values())


def harness_blobs(folder: Path) -> LocalBlobStore:
    """The blob store the harness's executors write the audit log to."""
    return LocalBlobStore(folder / "blobs")
