"""The SQLite store's JSON: orjson for plain documents, the stdlib encoder for the rest,
with the same values read back and the same refusals as the stdlib encoder alone."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_trader.adapters.embedded.sqlite_json import (
    _ENCODER,
    _decode_document,
    _dumps,
    _encode_document,
)
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.market import Side
from prometheus_trader.ports import Filter

pytestmark = pytest.mark.unit

HYPOTHESIS = settings(max_examples=300, derandomize=True, database=None, deadline=None)


class Level(Enum):
    ONE = 1


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities included: refused by both
    | st.floats(min_value=-1e-3, max_value=1e-3)  # orjson spells these differently
    | st.text(max_size=6)
    | st.sampled_from(["é", "\u2028", "\ud800", 'a"b\\', "\x00"])
    | st.sampled_from([Side.BUY, Level.ONE])
)
keys = st.text(max_size=4) | st.integers(-3, 12) | st.sampled_from([True, None, 1.5])
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=3)
    ),
    max_leaves=12,
)


def _outcome(fn: Any, value: object) -> tuple[str, str]:
    """repr tells 1 from 1.0 from True and shows key order; an error by its type."""
    try:
        return "ok", repr(fn(value))
    except (TypeError, ValueError) as exc:
        return "error", type(exc).__name__


@HYPOTHESIS
@given(value=values)
def test_values_read_back_as_with_the_stdlib_encoder(value: object) -> None:
    want = _outcome(lambda v: json.loads(_ENCODER.encode(v)), value)
    assert _outcome(lambda v: json.loads(_dumps(v)), value) == want
    doc = {"v": value}
    assert _outcome(lambda v: _decode_document(_encode_document(v)), doc) == _outcome(
        lambda v: json.loads(_ENCODER.encode(v)), doc
    )


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        [float("-inf")],
        uuid.UUID(int=1),  # orjson would write these three
        datetime(2025, 1, 1, tzinfo=UTC),
        {"d": {"x": (1, uuid.UUID(int=2))}},
        object(),
    ],
)
def test_what_the_stdlib_refuses_is_refused(tmp_path: Path, value: object) -> None:
    store = SqliteStateStore(tmp_path / "s.sqlite")
    for write in (
        lambda: store.set("c", "a", {"v": value}),
        lambda: store.create("c", "a", {"v": value}),
        lambda: store.set_many("c", {"a": {"v": value}}),
        lambda: store.create_many("c", {"a": {"v": value}}),
    ):
        with pytest.raises((TypeError, ValueError)):
            write()
    assert store.get("c", "a") is None


def test_integers_beyond_64_bits_round_trip(tmp_path: Path) -> None:
    doc = {"big": 2**64, "small": -(2**70), "list": [2**65, 1.5e-7]}
    with SqliteStateStore(tmp_path / "s.sqlite") as store:
        store.set("c", "a", doc)
        store.create_many("c", {"b": doc})
    with SqliteStateStore(tmp_path / "s.sqlite") as store:
        for got in (store.get("c", "a"), store.get_many("c", ["b"])["b"], *store.query("c")):
            assert got == doc
            assert type(got["big"]) is int  # type: ignore[index]


def test_text_written_by_the_stdlib_encoder_reads_back(tmp_path: Path) -> None:
    """Files written before orjson: escapes (a lone surrogate too) and 1e-05 floats."""
    doc = {"a": "\ud800é", "f": 1e-05, "n": None, "z": [1, {"k": 2.5}]}
    with SqliteStateStore(tmp_path / "s.sqlite") as store:
        store._conn.execute(
            "INSERT INTO documents (collection, id, data) VALUES ('c', 'a', ?)",
            (json.dumps(doc, sort_keys=True, separators=(",", ":")),),
        )
        assert store.get("c", "a") == doc
        assert store.query("c") == [doc]


def test_orjson_text_is_the_stdlib_text_but_for_spelling(tmp_path: Path) -> None:
    """Sorted keys, compact separators; only small floats and non-ASCII differ."""
    doc = {"b": [1, 2.5, True, None], "a": {"é": 1e-05, "y": "x"}}
    text = _encode_document(doc)
    assert text == '{"a":{"y":"x","é":0.00001},"b":[1,2.5,true,null]}'
    assert json.loads(text) == json.loads(_ENCODER.encode(doc))


def test_nested_equality_matches_both_spellings(tmp_path: Path) -> None:
    """An equality filter on a nested value finds it however its text was spelled: by
    orjson, or by the stdlib encoder (files written before; enums left to the stdlib)."""
    value = {"k": [1e-05, "é"], "n": 2}
    with SqliteStateStore(tmp_path / "s.sqlite") as store:
        store._conn.execute(
            "INSERT INTO documents (collection, id, data) VALUES ('c', 'old', ?)",
            (json.dumps({"v": value, "w": [1e-07]}, sort_keys=True, separators=(",", ":")),),
        )
        store.set("c", "new", {"v": value, "w": [1e-07]})
        store.set("c", "enum", {"v": value, "w": [1e-07], "side": Side.BUY})
        assert (
            '"side":"buy"'
            in store._conn.execute("SELECT data FROM documents WHERE id = 'enum'").fetchone()[0]
        )
        for flt in (Filter("v", "==", value), Filter("w", "==", [1e-07])):
            assert [d.get("side") for d in store.query("c", [flt])] == ["buy", None, None]
        assert store.query("c", [Filter("v", "!=", value)]) == []
        assert len(store.query("c", [Filter("v", "in", [value, [1]])])) == 3
        assert store.query("c", [Filter("v", "==", {"k": [1e-05, "e"], "n": 2})]) == []
