"""The SQLite store's expression indexes: equality filters on hot fields read only the
matching rows (the contract suite proves the results; these prove the plan and typing)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.sqlite_sql import _index_sql
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import Filter

pytestmark = pytest.mark.unit


def _ids(store: SqliteStateStore, *filters: Filter) -> list[str]:
    return [d["id"] for d in store.query("positions", list(filters))]


def test_indexed_filters_keep_firestore_typing() -> None:
    store = SqliteStateStore()
    for i in range(6):
        store.create(
            "positions", f"p{i}", {"id": f"p{i}", "user_id": f"u{i % 2}", "status": "open"}
        )
    store.create("positions", "t", {"id": "t", "user_id": 1, "status": True})
    store.create("positions", "n", {"id": "n", "user_id": "1", "status": 1})
    store.update("positions", "p2", {"status": "closed"})
    assert _ids(store, Filter("user_id", "==", "u0"), Filter("status", "==", "open")) == [
        "p0",
        "p4",
    ]
    assert _ids(store, Filter("status", "==", True)) == ["t"]  # true never equals 1
    assert _ids(store, Filter("status", "==", 1)) == ["n"]
    assert _ids(store, Filter("user_id", "==", 1)) == ["t"]
    assert _ids(store, Filter("user_id", "==", "1")) == ["n"]


def test_the_most_selective_index_is_used() -> None:
    store = SqliteStateStore()
    filters = [Filter("status", "==", "open"), Filter("user_id", "==", "u")]
    indexed = _index_sql(filters)
    assert indexed is not None and indexed[0] == "documents_user_id"
    plan = store._conn.execute(
        f"EXPLAIN QUERY PLAN SELECT data FROM documents INDEXED BY {indexed[0]} "
        f"WHERE collection = ? AND {indexed[1]}",
        ["positions", *indexed[2]],
    ).fetchall()
    assert any("documents_user_id" in str(row) for row in plan)
    assert _index_sql([Filter("user_id", "in", [1]), Filter("x", "==", 1)]) is None


def test_an_in_over_strings_reads_through_the_index_with_firestore_typing() -> None:
    store = SqliteStateStore()
    store.set("positions", "a", {"id": "a", "user_id": "u1", "status": "open"})
    store.set("positions", "b", {"id": "b", "user_id": "u2", "status": "open"})
    store.set(
        "positions", "c", {"id": "c", "user_id": 1, "status": "open"}
    )  # a number never matches
    store.set("positions", "d", {"id": "d", "user_id": "u1", "status": "closed"})
    store.set("positions", "e", {"id": "e", "user_id": ["u1"], "status": "open"})  # nor an array
    flt = Filter("user_id", "in", ["u1", "1", "u3"])
    indexed = _index_sql([Filter("status", "==", "open"), flt])
    assert indexed is not None and indexed[0] == "documents_user_id" and indexed[3] is flt
    assert _ids(store, flt, Filter("status", "==", "open")) == ["a"]
    assert _ids(store, Filter("user_id", "in", ["u1", "u2"])) == ["a", "b", "d"]


def test_a_file_from_before_the_indexes_gets_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE documents (collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,"
        " PRIMARY KEY (collection, id)) WITHOUT ROWID"
    )
    doc = {"id": "p", "user_id": "u", "status": "open"}
    conn.execute("INSERT INTO documents VALUES ('positions', 'p', ?)", (json.dumps(doc),))
    conn.commit()
    conn.close()
    with SqliteStateStore(path) as store:
        assert _ids(store, Filter("user_id", "==", "u")) == ["p"]
        names = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master")}
        assert "documents_user_id" in names


def test_a_file_with_expression_indexes_moves_to_index_columns(tmp_path: Path) -> None:
    path = tmp_path / "expr.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE documents (collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,"
        " PRIMARY KEY (collection, id)) WITHOUT ROWID"
    )
    conn.execute(
        "CREATE INDEX documents_status ON documents"
        " (collection, json_extract(data, '$.\"status\"'))"
    )
    docs = {
        "a": {"id": "a", "status": True, "user_id": {"nested": 1}},
        "b": {"id": "b", "status": 1, "user_id": "u"},
        "c": {"id": "c", "status": None},
    }
    for doc_id, doc in docs.items():
        conn.execute("INSERT INTO documents VALUES ('positions', ?, ?)", (doc_id, json.dumps(doc)))
    conn.commit()
    conn.close()
    with SqliteStateStore(path) as store:
        rows = store._conn.execute(
            "SELECT id, f_status, f_user_id FROM documents ORDER BY id"
        ).fetchall()
        assert rows == [("a", 1, None), ("b", 1, "u"), ("c", None, None)]
        sql = store._conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'documents_status'"
        ).fetchone()[0]
        assert "json_extract" not in sql and "f_status" in sql
        assert _ids(store, Filter("status", "==", True)) == ["a"]
        assert _ids(store, Filter("status", "==", 1)) == ["b"]
        assert _ids(store, Filter("user_id", "==", "u")) == ["b"]
        store.set("positions", "d", {"id": "d", "status": True, "user_id": "u"})
        assert _ids(store, Filter("status", "==", True), Filter("user_id", "==", "u")) == ["d"]
    with SqliteStateStore(path) as again:  # a second open changes nothing
        assert _ids(again, Filter("status", "==", True)) == ["a", "d"]
