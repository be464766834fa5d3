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
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prometheus_trader.adapters import ClosesOnExit
from prometheus_trader.adapters.embedded.local_transaction import LocalTransaction
from prometheus_trader.adapters.embedded.sqlite_json import _decode_document
from prometheus_trader.adapters.embedded.sqlite_sql import (
    _COLUMNS,
    _INDEX_VALUES_SQL,
    _INDEXES,
    _INSERT_SQL,
    _REPLACE_SQL,
    _SCHEMA,
    _TYPE_RANK_SQL,
    _UPDATE_DATA_SQL,
    INDEXED_FIELDS,
    _chunks,
    _filter_sql,
    _index_sql,
    _json_path,
    _row,
    _same_values,
)
from prometheus_trader.ports import Document, Filter, StateTransaction, Watch

T = TypeVar("T")

_CACHE_KIB = 64 * 1024  # page cache per connection (SQLite's default is 2 MiB)


def _check_ref(collection: str, doc_id: str) -> None:
    if not collection:
        raise ValueError("collection name must not be empty")
    if not doc_id:
        raise ValueError("document id must not be empty")


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
