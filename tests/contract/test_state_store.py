"""Contract suite for the ``StateStore`` port (Firestore semantics)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import AlreadyExists, Filter, StateStore, StateTransaction

pytestmark = pytest.mark.contract

# A factory gets the test's request (cloud factories ask it for the `emulators` fixture,
# so embedded-only runs start no emulator) and a temporary folder.
StoreFactory = Callable[[pytest.FixtureRequest, Path], StateStore]


def _firestore(request: pytest.FixtureRequest, tmp: Path) -> StateStore:
    request.getfixturevalue("emulators")
    # imported here: the embedded-only run needs no Google client library
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

    # one emulator serves the whole session: a unique collection prefix isolates each test
    return FirestoreStateStore(prefix=f"t{uuid.uuid4().hex[:12]}-")


FACTORIES: list[tuple[str, StoreFactory]] = [
    ("sqlite-memory", lambda request, tmp: SqliteStateStore()),
    ("sqlite-file", lambda request, tmp: SqliteStateStore(tmp / "state.sqlite")),
    ("memory", lambda request, tmp: MemoryStateStore()),  # one process only (the backtest)
    ("firestore-emulator", _firestore),
]


@pytest.fixture(params=[f for _, f in FACTORIES], ids=[i for i, _ in FACTORIES])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    instance = request.param(request, tmp_path)
    yield instance
    close = getattr(instance, "close", None)
    if close is not None:
        close()


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


def ids(docs: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in docs]


# ---------------------------------------------------------------- documents
def test_implements_port(store: StateStore) -> None:
    assert isinstance(store, StateStore)


def test_get_missing_is_none(store: StateStore) -> None:
    assert store.get("things", "nope") is None


def test_create_if_absent_leaves_existing_untouched(store: StateStore) -> None:
    assert store.create("things", "a", {"v": 1}) is True
    assert store.create("things", "a", {"v": 2}) is False
    assert store.get("things", "a") == {"v": 1}


def test_collections_are_separate(store: StateStore) -> None:
    assert store.create("one", "x", {"v": 1})
    assert store.create("two", "x", {"v": 2})
    assert store.get("one", "x") == {"v": 1}
    assert store.get("two", "x") == {"v": 2}


def test_set_creates_and_replaces(store: StateStore) -> None:
    store.set("things", "a", {"v": 1, "w": 2})
    store.set("things", "a", {"v": 3})
    assert store.get("things", "a") == {"v": 3}


def test_update_merges_top_level_fields(store: StateStore) -> None:
    store.set("things", "a", {"v": 1, "nested": {"x": 1, "y": 2}})
    store.update("things", "a", {"w": 5, "nested": {"x": 9}})
    assert store.get("things", "a") == {"v": 1, "w": 5, "nested": {"x": 9}}


def test_update_missing_raises_key_error(store: StateStore) -> None:
    with pytest.raises(KeyError):
        store.update("things", "ghost", {"v": 1})
    assert store.get("things", "ghost") is None


def test_delete_and_delete_missing(store: StateStore) -> None:
    store.set("things", "a", {"v": 1})
    store.delete("things", "a")
    store.delete("things", "a")
    assert store.get("things", "a") is None


def test_returned_documents_are_copies(store: StateStore) -> None:
    data = {"v": [1, 2]}
    store.set("things", "a", data)
    data["v"].append(3)
    doc = store.get("things", "a")
    assert doc == {"v": [1, 2]}
    assert doc is not None
    doc["v"].append(4)
    assert store.get("things", "a") == {"v": [1, 2]}


def test_ids_may_contain_symbol_characters(store: StateStore) -> None:
    store.set("stats", "symbol-BTC/USDT:USDT", {"v": 1})
    assert store.get("stats", "symbol-BTC/USDT:USDT") == {"v": 1}


# ---------------------------------------------------------------- queries
@pytest.fixture
def people(store: StateStore) -> StateStore:
    rows: dict[str, dict[str, Any]] = {
        "p1": {"name": "ann", "age": 30, "score": 1.5, "active": True, "color": "red"},
        "p2": {"name": "bob", "age": 25, "score": 2.5, "active": False, "color": "blue"},
        "p3": {"name": "cid", "age": 35, "score": 0.5, "active": True, "color": None},
        "p4": {"name": "dee", "age": 30, "score": 3.0, "active": 1, "profile": {"tier": "gold"}},
        "p5": {"name": "eve", "age": "30", "profile": {"tier": "silver"}},
    }
    for doc_id, row in rows.items():
        store.set("people", doc_id, {"id": doc_id, **row})
    return store


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (Filter("age", "==", 30), ["p1", "p4"]),
        (Filter("age", "==", 30.0), ["p1", "p4"]),
        (Filter("age", "==", "30"), ["p5"]),
        (Filter("age", "!=", 30), ["p2", "p3", "p5"]),
        (Filter("age", "<", 30), ["p2"]),
        (Filter("age", "<=", 30), ["p1", "p2", "p4"]),
        (Filter("age", ">", 30), ["p3"]),
        (Filter("age", ">=", 30), ["p1", "p3", "p4"]),
        (Filter("score", ">", 1.0), ["p1", "p2", "p4"]),
        (Filter("name", ">=", "cid"), ["p3", "p4", "p5"]),
        (Filter("age", "in", [25, 35]), ["p2", "p3"]),
        (Filter("name", "in", ["ann", "eve", "zed"]), ["p1", "p5"]),
        (Filter("age", "in", []), []),
        (Filter("active", "==", True), ["p1", "p3"]),
        (Filter("active", "==", 1), ["p4"]),
        (Filter("active", "==", False), ["p2"]),
        (Filter("color", "==", None), ["p3"]),
        (Filter("color", "!=", None), ["p1", "p2"]),
        (Filter("color", "==", Color.RED), ["p1"]),
        (Filter("color", "in", [Color.RED, Color.BLUE]), ["p1", "p2"]),
        (Filter("profile.tier", "==", "gold"), ["p4"]),
        (Filter("profile.tier", "!=", "gold"), ["p5"]),
        (Filter("profile", "==", {"tier": "silver"}), ["p5"]),
        (Filter("missing", "==", None), []),
        # an explicit null is a value: != keeps it, `in` can match it
        (Filter("color", "!=", "red"), ["p2", "p3"]),
        (Filter("color", "in", [None, "red"]), ["p1", "p3"]),
        # longer than Firestore's 30-value `in` limit
        (Filter("age", "in", [25, *range(31, 70)]), ["p2", "p3"]),
    ],
    ids=lambda v: repr(v) if isinstance(v, Filter) else None,
)
def test_query_filters(people: StateStore, flt: Filter, expected: list[str]) -> None:
    assert ids(people.query("people", [flt])) == expected


def test_query_combines_filters(people: StateStore) -> None:
    docs = people.query("people", [Filter("age", "==", 30), Filter("score", ">", 2)])
    assert ids(docs) == ["p4"]


def test_query_other_collection_is_empty(people: StateStore) -> None:
    assert people.query("nobody", [Filter("age", "==", 30)]) == []


def test_query_without_order_sorts_by_id(people: StateStore) -> None:
    assert ids(people.query("people")) == ["p1", "p2", "p3", "p4", "p5"]


def test_query_order_by_then_id(people: StateStore) -> None:
    docs = people.query("people", [Filter("age", ">=", 0)], order_by="age")
    assert ids(docs) == ["p2", "p1", "p4", "p3"]


def test_query_order_by_descending_and_limit(people: StateStore) -> None:
    docs = people.query("people", order_by="score", descending=True, limit=2)
    assert ids(docs) == ["p4", "p2"]
    assert people.query("people", order_by="score", limit=0) == []


def test_query_order_by_skips_documents_without_the_field(people: StateStore) -> None:
    # Firestore semantics: ordering on a field also requires it to exist.
    assert ids(people.query("people", order_by="profile.tier")) == ["p4", "p5"]


def test_query_order_by_nested_descending(people: StateStore) -> None:
    assert ids(people.query("people", order_by="profile.tier", descending=True)) == ["p5", "p4"]


def test_query_range_on_another_field_than_order_by(people: StateStore) -> None:
    docs = people.query("people", [Filter("score", ">", 1.0)], order_by="name", descending=True)
    assert ids(docs) == ["p4", "p2", "p1"]
    limited = people.query(
        "people", [Filter("score", ">", 1.0)], order_by="name", descending=True, limit=2
    )
    assert ids(limited) == ["p4", "p2"]


def test_query_range_without_order_still_sorts_by_id(people: StateStore) -> None:
    # Firestore itself would sort by the range field first (p2 has the lowest age)
    assert ids(people.query("people", [Filter("age", ">", 24)], limit=2)) == ["p1", "p2"]
    assert ids(people.query("people", [Filter("score", "<", 3)], descending=True)) == [
        "p3",
        "p2",
        "p1",
    ]


def test_query_descending_without_order_by_sorts_by_id(people: StateStore) -> None:
    assert ids(people.query("people", descending=True, limit=2)) == ["p5", "p4"]


ODD_IDS = ["a", "a/b", "a.b", "a/", "a.", "a..", "a0", "a-", "a%2F", ".x", "/x", "a~b", "é/ü"]


def test_odd_ids_round_trip_and_sort_by_id(store: StateStore) -> None:
    for doc_id in ODD_IDS:
        store.set("odd", doc_id, {"id": doc_id})
    for doc_id in ODD_IDS:
        assert store.get("odd", doc_id) == {"id": doc_id}
    assert ids(store.query("odd")) == sorted(ODD_IDS)
    assert ids(store.query("odd", descending=True, limit=3)) == sorted(ODD_IDS)[::-1][:3]
    store.delete("odd", "a/b")
    assert store.get("odd", "a/b") is None
    assert store.get("odd", "a.b") == {"id": "a.b"}


def test_update_with_no_changes_still_needs_the_document(store: StateStore) -> None:
    store.set("things", "a", {"v": 1})
    store.update("things", "a", {})
    assert store.get("things", "a") == {"v": 1}
    with pytest.raises(KeyError):
        store.update("things", "ghost", {})


def test_update_rejects_dotted_field_names(store: StateStore) -> None:
    store.set("things", "a", {"v": 1})
    with pytest.raises(ValueError):
        store.update("things", "a", {"nested.x": 1})
    assert store.get("things", "a") == {"v": 1}


# ---------------------------------------------------------------- transactions
def test_transaction_commits_and_returns_result(store: StateStore) -> None:
    store.set("acct", "a", {"balance": 10})

    def move(tx: StateTransaction) -> int:
        a = tx.get("acct", "a")
        assert a is not None
        tx.update("acct", "a", {"balance": a["balance"] - 4})
        tx.set("acct", "b", {"balance": 4})
        tx.create("log", "t1", {"amount": 4})
        return int(a["balance"])

    assert store.transaction(move) == 10
    assert store.get("acct", "a") == {"balance": 6}
    assert store.get("acct", "b") == {"balance": 4}
    assert store.get("log", "t1") == {"amount": 4}


def test_transaction_exception_writes_nothing(store: StateStore) -> None:
    store.set("acct", "a", {"balance": 10})

    def boom(tx: StateTransaction) -> None:
        tx.update("acct", "a", {"balance": 0})
        tx.set("acct", "b", {"balance": 10})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.transaction(boom)
    assert store.get("acct", "a") == {"balance": 10}
    assert store.get("acct", "b") is None


def test_transaction_create_existing_raises_and_writes_nothing(store: StateStore) -> None:
    store.set("journal", "j1", {"v": 1})

    def record(tx: StateTransaction) -> None:
        tx.set("stats", "s", {"n": 1})
        tx.create("journal", "j1", {"v": 2})

    with pytest.raises(AlreadyExists):
        store.transaction(record)
    assert store.get("journal", "j1") == {"v": 1}
    assert store.get("stats", "s") is None


def test_transaction_swallowed_already_exists_still_fails(store: StateStore) -> None:
    store.set("journal", "j1", {"v": 1})

    def sneaky(tx: StateTransaction) -> None:
        tx.set("stats", "s", {"n": 1})
        with contextlib.suppress(AlreadyExists):
            tx.create("journal", "j1", {"v": 2})

    with pytest.raises(AlreadyExists):
        store.transaction(sneaky)
    assert store.get("stats", "s") is None


def test_transaction_update_missing_raises_and_writes_nothing(store: StateStore) -> None:
    def bad(tx: StateTransaction) -> None:
        tx.set("stats", "s", {"n": 1})
        tx.update("stats", "ghost", {"n": 2})

    with pytest.raises(KeyError):
        store.transaction(bad)
    assert store.get("stats", "s") is None


def test_racing_creates_have_exactly_one_winner(store: StateStore) -> None:
    barrier = threading.Barrier(8)
    results: dict[int, bool] = {}

    def worker(n: int) -> None:
        barrier.wait()
        results[n] = store.create("executions", "exec-1", {"winner": n})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, created in results.items() if created]
    assert len(results) == 8
    assert len(winners) == 1
    assert store.get("executions", "exec-1") == {"winner": winners[0]}


def test_concurrent_transactions_do_not_lose_updates(store: StateStore) -> None:
    store.set("counters", "c", {"n": 0})

    def increment(tx: StateTransaction) -> None:
        doc = tx.get("counters", "c")
        assert doc is not None
        tx.set("counters", "c", {"n": doc["n"] + 1})

    def worker() -> None:
        for _ in range(20):
            store.transaction(increment)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counters", "c") == {"n": 160}


# ---------------------------------------------------------------- property-based
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
json_docs = st.dictionaries(st.text(max_size=8), json_values, max_size=6)

HYPOTHESIS = settings(
    max_examples=75,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@HYPOTHESIS
@given(doc=json_docs)
def test_round_trips_arbitrary_json_documents(store: StateStore, doc: dict[str, Any]) -> None:
    store.set("docs", "d", doc)
    assert store.get("docs", "d") == doc
    assert store.query("docs") == [doc]


@HYPOTHESIS
@given(value=json_scalars, other=json_scalars)
def test_equality_filter_matches_exactly_equal_values(
    store: StateStore, value: object, other: object
) -> None:
    store.set("eq", "a", {"id": "a", "v": value})
    store.set("eq", "b", {"id": "b", "v": other})
    matched = ids(store.query("eq", [Filter("v", "==", value)]))

    # Python equality, except that a bool never equals a number (Firestore typing).
    def same(x: object, y: object) -> bool:
        return isinstance(x, bool) == isinstance(y, bool) and x == y

    assert matched == (["a", "b"] if same(other, value) else ["a"])


# ---------------------------------------------------------------- batches
def test_get_many_returns_the_existing_documents_by_id(store: StateStore) -> None:
    assert store.get_many("things", []) == {}
    store.set("things", "a", {"v": 1})
    store.set("things", "b/c", {"v": [1, {"x": None}]})
    store.set("other", "z", {"v": 3})
    got = store.get_many("things", ["a", "missing", "b/c", "a", "z"])
    assert got == {"a": {"v": 1}, "b/c": {"v": [1, {"x": None}]}}


def test_get_many_reads_more_ids_than_one_statement_holds(store: StateStore) -> None:
    docs = {f"d{i:04d}": {"i": i} for i in range(1203)}
    store.set_many("things", docs)
    got = store.get_many("things", [f"d{i:04d}" for i in range(1210)])
    assert got == docs


def test_create_many_creates_only_the_absent_ones(store: StateStore) -> None:
    assert store.create("things", "a", {"v": 1})
    created = store.create_many("things", {"a": {"v": 9}, "b": {"v": 2}, "c": {"v": 3}})
    assert created == {"b", "c"}
    assert store.get_many("things", ["a", "b", "c"]) == {
        "a": {"v": 1},
        "b": {"v": 2},
        "c": {"v": 3},
    }
    assert store.create_many("things", {"b": {"v": 5}}) == set()
    assert store.get("things", "b") == {"v": 2}
    assert store.create_many("things", {}) == set()


def test_set_many_creates_and_replaces(store: StateStore) -> None:
    store.set("things", "a", {"v": 1, "old": True})
    store.set_many("things", {"a": {"v": 2}, "b": {"v": 3, "user_id": "u1"}})
    assert store.get("things", "a") == {"v": 2}
    assert store.get("things", "b") == {"v": 3, "user_id": "u1"}
    store.set_many("things", {})
    # batch writes are visible to queries (and to the indexed fields of the local stores)
    assert ids_of(store.query("things", [Filter("user_id", "==", "u1")])) == ["u1"]


def ids_of(docs: list[dict[str, Any]]) -> list[str]:
    return [d["user_id"] for d in docs]


def test_create_many_and_set_many_inside_no_transaction_are_each_durable(
    store: StateStore,
) -> None:
    store.create_many("things", {"x": {"n": 1}})
    store.set_many("things", {"y": {"n": 2}})
    assert store.transaction(lambda tx: (tx.get("things", "x"), tx.get("things", "y"))) == (
        {"n": 1},
        {"n": 2},
    )


def test_create_many_of_many_documents_creates_each_absent_one_once(store: StateStore) -> None:
    store.set_many("things", {f"d{i:02d}": {"old": i} for i in range(0, 40, 2)})
    created = store.create_many("things", {f"d{i:02d}": {"new": i} for i in range(40)})
    assert created == {f"d{i:02d}" for i in range(1, 40, 2)}
    got = store.get_many("things", [f"d{i:02d}" for i in range(40)])
    assert got == {f"d{i:02d}": ({"old": i} if i % 2 == 0 else {"new": i}) for i in range(40)}
