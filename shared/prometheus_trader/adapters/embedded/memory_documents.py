"""Documents as the SQLite store reads them back, without the JSON text in between.

``normalize_value(v)`` equals ``json.loads(canonical JSON of v)`` (the SQLite store's
encoder: sorted keys, enums as values, no NaN or infinity), key order included, and fails
where that encoder fails (``TypeError`` / ``ValueError``); a unit test compares the two on
generated values. The helpers after it read stored (normalized) documents with the SQLite
store's query semantics: field paths, Firestore typing, the cross-type order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from prometheus_trader.adapters.embedded.sqlite_json import _dumps
from prometheus_trader.ports import Document


class _Missing:
    """A field that is not in the document (unlike an explicit null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_BOOL = _Missing()  # tags bools in index keys: True == 1 in Python, not in Firestore


def _finite(value: float) -> float:
    if value - value != 0.0:  # NaN or infinity (inf - inf is NaN)
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return value


def _key(key: object) -> str:
    """A dict key as the JSON encoder writes it."""
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, float):
        return float.__repr__(_finite(key))
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _normalize_dict(data: Mapping[Any, Any]) -> Document:
    out: Document = {}
    # sorted before the keys are converted, as the encoder's sort_keys (mixed key types
    # raise TypeError there too)
    for key in sorted(data):
        value = data[key]
        kind = type(value)
        if kind is float:
            _finite(value)
        elif not (kind is str or kind is int or kind is bool or value is None):
            value = normalize_value(value)
        out[key if type(key) is str else _key(key)] = value
    return out


def normalize_value(value: Any) -> Any:
    """``json.loads(_dumps(value))`` built directly (a fresh tree; scalars shared)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return _finite(value)
    if kind is dict:
        return _normalize_dict(value)
    if kind is list or kind is tuple:
        return [normalize_value(v) for v in value]
    # subclasses, in the encoder's order: str, int, float, list/tuple, dict, then enums
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _finite(float(value))
    if isinstance(value, list | tuple):
        return [normalize_value(v) for v in value]
    if isinstance(value, dict):
        return _normalize_dict(value)
    if isinstance(value, Enum):
        return normalize_value(value.value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON-compatible")


def normalize_document(data: Mapping[str, Any]) -> Document:
    """A document as stored: ``normalize_value`` of a mapping."""
    if not isinstance(data, Mapping):
        raise TypeError(f"a document must be a mapping, not {type(data).__name__}")
    return _normalize_dict(data)


def canonical_text(value: object) -> str:
    """The SQLite store's JSON text of a value (equality of arrays and objects)."""
    return _dumps(value)


def field_getter(field_path: str) -> Callable[[Document], Any]:
    """A reader of ``a.b`` in a stored document (``MISSING`` when absent)."""
    parts = field_path.split(".")
    if not field_path or any(not p or '"' in p for p in parts):
        raise ValueError(f"invalid field path {field_path!r}")
    if len(parts) == 1:
        name = parts[0]
        return lambda doc: doc.get(name, MISSING)

    def get(doc: Document) -> Any:
        value: Any = doc
        for part in parts:
            if type(value) is not dict:
                return MISSING
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        return value

    return get


def index_key(value: object) -> object:
    """A hashable key equal for values Firestore calls equal (strings, numbers, bools:
    ``1 == 1.0`` but ``True != 1``); None for anything else (not indexed)."""
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value
    if kind is bool:
        return (_BOOL, value)
    return None


_RANK_NULL, _RANK_FALSE, _RANK_TRUE, _RANK_NUMBER, _RANK_TEXT = 0, 1, 2, 3, 4
_RANK_ARRAY, _RANK_OBJECT = 5, 6


def order_key(value: object) -> tuple[int, Any]:
    """Firestore's cross-type order (null < false < true < numbers < strings < arrays <
    objects), then the value; arrays and objects by their JSON text (as the SQLite store)."""
    kind = type(value)
    if kind is int or kind is float:
        return _RANK_NUMBER, value
    if kind is str:
        return _RANK_TEXT, value
    if value is None:
        return _RANK_NULL, 0
    if value is False:
        return _RANK_FALSE, 0
    if value is True:
        return _RANK_TRUE, 0
    if kind is list:
        return _RANK_ARRAY, _dumps(value)
    return _RANK_OBJECT, _dumps(value)


__all__ = [
    "MISSING",
    "canonical_text",
    "field_getter",
    "index_key",
    "normalize_document",
    "normalize_value",
    "order_key",
]
