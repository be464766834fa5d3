"""SQLite state store specifics beyond the contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.local_transaction import ReadAfterWriteError
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import Filter, StateTransaction

pytestmark = pytest.mark.unit


def test_documents_persist_across_reopen(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path / "db" / "state.sqlite") as store:
        store.set("c", "a", {"v": 1})
    with SqliteStateStore(tmp_path / "db" / "state.sqlite") as store:
        assert store.get("c", "a") == {"v": 1}


def test_read_after_write_in_transaction_refused() -> None:
    store = SqliteStateStore()

    def bad(tx: StateTransaction) -> None:
        tx.set("c", "a", {"v": 1})
        tx.get("c", "a")

    with pytest.raises(ReadAfterWriteError):
        store.transaction(bad)
    assert store.get("c", "a") is None


def test_transaction_handle_is_dead_after_commit() -> None:
    store = SqliteStateStore()
    handles: list[StateTransaction] = []
    store.transaction(handles.append)
    with pytest.raises(RuntimeError):
        handles[0].set("c", "a", {})
    assert store.get("c", "a") is None


def test_nested_transaction_refused() -> None:
    store = SqliteStateStore()
    with pytest.raises(RuntimeError, match="nested"):
        store.transaction(lambda tx: store.transaction(lambda inner: None))


def test_store_writes_inside_transaction_roll_back_with_it() -> None:
    store = SqliteStateStore()

    def fn(tx: StateTransaction) -> None:
        store.set("c", "side", {"v": 1})
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        store.transaction(fn)
    assert store.get("c", "side") is None


def test_update_with_dotted_field_refused() -> None:
    store = SqliteStateStore()
    store.set("c", "a", {"p": {"q": 1}})
    with pytest.raises(ValueError):
        store.update("c", "a", {"p.q": 2})
    assert store.get("c", "a") == {"p": {"q": 1}}


@pytest.mark.parametrize("data", [{"v": float("nan")}, {"v": object()}])
def test_non_json_documents_refused(data: dict[str, object]) -> None:
    store = SqliteStateStore()
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
    ],
)
def test_unsupported_filters_refused(flt: Filter) -> None:
    with pytest.raises((TypeError, ValueError)):
        SqliteStateStore().query("c", [flt])


def test_stored_json_is_canonical(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.sqlite")
    store.set("c", "a", {"b": 1, "a": [1, {"z": 1, "y": 2}]})
    row = store._conn.execute("SELECT data FROM documents").fetchone()
    assert row[0] == '{"a":[1,{"y":2,"z":1}],"b":1}'


def test_set_many_keeps_the_indexed_columns_equal_to_the_documents(tmp_path: Path) -> None:
    """set_many writes only the text when the indexed fields keep their values (type
    included), and replaces the row when one changes, appears or goes."""
    store = SqliteStateStore(tmp_path / "s.sqlite")
    store.set_many(
        "p",
        {
            "a": {"user_id": "u1", "status": "open", "n": 1},
            "b": {"user_id": "u2", "status": "open"},
            "c": {"user_id": "u3", "active": True},
            "d": {"user_id": "u4", "kind": 1},
        },
    )
    store.set_many(
        "p",
        {
            "a": {"user_id": "u1", "status": "open", "n": 2},  # same columns: text only
            "b": {"user_id": "u2", "status": "closed"},  # a changed value
            "c": {"user_id": "u3"},  # a field gone
            "d": {"user_id": "u4", "kind": 1.0},  # 1 -> 1.0: another JSON type
            "e": {"user_id": "u5", "status": "open"},  # new
        },
    )
    columns = dict(
        (row[0], row[1:])
        for row in store._conn.execute(
            "SELECT id, f_user_id, f_symbol, f_kind, f_status, f_active FROM documents"
        )
    )
    assert columns == {
        "a": ("u1", None, None, "open", None),
        "b": ("u2", None, None, "closed", None),
        "c": ("u3", None, None, None, None),
        "d": ("u4", None, 1.0, None, None),
        "e": ("u5", None, None, "open", None),
    }
    assert type(columns["d"][2]) is float
    assert store.get("p", "a") == {"user_id": "u1", "status": "open", "n": 2}
    open_ids = [d["user_id"] for d in store.query("p", [Filter("status", "==", "open")])]
    assert open_ids == ["u1", "u5"]
    assert store.query("p", [Filter("active", "==", True)]) == []


def test_create_many_with_some_existing_creates_only_the_absent(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.sqlite")
    store.set("c", "b", {"v": "old"})
    created = store.create_many("c", {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}})
    assert created == {"a", "c"}
    assert store.get_many("c", ["a", "b", "c"]) == {"a": {"v": 1}, "b": {"v": "old"}, "c": {"v": 3}}

    def in_transaction(tx: StateTransaction) -> set[str]:
        return store.create_many("c", {"b": {"v": 4}, "d": {"v": 5}})

    assert store.transaction(in_transaction) == {"d"}
    assert store.get("c", "b") == {"v": "old"}
    assert store.get("c", "d") == {"v": 5}
