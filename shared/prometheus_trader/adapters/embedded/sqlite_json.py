"""The SQLite state store's document text: one canonical JSON spelling per document.

Used by ``SqliteStateStore`` (sqlite_state_store.py), its SQL (sqlite_sql.py) and the
memory store's document helpers (memory_documents.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from typing import Any

import orjson

from prometheus_trader.ports import Document


def _json_default(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"value of type {type(value).__name__} is not JSON-compatible")


# sort_keys + compact separators: one canonical text per document, which also makes
# equality on nested arrays/objects a plain text comparison. One encoder for every call
# (json.dumps with options builds a new one each time).
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default
)
# orjson writes the same documents 5-10x faster. Its text differs from the stdlib's only in
# how it spells a value, never in the value: floats below 1e-4 positionally (0.00001, not
# 1e-05) and non-ASCII characters as UTF-8 (not \uXXXX escapes). It is used only for
# plain JSON values (``_plain_json``): NaN and infinities (orjson writes null), enums, other
# types and non-str keys go to the stdlib encoder, which refuses or encodes them as
# before; so do integers beyond 64 bits and lone surrogates (orjson refuses them).
_ORJSON = orjson.OPT_SORT_KEYS
_LEAVES = frozenset({str, int, bool, type(None)})
# the stdlib's text starts with this: read back by the stdlib decoder (orjson would read
# an integer beyond 64 bits as a float)
_STDLIB_MARK = " "


def _plain_json(value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> bool:
    """Only str keys, finite floats and JSON's own types, all the way down."""
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                return False
        items: Any = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is float:
            if item - item != 0.0:  # NaN or infinity (inf - inf is NaN)
                return False
        elif kind is dict or kind is list or kind is tuple:
            if not _plain_json(item):
                return False
        else:
            return False
    return True


def _fast_dumps(value: dict[Any, Any] | list[Any]) -> str | None:
    """orjson's text of a plain value, else None."""
    if not _plain_json(value):
        return None
    try:
        return orjson.dumps(value, option=_ORJSON).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate
        return None


def _dumps(value: object) -> str:
    if type(value) is dict or type(value) is list:
        text = _fast_dumps(value)
        if text is not None:
            return text
    return _ENCODER.encode(value)


def _encode_document(data: Mapping[str, Any]) -> str:
    if not isinstance(data, Mapping):
        raise TypeError(f"a document must be a mapping, not {type(data).__name__}")
    if type(data) is not dict:
        data = dict(data)
    text = _fast_dumps(data)
    if text is not None:
        return text
    return _STDLIB_MARK + _ENCODER.encode(data)


def _decode_document(text: str) -> Document:
    if not text.startswith(_STDLIB_MARK):
        try:
            doc: Document = orjson.loads(text)
            return doc
        except orjson.JSONDecodeError:  # written before orjson: lone surrogates escaped
            pass
    stdlib: Document = json.loads(text)
    return stdlib
