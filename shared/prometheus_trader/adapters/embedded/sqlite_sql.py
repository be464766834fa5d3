"""The SQLite state store's schema and the SQL it builds: the indexed columns, the rows
written, and ``Filter`` / ``order_by`` as SQL with Firestore's typing rules (see the
semantics in sqlite_state_store.py's module doc).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from prometheus_trader.adapters.embedded.sqlite_json import _ENCODER, _dumps, _encode_document
from prometheus_trader.ports import Filter

# Equality filters on these top-level fields read the matching rows through an index on
# (collection, field) instead of json_extract over every document of the collection: the
# executor's "open positions of this user" would otherwise read every stored position
# once per user, a cost growing with the number of users. Most selective first: a query
# uses the index of its first indexed filter.
#
# The values live in plain columns (``f_<field>``) written with the document, from the
# Python value: SQLite 3.40 parses the whole JSON text once per json_extract, so
# expression indexes parsed every written document (4 KiB for an execution record) about
# ten times per write (twice per index for a replace). The indexes are partial
# (documents that have the field): a write touches only the index pages of the fields
# its document carries, and each page touched is a page written to the WAL at commit.
INDEXED_FIELDS = ("user_id", "symbol", "kind", "status", "active")
_COLUMNS = tuple(f"f_{name}" for name in INDEXED_FIELDS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    {", ".join(_COLUMNS)},
    PRIMARY KEY (collection, id)
) WITHOUT ROWID
"""
_INDEXES = {
    f"documents_{name}": (
        f"CREATE INDEX IF NOT EXISTS documents_{name} ON documents "
        f"(collection, f_{name}) WHERE f_{name} IS NOT NULL"
    )
    for name in INDEXED_FIELDS
}
_INTO = (
    f"INTO documents (collection, id, data, {', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (3 + len(_COLUMNS)))})"
)
_INSERT_SQL = f"INSERT OR IGNORE {_INTO}"
_REPLACE_SQL = f"INSERT OR REPLACE {_INTO}"
# a replace whose indexed fields keep their values: the document's text only (a REPLACE
# deletes and re-inserts the row's entry in every index: 3 times the pages written)
_UPDATE_DATA_SQL = "UPDATE documents SET data = ? WHERE collection = ? AND id = ?"
_INDEX_VALUES_SQL = (
    f"SELECT id, {', '.join(_COLUMNS)} FROM documents WHERE collection = ? AND id IN "
)
_INT64 = 2**63


def _index_value(value: object) -> object:
    """The column value of an indexed field: what json_extract would give for a scalar
    (true/false as 1/0), None (not indexed) for null, arrays and objects."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else float(value)
    if isinstance(value, float | str):
        return value
    return None


def _row(collection: str, doc_id: str, data: Mapping[str, Any]) -> tuple[object, ...]:
    text = _encode_document(data)
    get = data.get
    return (collection, doc_id, text, *[_index_value(get(f)) for f in INDEXED_FIELDS])


_CHUNK = 500  # ids per IN (...) list (well under SQLite's variable limit)


def _same_values(stored: tuple[object, ...] | None, new: tuple[object, ...]) -> bool:
    """The same indexed-column values, type for type (1 is not 1.0 in a column)."""
    return (
        stored is not None
        and stored == new
        and all(type(a) is type(b) for a, b in zip(stored, new, strict=True))
    )


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


# Firestore's cross-type ordering, used for order_by.
_TYPE_RANK_SQL = (
    "CASE json_type(data, ?) WHEN 'null' THEN 0 WHEN 'false' THEN 1 WHEN 'true' THEN 2 "
    "WHEN 'integer' THEN 3 WHEN 'real' THEN 3 WHEN 'text' THEN 4 WHEN 'array' THEN 5 "
    "ELSE 6 END"
)


def _json_path(field_path: str) -> str:
    """``a.b`` -> ``$."a"."b"`` (quoted so any character but ``"`` is allowed)."""
    parts = field_path.split(".")
    if not field_path or any(not p or '"' in p for p in parts):
        raise ValueError(f"invalid field path {field_path!r}")
    return "$" + "".join(f'."{p}"' for p in parts)


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _equals_sql(path: str, value: object) -> tuple[str, list[object]]:
    """SQL condition for ``field == value`` with Firestore typing rules."""
    value = _plain(value)
    if value is None:
        return "json_type(data, ?) = 'null'", [path]
    if isinstance(value, bool):
        return "json_type(data, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, int | float):
        return (
            "(json_type(data, ?) IN ('integer', 'real') AND json_extract(data, ?) = ?)",
            [path, path, value],
        )
    if isinstance(value, str):
        return "(json_type(data, ?) = 'text' AND json_extract(data, ?) = ?)", [path, path, value]
    if isinstance(value, list | tuple):
        return _nested_equals_sql(path, "array", list(value))
    if isinstance(value, Mapping):
        return _nested_equals_sql(path, "object", dict(value))
    raise TypeError(f"cannot compare with a value of type {type(value).__name__}")


def _nested_equals_sql(path: str, kind: str, value: object) -> tuple[str, list[object]]:
    """``field == [..]`` / ``{..}``: json_extract gives the nested value's text as stored,
    so it is compared with both spellings of ``value``: orjson's and the stdlib encoder's
    (documents written before orjson, and those it leaves to the stdlib)."""
    texts = list(dict.fromkeys([_dumps(value), _ENCODER.encode(value)]))
    marks = ", ".join("?" * len(texts))
    return (
        f"(json_type(data, ?) = '{kind}' AND json_extract(data, ?) IN ({marks}))",
        [path, path, *texts],
    )


def _range_sql(path: str, op: str, value: object) -> tuple[str, list[object]]:
    """SQL condition for ``<``, ``<=``, ``>``, ``>=``: only values of the same kind match."""
    value = _plain(value)
    if isinstance(value, bool):
        types = "('true', 'false')"
    elif isinstance(value, int | float):
        types = "('integer', 'real')"
    elif isinstance(value, str):
        types = "('text')"
    else:
        raise TypeError(f"range filter {op!r} needs a number, string or bool, not {value!r}")
    return (
        f"(json_type(data, ?) IN {types} AND json_extract(data, ?) {op} ?)",
        [path, path, value],
    )


def _index_sql(
    filters: Sequence[Filter],
) -> tuple[str, str, list[object], Filter | None] | None:
    """(index name, condition, params, covered filter) for the most selective indexable
    ``==`` filter, or an ``in`` over strings (the batched executor's "these users").

    An ``==`` filter's own (typed) condition still applies; this one only lets SQLite read
    the matching rows through the index (the expression must be spelled as in the index,
    and the index is named: without statistics SQLite prefers the primary key). An ``in``
    over strings is exact on the column (it holds JSON text as TEXT, and TEXT never
    equals a number there), so it is the whole condition (the covered filter): its typed
    form would parse the document once per listed value.
    """
    for name in INDEXED_FIELDS:
        for flt in filters:
            values = flt.value
            if (
                flt.field == name
                and flt.op == "in"
                and isinstance(values, list | tuple)
                and values
                and all(type(v) is str for v in values)
            ):
                marks = ", ".join("?" * len(values))
                return f"documents_{name}", f"f_{name} IN ({marks})", list(values), flt
            if flt.field != name or flt.op != "==":
                continue
            value = _plain(flt.value)
            if isinstance(value, bool):
                value = int(value)  # json_extract gives 1/0 for true/false
            elif not isinstance(value, int | float | str):
                continue
            return f"documents_{name}", f"f_{name} = ?", [value], None
    return None


def _filter_sql(flt: Filter) -> tuple[str, list[object]]:
    path = _json_path(flt.field)
    if flt.op == "==":
        return _equals_sql(path, flt.value)
    if flt.op == "!=":
        sql, params = _equals_sql(path, flt.value)
        return f"(json_type(data, ?) IS NOT NULL AND NOT {sql})", [path, *params]
    if flt.op in ("<", "<=", ">", ">="):
        return _range_sql(path, flt.op, flt.value)
    if flt.op == "in":
        if isinstance(flt.value, str | bytes | Mapping) or not isinstance(flt.value, Sequence):
            raise TypeError(f"'in' needs a list of values, not {flt.value!r}")
        if not flt.value:
            return "0", []
        parts = [_equals_sql(path, v) for v in flt.value]
        return (
            "(" + " OR ".join(sql for sql, _ in parts) + ")",
            [p for _, params in parts for p in params],
        )
    raise ValueError(f"unknown filter operator {flt.op!r}")
