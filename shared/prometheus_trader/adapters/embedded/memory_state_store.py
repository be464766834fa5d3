"""``StateStore`` and ``ChangeFeed`` in this process's memory: dicts, no SQL, no JSON text.

For the backtest's private documents (the use-cases' and the paper ledger's): one process
owns the store, nothing else reads it, and nothing survives the process. It is **not** for
shared state: another process (or another store instance) never sees its writes; use
``SqliteStateStore`` (a file) or Firestore for that.

The semantics are ``SqliteStateStore``'s, so the same contract suite passes on it (see
that module's doc: Firestore typing in filters, ``order_by`` by type then value then id,
top-level ``update``, reads before writes in transactions). What it does instead:

* a write stores the document as the SQLite store would read it back: a fresh tree of
  dicts and lists with every dict's keys sorted, enums as their values, tuples as lists
  (``json.loads`` of the canonical JSON text, built directly: ``memory_documents``),
  together with its ``marshal`` bytes; a read returns ``marshal.loads`` of those bytes
  (a private copy, two to three times cheaper than parsing JSON). Stored trees are never
  mutated: a new version replaces them whole, so an update shares untouched values;
* equality filters on the SQLite store's indexed fields read the matching ids from a
  dict of id sets instead of scanning the collection;
* a transaction holds the store's lock, applies its writes at once and keeps an undo
  list, replayed backwards when it fails;
* a watch keeps the ids written since its last poll (committed writes only) and answers
  a poll with their current documents, as the SQLite change log does.
"""

from __future__ import annotations

import builtins
import marshal
import operator
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from prometheus_trader.adapters import ClosesOnExit
from prometheus_trader.adapters.embedded.local_transaction import LocalTransaction
from prometheus_trader.adapters.embedded.memory_documents import (
    MISSING,
    canonical_text,
    field_getter,
    index_key,
    normalize_document,
    normalize_value,
    order_key,
)
from prometheus_trader.adapters.embedded.sqlite_sql import INDEXED_FIELDS
from prometheus_trader.ports import (
    Document,
    DocumentChange,
    Filter,
    StateTransaction,
    WatchBatch,
    WatchLost,
)
from prometheus_trader.ports import Watch as WatchPort

T = TypeVar("T")

# a stored version: the document (never handed out, never mutated) and its marshal bytes
_Entry = tuple[Document, bytes]
_Predicate = Callable[[Document], bool]
_INDEXED = frozenset(INDEXED_FIELDS)
_first = operator.itemgetter(0)
_RANGES: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _check_ref(collection: str, doc_id: str) -> None:
    if not collection:
        raise ValueError("collection name must not be empty")
    if not doc_id:
        raise ValueError("document id must not be empty")


def _equals(get: Callable[[Document], Any], value: object) -> _Predicate:
    """``field == value`` with Firestore typing (a bool never equals a number)."""
    value = normalize_value(value)
    if value is None:
        return lambda doc: get(doc) is None
    if type(value) is str:
        return lambda doc: type(got := get(doc)) is str and got == value
    if type(value) is bool:
        return lambda doc: get(doc) is value
    if isinstance(value, list | dict):
        text = canonical_text(value)
        kind = type(value)
        return lambda doc: type(got := get(doc)) is kind and canonical_text(got) == text
    # a number: equal to a stored number (int or float, never a bool)
    return lambda doc: type(got := get(doc)) in (int, float) and got == value


def _range(get: Callable[[Document], Any], op: str, value: object) -> _Predicate:
    """``<``, ``<=``, ``>``, ``>=``: only values of the same kind match."""
    value = normalize_value(value)
    compare = _RANGES[op]
    if isinstance(value, bool):
        return lambda doc: type(got := get(doc)) is bool and compare(got, value)
    if isinstance(value, int | float):
        return lambda doc: (
            type(got := get(doc)) in (int, float) and compare(got, value)  # bool excluded
        )
    if isinstance(value, str):
        return lambda doc: type(got := get(doc)) is str and compare(got, value)
    raise TypeError(f"range filter {op!r} needs a number, string or bool, not {value!r}")


def compile_filter(flt: Filter) -> _Predicate:
    """A predicate over stored documents for ``flt`` (errors as the SQLite store's)."""
    get = field_getter(flt.field)
    if flt.op == "==":
        return _equals(get, flt.value)
    if flt.op == "!=":
        equal = _equals(get, flt.value)
        return lambda doc: get(doc) is not MISSING and not equal(doc)
    if flt.op in _RANGES:
        return _range(get, flt.op, flt.value)
    if flt.op == "in":
        values = flt.value
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
            raise TypeError(f"'in' needs a list of values, not {values!r}")
        scalars = [normalize_value(v) for v in values]
        keys = {index_key(v) for v in scalars}
        if None not in keys:  # only strings, numbers and bools: one set lookup
            return lambda doc: index_key(get(doc)) in keys
        alternatives = [_equals(get, v) for v in scalars]
        return lambda doc: any(p(doc) for p in alternatives)
    raise ValueError(f"unknown filter operator {flt.op!r}")


class MemoryStateStore(ClosesOnExit):
    """``StateStore`` + ``ChangeFeed`` in dicts, for one process (see the module doc)."""

    # a watch hears every committed write of this store, in this process: it loses no
    # change, so a reader need not re-read whole results on a schedule (``LiveDocs``)
    watch_lossless = True

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._docs: dict[str, dict[str, _Entry]] = {}
        # collection -> field -> index key -> ids (the SQLite store's indexed fields)
        self._index: dict[str, dict[str, dict[object, set[str]]]] = {}
        self._watches: dict[str, list[MemoryWatch]] = {}
        # inside a transaction: what to restore on failure, which ids to announce on commit
        self._undo: list[tuple[str, str, _Entry | None]] | None = None
        self._pending: list[tuple[str, str]] = []
        # versions put so far (writes, deletes, rollbacks): equal counts, same documents
        self.writes = 0
        # the same count per collection (``version``): a reader of a few collections can
        # tell they did not change while others (the monitor's heartbeat) are written
        self._versions: dict[str, int] = {}

    def __repr__(self) -> str:
        return "MemoryStateStore()"

    def close(self) -> None:
        """Nothing to release (the documents go with the object)."""

    # ------------------------------------------------------------------ primitives
    def _get(self, collection: str, doc_id: str) -> Document | None:
        _check_ref(collection, doc_id)
        entry = self._docs.get(collection, {}).get(doc_id)
        if entry is None:
            return None
        doc: Document = marshal.loads(entry[1])
        return doc

    def _put(self, collection: str, doc_id: str, entry: _Entry | None) -> _Entry | None:
        """Put a version (None: delete) and its index entries; the previous version."""
        self.writes += 1
        versions = self._versions
        versions[collection] = versions.get(collection, 0) + 1
        docs = self._docs.setdefault(collection, {})
        old = docs.get(doc_id)
        if entry is None:
            del docs[doc_id]
        else:
            docs[doc_id] = entry
        old_doc = old[0] if old is not None else None
        doc = entry[0] if entry is not None else None
        index = self._index.get(collection)
        if index is None:
            index = self._index[collection] = {f: {} for f in INDEXED_FIELDS}
        for name, by_key in index.items():
            before = index_key(old_doc.get(name)) if old_doc is not None else None
            after = index_key(doc.get(name)) if doc is not None else None
            if before == after:
                continue
            if before is not None:
                ids = by_key[before]
                ids.discard(doc_id)
                if not ids:
                    del by_key[before]
            if after is not None:
                by_key.setdefault(after, set()).add(doc_id)
        return old

    def _store(self, collection: str, doc_id: str, doc: Document | None) -> None:
        """Write a new version (None: delete): kept for undo inside a transaction,
        announced to the watches at once outside one, at commit inside."""
        old = self._put(collection, doc_id, None if doc is None else (doc, marshal.dumps(doc)))
        if self._undo is not None:
            self._undo.append((collection, doc_id, old))
            self._pending.append((collection, doc_id))
        else:
            self._announce(((collection, doc_id),))

    def _insert(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> bool:
        _check_ref(collection, doc_id)
        doc = normalize_document(data)
        if doc_id in self._docs.get(collection, ()):
            return False
        self._store(collection, doc_id, doc)
        return True

    def _replace(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        _check_ref(collection, doc_id)
        self._store(collection, doc_id, normalize_document(data))

    def _merge(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        dotted = sorted(k for k in changes if "." in k)
        if dotted:
            raise ValueError(f"update() takes top-level field names only, got {dotted}")
        _check_ref(collection, doc_id)
        entry = self._docs.get(collection, {}).get(doc_id)
        if entry is None:
            raise KeyError(f"{collection}/{doc_id}")
        if all(type(k) is str for k in changes):
            # the stored values are never mutated, so the new version may share them
            merged = {**entry[0], **normalize_document(changes)}
            self._store(collection, doc_id, dict(sorted(merged.items())))
        else:  # keys the encoder converts (or refuses): the whole merged document
            self._store(collection, doc_id, normalize_document({**entry[0], **changes}))

    def _rollback(self, undo: list[tuple[str, str, _Entry | None]]) -> None:
        """Restore the versions a failed transaction replaced (nothing is announced)."""
        self._pending = []
        for collection, doc_id, old in reversed(undo):
            self._put(collection, doc_id, old)

    def _announce(self, written: Iterable[tuple[str, str]]) -> None:
        if not self._watches:
            return
        for collection, doc_id in written:
            for watch in self._watches.get(collection, ()):
                watch.touched(doc_id)

    def version(self, *collections: str) -> tuple[int, ...]:
        """The versions put so far in each of ``collections`` (writes, deletes, rollbacks):
        equal tuples, the same documents in them."""
        versions = self._versions
        return tuple(versions.get(c, 0) for c in collections)

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
            self._merge(collection, doc_id, changes)

    def delete(self, collection: str, doc_id: str) -> None:
        """Delete (no-op if missing)."""
        _check_ref(collection, doc_id)
        with self._lock:
            if doc_id in self._docs.get(collection, ()):
                self._store(collection, doc_id, None)

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
        predicates = [compile_filter(f) for f in filters]
        order_get = field_getter(order_by) if order_by is not None else None
        with self._lock:
            docs = self._docs.get(collection)
            if not docs:
                return []
            entries = self._candidates(collection, docs, filters)
            if predicates:
                entries = [(i, e) for i, e in entries if all(p(e[0]) for p in predicates)]
            if order_get is None:
                entries.sort(key=lambda item: item[0], reverse=descending)
            else:
                keyed = [
                    (order_key(value), i, e)
                    for i, e in entries
                    if (value := order_get(e[0])) is not MISSING
                ]
                keyed.sort(key=lambda item: (*item[0], item[1]), reverse=descending)
                entries = [(i, e) for _, i, e in keyed]
            if limit is not None:
                entries = entries[:limit]
            return [marshal.loads(e[1]) for _, e in entries]

    def _candidates(
        self, collection: str, docs: dict[str, _Entry], filters: Sequence[Filter]
    ) -> list[tuple[str, _Entry]]:
        """(id, entry) of the documents an equality filter on an indexed field allows (the
        smallest such set), else of every document of the collection."""
        index = self._index.get(collection)
        best: set[str] | None = None
        if index is not None:
            for flt in filters:
                if flt.field not in _INDEXED:
                    continue
                if flt.op == "in" and isinstance(flt.value, list | tuple):
                    # hfx: the batched executor's "these users": the union of their ids
                    keys = [index_key(normalize_value(v)) for v in flt.value]
                    if any(k is None for k in keys):
                        continue
                    by_key = index[flt.field]
                    union: set[str] = set().union(*(by_key.get(k, ()) for k in keys))
                    if best is None or len(union) < len(best):
                        best = union
                    continue
                if flt.op != "==":
                    continue
                key = index_key(normalize_value(flt.value))
                if key is None:
                    continue
                ids = index[flt.field].get(key)
                if ids is None:
                    return []
                if best is None or len(ids) < len(best):
                    best = ids
        if best is None:
            return list(docs.items())
        return [(i, docs[i]) for i in best]

    # ------------------------------------------------------------------ batches
    def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The documents of ``doc_ids`` that exist, by id."""
        found: dict[str, Document] = {}
        with self._lock:
            for doc_id in doc_ids:
                doc = self._get(collection, doc_id)
                if doc is not None:
                    found[doc_id] = doc
        return found

    def create_many(
        self, collection: str, docs: Mapping[str, Mapping[str, Any]]
    ) -> builtins.set[str]:
        """Create each document if absent; the ids created."""
        with self._lock:
            return {d for d, data in docs.items() if self._insert(collection, d, data)}

    def set_many(self, collection: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Create or replace each document."""
        with self._lock:
            for doc_id, data in docs.items():
                self._replace(collection, doc_id, data)

    def transaction(self, fn: Callable[[StateTransaction], T]) -> T:
        """Run ``fn`` atomically: on any exception nothing it wrote is kept."""
        with self._lock:
            if self._undo is not None:
                raise RuntimeError("nested transactions are not supported")
            undo: list[tuple[str, str, _Entry | None]] = []
            self._undo, self._pending = undo, []
            tx = LocalTransaction(self)
            try:
                result = fn(tx)
                if tx.conflict is not None:
                    raise tx.conflict
            except BaseException:
                self._rollback(undo)
                raise
            finally:
                tx.close()
                self._undo = None
            pending, self._pending = self._pending, []
            self._announce(pending)
            return result

    # ------------------------------------------------------------------ change feed
    def watch(self, collection: str, filters: Sequence[Filter] = ()) -> WatchPort:
        """Follow a query's result (this store's committed writes; single process)."""
        return MemoryWatch(self, collection, filters)

    def _follow(
        self, watch: MemoryWatch, collection: str, filters: Sequence[Filter] = ()
    ) -> list[DocumentChange]:
        """Register ``watch``; its complete first result, by id."""
        with self._lock:
            if self._undo is not None:
                raise RuntimeError("watch() inside a transaction")
            self._watches.setdefault(collection, []).append(watch)
            docs = self._docs.get(collection)
            if not docs:
                return []
            # an equality filter on an indexed field names the candidates (the open
            # positions among every position of a month), as a query does
            return [
                DocumentChange(i, marshal.loads(e[1]))
                for i, e in sorted(self._candidates(collection, docs, filters), key=_first)
                if watch.matches(e[0])
            ]

    def _unfollow(self, watch: MemoryWatch, collection: str) -> None:
        with self._lock:
            watches = self._watches.get(collection, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._watches.pop(collection, None)

    def _entry(self, collection: str, doc_id: str) -> _Entry | None:
        return self._docs.get(collection, {}).get(doc_id)


class MemoryWatch:
    """``Watch`` on a ``MemoryStateStore``: see the module doc."""

    def __init__(self, store: MemoryStateStore, collection: str, filters: Sequence[Filter]) -> None:
        if not collection:
            raise ValueError("collection name must not be empty")
        self._store = store
        self._collection = collection
        self._predicates = [compile_filter(f) for f in filters]
        self._closed = False
        # ids written since the last poll, in the order of their last write
        self._touched: dict[str, None] = {}
        self._first: WatchBatch | None = WatchBatch(
            complete=True, changes=store._follow(self, collection, filters)
        )

    def matches(self, doc: Document) -> bool:
        """True if a stored document is in the watched result."""
        return all(p(doc) for p in self._predicates)

    def touched(self, doc_id: str) -> None:
        """The store committed a write of ``doc_id``."""
        self._touched.pop(doc_id, None)
        self._touched[doc_id] = None

    def poll(self) -> WatchBatch:
        """Changes since the previous poll (the first call: the complete result)."""
        if self._closed:
            raise WatchLost("watch is closed")
        if self._first is not None:
            first, self._first = self._first, None
            return first
        changes: list[DocumentChange] = []
        with self._store._lock:
            touched, self._touched = self._touched, {}
            for doc_id in touched:
                entry = self._store._entry(self._collection, doc_id)
                if entry is not None and self.matches(entry[0]):
                    changes.append(DocumentChange(doc_id, marshal.loads(entry[1])))
                else:
                    changes.append(DocumentChange(doc_id, None))
        return WatchBatch(complete=False, changes=changes)

    def close(self) -> None:
        """Stop following (idempotent)."""
        if not self._closed:
            self._closed = True
            self._store._unfollow(self, self._collection)


__all__ = ["MemoryStateStore", "MemoryWatch", "compile_filter"]
