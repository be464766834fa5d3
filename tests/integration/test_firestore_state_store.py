"""Firestore-only behaviour of ``FirestoreStateStore`` (the shared semantics live in the
contract suite, tests/contract/test_state_store.py)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from google.cloud import firestore

from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore
from prometheus_trader.app.emulators import EmulatorStack
from prometheus_trader.ports import Filter, StateTransaction

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(emulators: EmulatorStack) -> str:
    return f"t{uuid.uuid4().hex[:12]}-"


@pytest.fixture
def client(emulators: EmulatorStack) -> Iterator[firestore.Client]:
    raw = firestore.Client(project=emulators.project)
    yield raw
    raw.close()  # type: ignore[no-untyped-call]


def test_two_clients_racing_transactions_lose_no_update(prefix: str) -> None:
    # separate clients = separate processes as far as Firestore is concerned: the
    # in-process transaction lock does not help, Firestore's own isolation must
    stores = [FirestoreStateStore(prefix=prefix) for _ in range(2)]
    stores[0].set("counters", "c", {"n": 0})

    def increment(tx: StateTransaction) -> None:
        doc = tx.get("counters", "c")
        assert doc is not None
        tx.set("counters", "c", {"n": doc["n"] + 1})

    def worker(store: FirestoreStateStore) -> None:
        for _ in range(3):
            store.transaction(increment)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[1].get("counters", "c") == {"n": 6}
    for store in stores:
        store.close()


def test_documents_are_stored_under_their_real_field_names(
    prefix: str, client: firestore.Client
) -> None:
    # the composite indexes name plain fields: the adapter must not rename them
    store = FirestoreStateStore(client, prefix=prefix)
    store.set("positions", "BTC/USDT:USDT-1", {"user_id": "u1", "status": "open"})
    raw = list(client.collection(f"{prefix}positions").stream())
    assert [s.to_dict() for s in raw] == [{"user_id": "u1", "status": "open"}]
    assert raw[0].id == "BTC.~USDT:USDT-1"
    hits = store.query("positions", [Filter("user_id", "==", "u1"), Filter("status", "==", "open")])
    assert hits == [{"user_id": "u1", "status": "open"}]


def test_prefix_isolates_collections(prefix: str, client: firestore.Client) -> None:
    one = FirestoreStateStore(client, prefix=prefix + "a-")
    two = FirestoreStateStore(client, prefix=prefix + "b-")
    one.set("users", "u", {"v": 1})
    assert two.get("users", "u") is None
    assert one.query("users") == [{"v": 1}]
    assert two.query("users") == []


def test_nested_transactions_are_refused(prefix: str) -> None:
    store = FirestoreStateStore(prefix=prefix)

    def outer(tx: StateTransaction) -> None:
        store.transaction(lambda inner: None)

    with pytest.raises(RuntimeError, match="nested"):
        store.transaction(outer)
    store.close()


def test_read_after_write_in_a_transaction_is_refused(prefix: str) -> None:
    store = FirestoreStateStore(prefix=prefix)

    def bad(tx: StateTransaction) -> None:
        tx.set("things", "a", {"v": 1})
        tx.get("things", "a")

    with pytest.raises(RuntimeError, match="reads before any write"):
        store.transaction(bad)
    assert store.get("things", "a") is None
    store.close()
