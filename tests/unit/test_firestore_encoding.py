"""Pure encoding rules of the Firestore state store (no emulator)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_trader.adapters.gcp.firestore_state_store import (
    _decode_document,
    _encode_document,
    decode_id,
    encode_id,
)

pytestmark = pytest.mark.unit

HYPOTHESIS = settings(max_examples=300, derandomize=True, database=None)
# ids the port allows (Firestore's own reserved names aside)
port_ids = st.text(alphabet=st.sampled_from("./~-_%aAz09é"), min_size=1, max_size=8).filter(
    lambda s: s != "." and not (s.startswith("__") and s.endswith("__") and len(s) >= 4)
)


@HYPOTHESIS
@given(doc_id=port_ids)
def test_ids_round_trip_without_slashes(doc_id: str) -> None:
    encoded = encode_id(doc_id)
    assert "/" not in encoded
    assert decode_id(encoded) == doc_id


@HYPOTHESIS
@given(a=port_ids, b=port_ids)
def test_id_encoding_preserves_order(a: str, b: str) -> None:
    # Firestore sorts by the stored id: the port's id order must survive the encoding
    assert (encode_id(a) < encode_id(b)) == (a < b)


@pytest.mark.parametrize("doc_id", ["", ".", "__x__", "__.__"])
def test_ids_firestore_cannot_hold_are_refused(doc_id: str) -> None:
    with pytest.raises(ValueError):
        encode_id(doc_id)


@pytest.mark.parametrize(
    ("doc", "stored"),
    [
        ({"": 1, "__x__": 2, "~y": 3, "__": 4}, {"~": 1, "~__x__": 2, "~~y": 3, "__": 4}),
        ({"v": [[1, 2], [], 3]}, {"v": [{"~a": [1, 2]}, {"~a": []}, 3]}),
        ({"v": [[[1]]]}, {"v": [{"~a": [{"~a": [1]}]}]}),
        ({"user_id": "u", "nested": {"a.b": None}}, {"user_id": "u", "nested": {"a.b": None}}),
    ],
)
def test_documents_are_escaped_only_where_firestore_needs_it(
    doc: dict[str, Any], stored: dict[str, Any]
) -> None:
    assert _encode_document(doc) == stored
    assert _decode_document(stored) == doc


@pytest.mark.parametrize("bad", [{"v": float("nan")}, {"v": float("inf")}])
def test_non_json_floats_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _encode_document(bad)


@pytest.mark.parametrize("bad", [{"v": b"x"}, {"v": {1: "a"}}, {"v": object()}])
def test_non_json_values_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        _encode_document(bad)


def test_decoded_documents_have_sorted_keys() -> None:
    # the embedded store returns canonical (sorted) JSON: same key order here
    assert list(_decode_document({"b": 1, "~": 2, "a": {"z": 1, "y": 2}})) == ["", "a", "b"]
