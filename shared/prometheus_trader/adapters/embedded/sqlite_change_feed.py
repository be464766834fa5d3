"""The embedded store's change stream (``ChangeFeed``): a change log filled by triggers.

``watch(collection, filters)`` installs, once per database file, three triggers on the
``documents`` table for that collection. Each insert, replace, update or delete appends
``(seq, collection, id)`` to the ``changes`` table inside the writing statement's own
transaction, whichever process or connection writes, so a committed write is always in
the log and a rolled-back one never is. ``seq`` is ``AUTOINCREMENT``: strictly increasing,
never reused, without gaps from rollbacks.

A watch reads its whole result and the log's high-water mark in one transaction (the
first, complete batch). Each poll then reads the log past its mark and re-reads just
those documents with the query's own SQL filters, again in one read transaction; a
document that no longer matches (or is gone) comes back as a removal. When nothing
changed a poll is one indexed range read. The log keeps its last ``KEEP`` rows; a watch
whose mark fell behind the pruned part raises ``WatchLost`` (the caller watches again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_trader.adapters.embedded.sqlite_sql import _filter_sql
from prometheus_trader.ports import DocumentChange, Filter, WatchBatch, WatchLost

if TYPE_CHECKING:
    from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore

KEEP = 200_000  # log rows kept: a watch polled every few seconds is never this far behind
PRUNE_EVERY = 500  # polls between two prunes (per watch)
_CHUNK = 500  # ids per ``IN (...)`` re-read (well under SQLite's variable limit)

_LOG = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    id TEXT NOT NULL
)
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _triggers(collection: str) -> list[str]:
    """Triggers logging every write of ``collection`` (named by the collection's hex)."""
    name = "changes_" + collection.encode().hex()
    when = f"WHEN {{row}}.collection = {_literal(collection)}"
    log = "INSERT INTO changes (collection, id) VALUES ({row}.collection, {row}.id)"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {name}_{event.lower()} AFTER {event} ON documents "
        f"{when.format(row=row)} BEGIN {log.format(row=row)}; END"
        for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
    ]


class SqliteWatch:
    """``Watch`` on a ``SqliteStateStore``: see the module doc."""

    def __init__(self, store: SqliteStateStore, collection: str, filters: Sequence[Filter]) -> None:
        if not collection:
            raise ValueError("collection name must not be empty")
        self._store = store
        self._collection = collection
        self._filters = list(filters)
        where: list[str] = []
        params: list[object] = []
        for flt in self._filters:
            sql, flt_params = _filter_sql(flt)  # the store's own filter semantics
            where.append(sql)
            params.extend(flt_params)
        self._where = "".join(f" AND {w}" for w in where)
        self._params = params
        self._closed = False
        self._polls = 0
        conn, lock = store._conn, store._lock
        with lock:
            if store._in_transaction:
                raise RuntimeError("watch() inside a transaction")
            conn.execute("BEGIN IMMEDIATE")  # triggers, mark and result: one snapshot
            try:
                conn.execute(_LOG)
                for statement in _triggers(collection):
                    conn.execute(statement)
                self._mark = self._high_water()
                rows = conn.execute(
                    f"SELECT id, data FROM documents WHERE collection = ?{self._where} ORDER BY id",
                    [collection, *params],
                ).fetchall()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._first: WatchBatch | None = WatchBatch(
            complete=True, changes=[DocumentChange(i, json.loads(d)) for i, d in rows]
        )

    def _high_water(self) -> int:
        row = self._store._conn.execute("SELECT max(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    def poll(self) -> WatchBatch:
        """Changes since the previous poll (the first call: the complete result)."""
        if self._closed:
            raise WatchLost("watch is closed")
        if self._first is not None:
            first, self._first = self._first, None
            return first
        conn, lock = self._store._conn, self._store._lock
        with lock:
            conn.execute("BEGIN")
            try:
                lowest = conn.execute("SELECT min(seq) FROM changes").fetchone()[0]
                if lowest is not None and lowest > self._mark + 1:
                    raise WatchLost(f"change log pruned past {self._mark} (oldest {lowest})")
                logged = conn.execute(
                    "SELECT seq, id FROM changes WHERE seq > ? AND collection = ? ORDER BY seq",
                    (self._mark, self._collection),
                ).fetchall()
                top = self._high_water()
                # one entry per id, in the order of its last change
                order: dict[str, None] = {}
                for _, doc_id in logged:
                    order.pop(doc_id, None)
                    order[doc_id] = None
                current: dict[str, str] = {}
                ids = list(order)
                for at in range(0, len(ids), _CHUNK):
                    part = ids[at : at + _CHUNK]
                    marks = ",".join("?" * len(part))
                    current.update(
                        conn.execute(
                            "SELECT id, data FROM documents WHERE collection = ? "
                            f"AND id IN ({marks}){self._where}",
                            [self._collection, *part, *self._params],
                        ).fetchall()
                    )
            finally:
                conn.execute("COMMIT")
            self._mark = max(self._mark, top)
        self._polls += 1
        if self._polls % PRUNE_EVERY == 0:
            self._prune()
        return WatchBatch(
            complete=False,
            changes=[
                DocumentChange(i, json.loads(current[i]) if i in current else None) for i in ids
            ],
        )

    def _prune(self) -> None:
        """Drop log rows older than the last ``KEEP`` (any watch may do it)."""
        with self._store._lock:
            self._store._conn.execute(
                "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (KEEP,)
            )

    def close(self) -> None:
        """Stop following (the triggers stay: other watches may use them)."""
        self._closed = True


__all__ = ["KEEP", "SqliteWatch"]
