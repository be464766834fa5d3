"""Contract suite for the ``ChangeFeed`` port: every state store adapter's change stream.

A watch's first batch is the complete result; later batches carry what changed, from any
process. Remote listeners deliver asynchronously, so the tests poll until the view holds
what they wait for (bounded: a feed that never delivers fails the test).
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.contract.test_state_store import FACTORIES

from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import ChangeFeed, Filter, StateStore, Watch, WatchBatch, WatchLost

pytestmark = pytest.mark.contract

WAIT_S = 30.0  # upper bound for a remote listener to deliver (never reached when it works)


@pytest.fixture(params=[f for _, f in FACTORIES], ids=[i for i, _ in FACTORIES])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    instance = request.param(request, tmp_path)
    yield instance
    close = getattr(instance, "close", None)
    if close is not None:
        close()


class View:
    """What a consumer of the feed holds: id -> document."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.docs: dict[str, dict[str, Any]] = {}
        self.synced = False
        self.batches: list[WatchBatch] = []

    def poll(self) -> None:
        batch = self.watch.poll()
        if batch is None:
            return
        self.batches.append(batch)
        if batch.complete:
            self.docs = {}
            self.synced = True
        assert self.synced, "a batch of changes came before the complete result"
        for change in batch.changes:
            if change.data is None:
                self.docs.pop(change.doc_id, None)
            else:
                self.docs[change.doc_id] = change.data

    def until(self, done: Callable[[dict[str, dict[str, Any]]], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            self.poll()
            if self.synced and done(self.docs):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the feed never delivered; holds {sorted(self.docs)}")
            time.sleep(0.02)


def feed(store: StateStore) -> ChangeFeed:
    assert isinstance(store, ChangeFeed)
    return store


OPEN = [Filter("status", "==", "open")]


def test_implements_port(store: StateStore) -> None:
    assert isinstance(store, ChangeFeed)


def test_first_batch_is_the_complete_result(store: StateStore) -> None:
    store.set("pos", "a", {"status": "open", "v": 1})
    store.set("pos", "b", {"status": "closed", "v": 2})
    store.set("other", "c", {"status": "open", "v": 3})
    view = View(feed(store).watch("pos", OPEN))
    view.until(lambda docs: "a" in docs)
    assert view.batches[0].complete
    assert view.docs == {"a": {"status": "open", "v": 1}}
    view.watch.close()


def test_changes_enter_change_and_leave_the_result(store: StateStore) -> None:
    store.set("pos", "a", {"status": "open", "v": 1})
    store.set("pos", "gone", {"status": "open", "v": 0})
    view = View(feed(store).watch("pos", OPEN))
    view.until(lambda docs: set(docs) == {"a", "gone"})
    store.create("pos", "b", {"status": "open", "v": 2})  # enters
    store.update("pos", "a", {"v": 10})  # changes
    store.set("pos", "c", {"status": "closed"})  # never matches
    store.delete("pos", "gone")  # leaves: deleted
    store.set("other", "d", {"status": "open"})  # another collection
    view.until(lambda docs: docs.get("a", {}).get("v") == 10 and "gone" not in docs)
    view.until(lambda docs: "b" in docs)
    assert view.docs == {"a": {"status": "open", "v": 10}, "b": {"status": "open", "v": 2}}
    store.update("pos", "b", {"status": "closed"})  # leaves: no longer matches
    view.until(lambda docs: "b" not in docs)
    assert view.docs == {"a": {"status": "open", "v": 10}}
    store.update("pos", "c", {"status": "open"})  # enters by an update
    view.until(lambda docs: "c" in docs)
    assert all(not b.complete for b in view.batches[1:])
    view.watch.close()


def test_transaction_writes_are_seen_and_rolled_back_ones_never(store: StateStore) -> None:
    view = View(feed(store).watch("pos", OPEN))
    view.until(lambda docs: True)

    def fails(tx: Any) -> None:
        tx.set("pos", "never", {"status": "open"})
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        store.transaction(fails)
    store.transaction(lambda tx: tx.set("pos", "kept", {"status": "open"}))
    view.until(lambda docs: "kept" in docs)
    assert "never" not in view.docs
    view.watch.close()


def test_an_idle_watch_delivers_nothing_new(store: StateStore) -> None:
    store.set("pos", "a", {"status": "open"})
    view = View(feed(store).watch("pos", OPEN))
    view.until(lambda docs: "a" in docs)
    view.batches.clear()
    for _ in range(3):
        view.poll()
    assert all(not b.changes and not b.complete for b in view.batches)


def test_a_closed_watch_raises_watch_lost(store: StateStore) -> None:
    watch = feed(store).watch("pos", OPEN)
    watch.close()
    watch.close()  # idempotent
    with pytest.raises(WatchLost):
        watch.poll()


def test_an_in_filter_and_a_local_filter_follow_the_query_semantics(store: StateStore) -> None:
    store.set("pos", "a", {"kind": "x", "n": 1})
    store.set("pos", "b", {"kind": "y", "n": None})
    store.set("pos", "c", {"kind": "z", "n": 2})
    view = View(feed(store).watch("pos", [Filter("kind", "in", ["x", "y"])]))
    view.until(lambda docs: set(docs) == {"a", "b"})
    nulls = View(feed(store).watch("pos", [Filter("n", "!=", 1)]))  # keeps null (port)
    nulls.until(lambda docs: set(docs) == {"b", "c"})
    store.update("pos", "c", {"n": 1})
    nulls.until(lambda docs: set(docs) == {"b"})
    view.watch.close()
    nulls.watch.close()


# ------------------------------------------------------------ other processes
def _writer(kind: str, where: str, env: dict[str, str]) -> None:
    """Another process: writes through its own store instance."""
    os.environ.update(env)
    if kind == "sqlite":
        other: Any = SqliteStateStore(Path(where))
    else:
        from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

        other = FirestoreStateStore(prefix=where)
    other.set("pos", "from-child", {"status": "open", "pid": os.getpid()})
    other.update("pos", "a", {"status": "closed"})
    other.transaction(lambda tx: tx.create("pos", "child-tx", {"status": "open"}))
    other.close()


# another process can open it
SHARED = [(i, f) for i, f in FACTORIES if i not in ("sqlite-memory", "memory")]


@pytest.fixture(params=[f for _, f in SHARED], ids=[i for i, _ in SHARED])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    instance = request.param(request, tmp_path)
    yield instance
    instance.close()  # type: ignore[attr-defined]


def test_writes_of_another_process_are_seen(shared_store: StateStore) -> None:
    store = shared_store
    target = (
        ("sqlite", str(store.path))
        if isinstance(store, SqliteStateStore)
        else ("firestore", getattr(store, "prefix"))  # noqa: B009 (not on the port)
    )
    store.set("pos", "a", {"status": "open"})
    view = View(feed(store).watch("pos", OPEN))
    view.until(lambda docs: "a" in docs)
    env = {k: v for k, v in os.environ.items() if k.endswith("_EMULATOR_HOST") or "PROJECT" in k}
    child = multiprocessing.get_context("spawn").Process(target=_writer, args=(*target, env))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    view.until(lambda docs: {"from-child", "child-tx"} <= set(docs) and "a" not in docs)
    assert view.docs["from-child"]["pid"] == child.pid
    view.watch.close()


# ------------------------------------------------------------ embedded only
def test_sqlite_watch_behind_the_pruned_log_raises_watch_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_trader.adapters.embedded import sqlite_change_feed

    monkeypatch.setattr(sqlite_change_feed, "KEEP", 5)
    monkeypatch.setattr(sqlite_change_feed, "PRUNE_EVERY", 1)
    store = SqliteStateStore(tmp_path / "s.sqlite")
    slow = store.watch("pos", OPEN)
    assert slow.poll() is not None
    fast = store.watch("pos", OPEN)
    fast.poll()
    for i in range(20):
        store.set("pos", f"p{i}", {"status": "open", "n": uuid.uuid4().hex})
    batch = fast.poll()  # reads all 20, then prunes the log to the last 5
    assert batch is not None and len(batch.changes) == 20
    with pytest.raises(WatchLost):
        slow.poll()
    store.close()
