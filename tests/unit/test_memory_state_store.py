"""MemoryStateStore specifics beyond the contract: it reads back what the SQLite store
reads back (values, types, key order) for generated documents, queries and writes."""

from __future__ import annotations

import functools
import json
from enum import Enum, IntEnum, StrEnum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prometheus_trader.adapters.embedded.local_transaction import ReadAfterWriteError
from prometheus_trader.adapters.embedded.memory_documents import normalize_value
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.sqlite_json import _dumps
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import AlreadyExists, Filter, StateStore, StateTransaction

pytestmark = pytest.mark.unit

HYPOTHESIS = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class Level(IntEnum):
    ONE = 1
    TWO = 2


class Mode(Enum):
    FAST = "fast"
    SLOW = 2.5


def _json_round_trip(value: object) -> object:
    return json.loads(_dumps(value))


def _outcome(fn: Any, value: object) -> tuple[str, str]:
    """repr tells 1 from 1.0 from True and shows key order; an error by its type."""
    try:
        return "ok", repr(fn(value))
    except (TypeError, ValueError) as exc:
        return "error", type(exc).__name__


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities included: refused by both
    | st.text(max_size=6)
    | st.sampled_from([Side.BUY, Side.SELL, Level.ONE, Level.TWO, Mode.FAST, Mode.SLOW])
)
keys = st.text(max_size=4) | st.integers(-3, 12) | st.sampled_from([True, None, 1.5, Side.BUY])
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=3)
    ),
    max_leaves=15,
)


@HYPOTHESIS
@given(value=values)
def test_normalized_values_equal_the_json_round_trip(value: object) -> None:
    assert _outcome(normalize_value, value) == _outcome(_json_round_trip, value)


def test_stored_documents_read_back_as_from_sqlite() -> None:
    doc = {"b": (1, Side.BUY), "a": {"z": Level.TWO, "y": Mode.SLOW}, "c": {10: 1.0, 9: None}}
    memory, sqlite = MemoryStateStore(), SqliteStateStore()
    for store in (memory, sqlite):
        store.set("c", "x", doc)
    got, want = memory.get("c", "x"), sqlite.get("c", "x")
    assert repr(got) == repr(want)
    assert list(got or {}) == ["a", "b", "c"]
    assert list((got or {})["c"]) == ["9", "10"]


# ------------------------------------------------------------ differential: same answers
FIELDS = ["user_id", "status", "active", "n", "tag", "nested.k", "missing"]
field_values = st.sampled_from(
    [None, True, False, 0, 1, 1.0, 2, -1.5, "", "a", "b", "open", "u1", [1], [1.0], {"k": 1}]
)


def _doc(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name in ("user_id", "status", "active", "n", "tag"):
        if draw(st.booleans()):
            doc[name] = draw(field_values)
    if draw(st.booleans()):
        doc["nested"] = {"k": draw(field_values)} if draw(st.booleans()) else draw(field_values)
    return doc


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    ops: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(5, 25))):
        doc_id = draw(st.sampled_from(["a", "b", "c", "d", "a/1", "é"]))
        kind = draw(st.sampled_from(["set", "create", "update", "delete", "tx", "tx-fail"]))
        if kind == "update":
            ops.append((kind, doc_id, {k: v for k, v in _doc(draw).items() if "." not in k}))
        elif kind == "delete":
            ops.append((kind, doc_id))
        else:
            ops.append((kind, doc_id, _doc(draw)))
    return ops


@st.composite
def queries(draw: st.DrawFn) -> tuple[list[Filter], str | None, bool, int | None]:
    filters: list[Filter] = []
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in"]))
        if op == "in":
            value: Any = draw(st.lists(field_values, max_size=3))
        elif op in ("==", "!="):
            value = draw(field_values)
        else:
            value = draw(st.sampled_from([True, 0, 1, 1.5, "a", "open"]))
        filters.append(Filter(draw(st.sampled_from(FIELDS)), op, value))  # type: ignore[arg-type]
    order_by = draw(st.none() | st.sampled_from(FIELDS))
    return filters, order_by, draw(st.booleans()), draw(st.none() | st.integers(0, 4))


def _apply(store: StateStore, op: tuple[Any, ...]) -> str:
    kind, doc_id = op[0], op[1]
    try:
        if kind == "set":
            store.set("t", doc_id, op[2])
        elif kind == "create":
            return repr(store.create("t", doc_id, op[2]))
        elif kind == "update":
            store.update("t", doc_id, op[2])
        elif kind == "delete":
            store.delete("t", doc_id)
        else:

            def fn(tx: StateTransaction) -> None:
                tx.get("t", doc_id)
                tx.set("t", doc_id, op[2])
                tx.update("t", doc_id, {"touched": True})
                if kind == "tx-fail":
                    raise RuntimeError("abort")

            store.transaction(fn)
    except (KeyError, RuntimeError, AlreadyExists) as exc:
        return type(exc).__name__
    return "ok"


def _ask(store: StateStore, question: tuple[Any, ...]) -> list[dict[str, Any]]:
    return store.query("t", *question)


@settings(HYPOTHESIS, max_examples=60)
@given(ops=operations(), asked=st.lists(queries(), min_size=4, max_size=8))
def test_same_answers_as_the_sqlite_store(
    ops: list[tuple[Any, ...]], asked: list[tuple[list[Filter], str | None, bool, int | None]]
) -> None:
    memory, sqlite = stores = MemoryStateStore(), SqliteStateStore()
    watches = [s.watch("t", [Filter("status", "==", "open")]) for s in stores]
    for op in ops:
        assert _apply(memory, op) == _apply(sqlite, op), op
    for question in asked:
        answers = [_outcome(functools.partial(_ask, question=question), s) for s in stores]
        assert answers[0] == answers[1], question
    for doc_id in ("a", "b", "c", "d", "a/1", "é"):
        assert repr(memory.get("t", doc_id)) == repr(sqlite.get("t", doc_id))
    # the change feed: the same batches (the complete result at watch time, then the
    # changes in the order of each document's last write)
    for _ in range(2):
        batches = [w.poll() for w in watches]
        assert repr(batches[0]) == repr(batches[1])


# ------------------------------------------------------------ transactions, watches
def test_read_after_write_in_transaction_refused() -> None:
    store = MemoryStateStore()

    def bad(tx: StateTransaction) -> None:
        tx.set("c", "a", {"v": 1})
        tx.get("c", "a")

    with pytest.raises(ReadAfterWriteError):
        store.transaction(bad)
    assert store.get("c", "a") is None


def test_transaction_handle_is_dead_after_commit() -> None:
    store = MemoryStateStore()
    handles: list[StateTransaction] = []
    store.transaction(handles.append)
    with pytest.raises(RuntimeError):
        handles[0].set("c", "a", {})
    assert store.get("c", "a") is None


def test_nested_transaction_refused() -> None:
    store = MemoryStateStore()
    with pytest.raises(RuntimeError, match="nested"):
        store.transaction(lambda tx: store.transaction(lambda inner: None))


def test_a_failed_transaction_restores_documents_and_indexes_and_announces_nothing() -> None:
    store = MemoryStateStore()
    store.set("p", "a", {"id": "a", "status": "open", "user_id": "u1"})
    watch = store.watch("p", [Filter("status", "==", "open")])
    assert [c.doc_id for c in watch.poll().changes] == ["a"]

    def fn(tx: StateTransaction) -> None:
        tx.update("p", "a", {"status": "closed", "user_id": "u2"})
        tx.set("p", "b", {"id": "b", "status": "open"})
        store.delete("p", "a")  # a store write inside the transaction is part of it
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        store.transaction(fn)
    assert store.get("p", "a") == {"id": "a", "status": "open", "user_id": "u1"}
    assert store.get("p", "b") is None
    assert [d["id"] for d in store.query("p", [Filter("status", "==", "open")])] == ["a"]
    assert store.query("p", [Filter("user_id", "==", "u2")]) == []
    assert [d["id"] for d in store.query("p", [Filter("user_id", "==", "u1")])] == ["a"]
    assert watch.poll().changes == []


def test_a_committed_transaction_is_announced_once_per_document_at_commit() -> None:
    store = MemoryStateStore()
    watch = store.watch("p", [Filter("status", "==", "open")])
    watch.poll()
    seen: list[int] = []

    def fn(tx: StateTransaction) -> None:
        tx.set("p", "a", {"status": "open", "v": 1})
        tx.update("p", "a", {"v": 2})
        tx.set("p", "b", {"status": "closed"})
        seen.append(len(watch.poll().changes))  # nothing committed yet

    store.transaction(fn)
    batch = watch.poll()
    assert seen == [0]
    assert [(c.doc_id, c.data) for c in batch.changes] == [
        ("a", {"status": "open", "v": 2}),
        ("b", None),
    ]


def test_index_follows_type_changes() -> None:
    store = MemoryStateStore()
    store.set("p", "a", {"active": True})
    store.set("p", "b", {"active": 1})
    store.update("p", "a", {"active": 1.0})
    assert [d for d in store.query("p", [Filter("active", "==", True)])] == []
    assert store.query("p", [Filter("active", "==", 1)]) == [{"active": 1.0}, {"active": 1}]
    store.update("p", "b", {"active": False})
    assert store.query("p", [Filter("active", "==", False)]) == [{"active": False}]


@pytest.mark.parametrize("data", [{"v": float("nan")}, {"v": object()}, {"v": {1: 1, "a": 2}}])
def test_non_json_documents_refused(data: dict[str, object]) -> None:
    store = MemoryStateStore()
    with pytest.raises((ValueError, TypeError)):
        store.set("c", "a", data)
    assert store.get("c", "a") is None


@pytest.mark.parametrize(
    "flt",
    [
        Filter("v", "<", None),
        Filter("v", ">", [1]),
        Filter("v", "in", "abc"),
        Filter("a..b", "==", 1),
        Filter("v", "~", 1),  # type: ignore[arg-type]
    ],
)
def test_unsupported_filters_refused_even_on_an_empty_collection(flt: Filter) -> None:
    with pytest.raises((TypeError, ValueError)):
        MemoryStateStore().query("c", [flt])


def test_version_counts_the_writes_of_each_collection() -> None:
    """``version``: the versions put per collection (writes, deletes, rollbacks), so a
    reader of some collections sees them unchanged while others are written."""
    store = MemoryStateStore()
    assert store.version("positions", "stats") == (0, 0)
    store.create("positions", "p1", {"id": "p1", "status": "open"})
    store.set("heartbeats", "w", {"at": 1})
    store.set("heartbeats", "w", {"at": 2})
    assert store.version("positions", "stats") == (1, 0)
    store.update("positions", "p1", {"status": "closed"})
    store.delete("positions", "p1")
    assert store.version("positions") == (3,)

    def fail(tx: StateTransaction) -> None:
        tx.set("stats", "s", {"n": 1})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.transaction(fail)
    assert store.get("stats", "s") is None
    assert store.version("stats") == (2,)  # the write and its rollback: a new version
    assert store.writes == 7


def test_a_watch_starts_from_the_indexed_candidates_in_id_order() -> None:
    """A watch's first result over an indexed equality filter is the query's answer."""
    store = MemoryStateStore()
    for i in (3, 1, 2, 5, 4):
        store.create("positions", f"p{i}", {"id": f"p{i}", "status": "open" if i % 2 else "x"})
    flt = [Filter("status", "==", "open")]
    first = store.watch("positions", flt).poll()
    assert first.complete
    assert [(c.doc_id, c.data) for c in first.changes] == [
        (d["id"], d) for d in store.query("positions", flt)
    ]
    assert [c.doc_id for c in first.changes] == ["p1", "p3", "p5"]
    assert store.watch("positions", [Filter("status", "==", "none")]).poll().changes == []
