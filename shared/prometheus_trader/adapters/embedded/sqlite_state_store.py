"""Embedded ``StateStore``: JSON documents in one SQLite table (stdlib ``sqlite3``).

Semantics follow Firestore so that the same contract suite passes on both:

* filters compare values of the same kind only (numbers with numbers, strings with
  strings, ``True`` never equals ``1``); ``==``/``in`` against ``None`` match an explicit
  JSON null; ``!=`` matches documents where the field exists and differs;
* ``order_by`` drops documents that lack the field, orders values by type
  (null < false < true < numbers < strings < arrays < objects) then value, and breaks ties
  by document id in the same direction;
* ``update`` takes top-level field names only (Firestore reads a dot as a nested path);
* transactions do all reads before any write.

One connection guarded by a re-entrant lock serves every thread; writes outside a
transaction are single statements or short ``BEGIN IMMEDIATE`` blocks, so several
processes may share a file too.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from prometheus_trader.adapters import ClosesOnExit
from prometheus_trader.ports import AlreadyExists, Document, Filter, StateTransaction, Watch

T = TypeVar("T")

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


_CACHE_KIB = 64 * 1024  # page cache per connection (SQLite's default is 2 MiB)

# Firestore's cross-type ordering, used for order_by.
_TYPE_RANK_SQL = (
    "CASE json_type(data, ?) WHEN 'null' THEN 0 WHEN 'false' THEN 1 WHEN 'true' THEN 2 "
    "WHEN 'integer' THEN 3 WHEN 'real' THEN 3 WHEN 'text' THEN 4 WHEN 'array' THEN 5 "
    "ELSE 6 END"
)


class ReadAfterWriteError(RuntimeError):
    """A transaction read a document after writing (Firestore refuses this too)."""


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


def _check_ref(collection: str, doc_id: str) -> None:
    if not collection:
        raise ValueError("collection name must not be empty")
    if not doc_id:
        raise ValueError("document id must not be empty")


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


class TransactionBackend(Protocol):
    """What ``LocalTransaction`` needs of a store holding its transaction open."""

    def _get(self, collection: str, doc_id: str) -> Document | None: ...

    def _insert(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> bool: ...

    def _replace(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None: ...

    def _merge(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None: ...


class LocalTransaction:
    """``StateTransaction`` over a local store's open transaction (SQLite's ``BEGIN
    IMMEDIATE``, the memory store's lock): Firestore's rules, reads before writes."""

    def __init__(self, store: TransactionBackend) -> None:
        self._store = store
        self._wrote = False
        self._open = True
        # create() on an existing id must fail the commit even if fn swallowed the error.
        self.conflict: AlreadyExists | None = None

    def close(self) -> None:
        self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("transaction is finished")

    def get(self, collection: str, doc_id: str) -> Document | None:
        """Read a document (only before the first write)."""
        self._check_open()
        if self._wrote:
            raise ReadAfterWriteError("transactions must do all reads before any write")
        return self._store._get(collection, doc_id)

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create; raises AlreadyExists (and fails the transaction) if it exists."""
        self._check_open()
        self._wrote = True
        if not self._store._insert(collection, doc_id, data):
            self.conflict = AlreadyExists(f"{collection}/{doc_id} already exists")
            raise self.conflict

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create or replace."""
        self._check_open()
        self._wrote = True
        self._store._replace(collection, doc_id, data)

    def update(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        """Merge top-level fields into an existing document (KeyError if missing)."""
        self._check_open()
        self._wrote = True
        self._store._merge(collection, doc_id, changes)


class SqliteStateStore(ClosesOnExit):
    """``StateStore`` on SQLite; ``path`` is a file or ``":memory:"``."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.path = path
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._lock = threading.RLock()
        self._in_transaction = False
        with self._lock:
            if str(path) != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: durable against process crashes, no fsync per commit.
                self._conn.execute("PRAGMA synchronous=NORMAL")
            # the hot pages (indexes, recent documents) of a store of many users stay in
            # memory: the default 2 MiB cache made a 10,000-user fan-out re-read them from
            # the file (cost per decision rose with the number of users)
            self._conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            self._conn.execute("BEGIN IMMEDIATE")  # one process migrates a shared file
            try:
                self._conn.execute(_SCHEMA)
                self._migrate()
                for statement in _INDEXES.values():  # built once for a file, then kept
                    self._conn.execute(statement)
            except BaseException:
                self._rollback()
                raise
            self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Give a file from before the index columns its columns (filled from the
        documents) and drop its expression indexes (rebuilt on the columns)."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(documents)")}
        for name, column in zip(INDEXED_FIELDS, _COLUMNS, strict=True):
            if column in columns:
                continue
            path = _json_path(name)
            self._conn.execute(f"ALTER TABLE documents ADD COLUMN {column}")
            self._conn.execute(
                f"UPDATE documents SET {column} = CASE WHEN json_type(data, ?) "
                "IN ('integer', 'real', 'text', 'true', 'false') "
                "THEN json_extract(data, ?) END",
                (path, path),
            )
        for name, sql in self._conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'documents'"
        ).fetchall():
            if name in _INDEXES and "json_extract" in (sql or ""):
                self._conn.execute(f"DROP INDEX {name}")

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ primitives
    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _get(self, collection: str, doc_id: str) -> Document | None:
        _check_ref(collection, doc_id)
        row = self._conn.execute(
            "SELECT data FROM documents WHERE collection = ? AND id = ?", (collection, doc_id)
        ).fetchone()
        if row is None:
            return None
        return _decode_document(row[0])

    def _insert(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> bool:
        _check_ref(collection, doc_id)
        cursor = self._conn.execute(_INSERT_SQL, _row(collection, doc_id, data))
        return cursor.rowcount == 1

    def _replace(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        _check_ref(collection, doc_id)
        self._conn.execute(_REPLACE_SQL, _row(collection, doc_id, data))

    def _merge(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        dotted = sorted(k for k in changes if "." in k)
        if dotted:
            raise ValueError(f"update() takes top-level field names only, got {dotted}")
        current = self._get(collection, doc_id)
        if current is None:
            raise KeyError(f"{collection}/{doc_id}")
        current.update(changes)
        self._replace(collection, doc_id, current)

    # ------------------------------------------------------------------ the port
    def get(self, collection: str, doc_id: str) -> Document | None:
        """Read a document or None."""
        with self._lock:
            return self._get(collection, doc_id)

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> bool:
        """Create if absent. True if created, False if it already existed (untouched)."""
        with self._lock:
            return self._insert(collection, doc_id, data)

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create or replace."""
        with self._lock:
            self._replace(collection, doc_id, data)

    def update(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        """Merge top-level fields into an existing document (KeyError if missing)."""
        with self._lock:
            if self._in_transaction:
                self._merge(collection, doc_id, changes)
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._merge(collection, doc_id, changes)
            except BaseException:
                self._rollback()
                raise
            self._conn.execute("COMMIT")

    def delete(self, collection: str, doc_id: str) -> None:
        """Delete (no-op if missing)."""
        _check_ref(collection, doc_id)
        with self._lock:
            self._conn.execute(
                "DELETE FROM documents WHERE collection = ? AND id = ?", (collection, doc_id)
            )

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Document]:
        """Documents matching every filter; sorted by ``order_by`` then id."""
        if not collection:
            raise ValueError("collection name must not be empty")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        where = ["collection = ?"]
        params: list[object] = [collection]
        indexed = _index_sql(filters)
        table = "documents"
        if indexed is not None:
            table = f"documents INDEXED BY {indexed[0]}"
            where.append(indexed[1])
            params.extend(indexed[2])
        for flt in filters:
            if indexed is not None and flt is indexed[3]:
                continue
            sql, flt_params = _filter_sql(flt)
            where.append(sql)
            params.extend(flt_params)
        direction = "DESC" if descending else "ASC"
        order_sql = f"id {direction}"
        if order_by is not None:
            path = _json_path(order_by)
            where.append("json_type(data, ?) IS NOT NULL")
            params.append(path)
            order_sql = (
                f"{_TYPE_RANK_SQL} {direction}, json_extract(data, ?) {direction}, {order_sql}"
            )
            params.extend([path, path])
        sql = f"SELECT data FROM {table} WHERE {' AND '.join(where)} ORDER BY {order_sql}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_decode_document(row[0]) for row in rows]

    # ------------------------------------------------------------------ batches
    def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The documents of ``doc_ids`` that exist, by id (a few statements, not one per id)."""
        for doc_id in doc_ids:
            _check_ref(collection, doc_id)
        found: dict[str, Document] = {}
        with self._lock:
            for part in _chunks(list(dict.fromkeys(doc_ids))):
                sql = (
                    "SELECT id, data FROM documents WHERE collection = ? "
                    f"AND id IN ({', '.join('?' * len(part))})"
                )
                for doc_id, text in self._conn.execute(sql, (collection, *part)):
                    found[doc_id] = _decode_document(text)
        return found

    def _existing_ids(self, collection: str, doc_ids: list[str]) -> builtins.set[str]:
        existing: set[str] = set()
        for part in _chunks(doc_ids):
            sql = (
                "SELECT id FROM documents WHERE collection = ? "
                f"AND id IN ({', '.join('?' * len(part))})"
            )
            existing.update(row[0] for row in self._conn.execute(sql, (collection, *part)))
        return existing

    def _write_many(self, work: Callable[[], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` block (one commit for the batch), or
        inside the caller's open transaction."""
        with self._lock:
            if self._in_transaction:
                return work()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = work()
            except BaseException:
                self._rollback()
                raise
            self._conn.execute("COMMIT")
            return result

    def create_many(
        self, collection: str, docs: Mapping[str, Mapping[str, Any]]
    ) -> builtins.set[str]:
        """Create each document if absent, in one transaction; the ids created."""
        for doc_id in docs:
            _check_ref(collection, doc_id)
        rows = [_row(collection, doc_id, data) for doc_id, data in docs.items()]

        def work() -> builtins.set[str]:
            # read under the write lock (BEGIN IMMEDIATE): what is absent now is ours (a
            # savepoint around one INSERT, kept if it inserted every row, cost more: it
            # copies every page the insert changes into a statement journal)
            existing = self._existing_ids(collection, list(docs))
            self._conn.executemany(_INSERT_SQL, [r for r in rows if r[1] not in existing])
            return {doc_id for doc_id in docs if doc_id not in existing}

        return self._write_many(work)

    def set_many(self, collection: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Create or replace each document, in one transaction (one ``executemany``)."""
        for doc_id in docs:
            _check_ref(collection, doc_id)
        rows = [_row(collection, doc_id, data) for doc_id, data in docs.items()]

        def work() -> None:
            stored = self._index_values(collection, list(docs))
            same: list[tuple[object, ...]] = []
            other: list[tuple[object, ...]] = []
            for doc_id, row in zip(docs, rows, strict=True):
                (same if _same_values(stored.get(doc_id), row[3:]) else other).append(row)
            if same:
                self._conn.executemany(_UPDATE_DATA_SQL, [(r[2], r[0], r[1]) for r in same])
            if other:
                self._conn.executemany(_REPLACE_SQL, other)

        self._write_many(work)

    def _index_values(self, collection: str, doc_ids: list[str]) -> dict[str, tuple[object, ...]]:
        """The stored indexed-field columns of those of ``doc_ids`` that exist."""
        found: dict[str, tuple[object, ...]] = {}
        for part in _chunks(doc_ids):
            sql = f"{_INDEX_VALUES_SQL}({', '.join('?' * len(part))})"
            for row in self._conn.execute(sql, (collection, *part)):
                found[row[0]] = tuple(row[1:])
        return found

    def transaction(self, fn: Callable[[StateTransaction], T]) -> T:
        """Run ``fn`` atomically: on any exception nothing it wrote is kept."""
        with self._lock:
            if self._in_transaction:
                raise RuntimeError("nested transactions are not supported")
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
            tx = LocalTransaction(self)
            try:
                result = fn(tx)
                if tx.conflict is not None:
                    raise tx.conflict
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            finally:
                tx.close()
                self._in_transaction = False
            return result

    # ------------------------------------------------------------------ change feed
    def watch(self, collection: str, filters: Sequence[Filter] = ()) -> Watch:
        """Follow a query's result through the change log (``sqlite_change_feed``): the
        writes of every connection and process on this file are seen."""
        from prometheus_trader.adapters.embedded.sqlite_change_feed import SqliteWatch

        return SqliteWatch(self, collection, filters)
