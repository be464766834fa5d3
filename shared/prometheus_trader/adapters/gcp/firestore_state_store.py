"""``StateStore`` on Cloud Firestore (native mode), matching the embedded SQLite store.

The contract suite (tests/contract/test_state_store.py) is the judge. Where Firestore
differs from the port, this adapter bridges the gap:

* **Document ids** may contain ``/``, which Firestore forbids. Ids are encoded with an
  order-preserving, reversible escape (``.`` -> ``..``, ``/`` -> ``.~``), so Firestore's
  own ``__name__`` order is the port's id order and ``limit`` can run on the server. Ids
  Firestore reserves even after encoding (``.``, ``__x__``) raise ``ValueError``.
* **Field names** Firestore refuses (``""``, ``__x__``) and **arrays nested in arrays**
  are stored escaped (``~`` prefix; an inner array becomes ``{"~a": [...]}``) and decoded
  on read, so any JSON document round-trips. Ordinary field names are stored as they are,
  so the composite indexes in infra/firestore.indexes.json name the real fields.
* **Filters** Firestore evaluates differently run in Python over the server's answer
  (behaviour checked on the emulator): ``!=`` with a non-null value (Firestore drops
  documents whose field is null; the port keeps them), ``in`` holding ``None``
  (Firestore's ``IN`` never matches null), ``in`` with more than 30 values (Firestore's
  limit). An empty ``in`` matches nothing. None of the use-cases' queries needs this.
* **Order**: with no inequality filter, or one on the ``order_by`` field, Firestore sorts
  exactly as the port does (field, then ``__name__`` in the same direction) and ``limit``
  is sent to the server. Otherwise (Firestore would sort by the inequality fields first;
  it refuses a descending scan by id alone) the adapter fetches every match and sorts (and
  limits) in Python.
* **Transactions** are Firestore transactions (reads before writes). ``create`` on an
  existing id and ``update`` of a missing one fail at commit: the whole transaction raises
  the port's ``AlreadyExists`` / ``KeyError`` and writes nothing. Contention (``Aborted``)
  is retried, so ``fn`` may run several times. Transactions of one store instance run
  one at a time (see ``FirestoreStateStore.__init__``).
"""

from __future__ import annotations

import builtins
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from prometheus_trader.adapters import ClosesOnExit
from prometheus_trader.ports import AlreadyExists, Document, Filter, StateTransaction, Watch

T = TypeVar("T")

# Firestore refuses an `in` list longer than this.
MAX_IN_VALUES = 30
# A map holding only this key stands for an array nested in an array (Firestore refuses
# those). No user key encodes to it: escaped keys are "~" + ("" | "__x__" | "~...").
_ARRAY_KEY = "~a"
_KEY_ESCAPE = "~"
_RESERVED_NAME = re.compile(r"__.*__", re.DOTALL)
_INEQUALITY_OPS = frozenset({"<", "<=", ">", ">=", "!="})


class ReadAfterWriteError(RuntimeError):
    """A transaction read a document after writing (Firestore refuses this)."""


# ------------------------------------------------------------------ encoding
_GET_ALL_IDS = 300  # document references per get_all call
_BATCH_WRITES = 500  # Firestore's limit of writes per batch
_CREATE_WORKERS = 16  # concurrent creates of one create_many


def encode_id(doc_id: str) -> str:
    """Port id -> Firestore document id (reversible, order-preserving, no ``/``)."""
    if not doc_id:
        raise ValueError("document id must not be empty")
    encoded = doc_id.replace(".", "..").replace("/", ".~")
    if encoded == ".." or _RESERVED_NAME.fullmatch(encoded):
        raise ValueError(f"document id {doc_id!r} is reserved by Firestore")
    return encoded


def decode_id(encoded: str) -> str:
    """Inverse of :func:`encode_id`."""
    out: list[str] = []
    i = 0
    while i < len(encoded):
        char = encoded[i]
        if char == ".":
            out.append("/" if encoded[i + 1] == "~" else ".")
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _encode_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"document keys must be strings, not {type(key).__name__}")
    if not key or key.startswith(_KEY_ESCAPE) or _RESERVED_NAME.fullmatch(key):
        return _KEY_ESCAPE + key
    return key


def _decode_key(key: str) -> str:
    return key[1:] if key.startswith(_KEY_ESCAPE) else key


def _encode_value(value: object, in_array: bool = False) -> object:
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not JSON-compatible")
        return value
    if isinstance(value, Mapping):
        return {_encode_key(k): _encode_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_encode_value(v, in_array=True) for v in value]
        return {_ARRAY_KEY: items} if in_array else items
    raise TypeError(f"value of type {type(value).__name__} is not JSON-compatible")


def _decode_value(value: object) -> object:
    if isinstance(value, dict):
        if len(value) == 1 and _ARRAY_KEY in value:
            return _decode_value(value[_ARRAY_KEY])
        # sorted keys: the same key order as the embedded store's canonical JSON
        decoded = {_decode_key(k): _decode_value(v) for k, v in value.items()}
        return {k: decoded[k] for k in sorted(decoded)}
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    return value


def _encode_document(data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"a document must be a mapping, not {type(data).__name__}")
    encoded = _encode_value(data)
    assert isinstance(encoded, dict)
    return encoded


def _decode_document(data: Mapping[str, Any] | None) -> Document:
    decoded = _decode_value(dict(data or {}))
    assert isinstance(decoded, dict)
    return decoded


def _field_path(path: str) -> str:
    """Port field path (``a.b``) -> Firestore field path string with encoded segments."""
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ValueError(f"invalid field path {path!r}")
    return FieldPath(*(_encode_key(p) for p in parts)).to_api_repr()


# ------------------------------------------------------------------ Python-side evaluation
_MISSING = object()


def _lookup(doc: Mapping[str, Any], path: str) -> object:
    current: object = doc
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _same(a: object, b: object) -> bool:
    """Equality with Firestore typing: a bool never equals a number."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _matches_locally(doc: Mapping[str, Any], flt: Filter) -> bool:
    value = _lookup(doc, flt.field)
    if value is _MISSING:
        return False
    if flt.op == "!=":
        return not _same(value, flt.value)
    if flt.op == "in":
        return any(_same(value, v) for v in flt.value)
    raise AssertionError(f"operator {flt.op!r} is never evaluated locally")


def _order_key(value: object) -> tuple[Any, ...]:
    """Firestore's cross-type order: null < bools < numbers < strings < arrays < maps."""
    value = _plain(value)
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, list | tuple):
        return (4, tuple(_order_key(v) for v in value))
    if isinstance(value, Mapping):
        return (5, tuple((k, _order_key(value[k])) for k in sorted(value)))
    raise TypeError(f"cannot order a value of type {type(value).__name__}")


def _needs_local(flt: Filter) -> bool:
    if flt.op == "!=":
        return _plain(flt.value) is not None
    if flt.op == "in":
        return len(flt.value) > MAX_IN_VALUES or any(_plain(v) is None for v in flt.value)
    return False


def _check_in_values(flt: Filter) -> None:
    if flt.op == "in" and (
        isinstance(flt.value, str | bytes | Mapping) or not isinstance(flt.value, Sequence)
    ):
        raise TypeError(f"'in' needs a list of values, not {flt.value!r}")


# ------------------------------------------------------------------ transactions
class _Transaction:
    """``StateTransaction`` over one attempt of a ``firestore.Transaction``."""

    def __init__(self, store: FirestoreStateStore, transaction: firestore.Transaction) -> None:
        self._store = store
        self._tx = transaction
        self._wrote = False

    def get(self, collection: str, doc_id: str) -> Document | None:
        """Read a document (only before the first write)."""
        if self._wrote:
            raise ReadAfterWriteError("transactions must do all reads before any write")
        snapshot = self._store._ref(collection, doc_id).get(transaction=self._tx)
        return _decode_document(snapshot.to_dict()) if snapshot.exists else None

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create; the commit fails with AlreadyExists if the document exists."""
        self._wrote = True
        self._tx.create(self._store._ref(collection, doc_id), _encode_document(data))

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create or replace."""
        self._wrote = True
        self._tx.set(self._store._ref(collection, doc_id), _encode_document(data))

    def update(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        """Merge top-level fields; the commit fails with KeyError if the document is missing."""
        self._wrote = True
        ref = self._store._ref(collection, doc_id)
        if changes:
            self._tx.update(ref, _update_paths(changes))
        else:
            # an empty update still asserts existence, like the embedded store
            self._tx.update(ref, {FieldPath(_ARRAY_KEY).to_api_repr(): firestore.DELETE_FIELD})


def _update_paths(changes: Mapping[str, Any]) -> dict[str, Any]:
    dotted = sorted(k for k in changes if "." in k)
    if dotted:
        raise ValueError(f"update() takes top-level field names only, got {dotted}")
    return {FieldPath(_encode_key(k)).to_api_repr(): _encode_value(v) for k, v in changes.items()}


# ------------------------------------------------------------------ the store
class FirestoreStateStore(ClosesOnExit):
    """``StateStore`` on Firestore; ``prefix`` is prepended to every collection name."""

    def __init__(
        self,
        client: firestore.Client | None = None,
        *,
        project: str | None = None,
        database: str = "(default)",
        prefix: str = "",
        max_attempts: int = 60,
    ) -> None:
        if "/" in prefix:
            raise ValueError("prefix must not contain '/'")
        self._owns_client = client is None
        self._client = client or firestore.Client(project=project, database=database)
        self.prefix = prefix
        self.max_attempts = max_attempts
        self._local = threading.local()
        # Transactions of one store run one at a time: Firestore locks what a transaction
        # reads, so two threads read-modify-writing the same document deadlock until a lock
        # times out (2 s on the emulator) and retry. Other processes still contend and are
        # retried; a function instance serves one message at a time anyway.
        self._tx_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FirestoreStateStore(project={self._client.project!r}, prefix={self.prefix!r})"

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            self._client.close()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ helpers
    def _collection(self, collection: str) -> firestore.CollectionReference:
        if not collection:
            raise ValueError("collection name must not be empty")
        if "/" in collection:
            raise ValueError(f"collection name {collection!r} must not contain '/'")
        return self._client.collection(self.prefix + collection)

    def _ref(self, collection: str, doc_id: str) -> firestore.DocumentReference:
        return self._collection(collection).document(encode_id(doc_id))

    # ------------------------------------------------------------------ the port
    def get(self, collection: str, doc_id: str) -> Document | None:
        """Read a document or None."""
        snapshot = self._ref(collection, doc_id).get()
        return _decode_document(snapshot.to_dict()) if snapshot.exists else None

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> bool:
        """Create if absent. True if created, False if it already existed (untouched)."""
        try:
            self._ref(collection, doc_id).create(_encode_document(data))
        except gexc.AlreadyExists:
            return False
        return True

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create or replace."""
        self._ref(collection, doc_id).set(_encode_document(data))

    def update(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        """Merge top-level fields into an existing document (KeyError if missing)."""
        paths = _update_paths(changes)
        ref = self._ref(collection, doc_id)
        if not paths:
            if not ref.get().exists:
                raise KeyError(f"{collection}/{doc_id}")
            return
        try:
            ref.update(paths)
        except gexc.NotFound as exc:
            raise KeyError(f"{collection}/{doc_id}") from exc

    def delete(self, collection: str, doc_id: str) -> None:
        """Delete (no-op if missing)."""
        self._ref(collection, doc_id).delete()

    # ------------------------------------------------------------------ batches
    def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The documents of ``doc_ids`` that exist, by id (``get_all``: one round trip
        per 300 ids instead of one per id)."""
        found: dict[str, Document] = {}
        unique = list(dict.fromkeys(doc_ids))
        for start in range(0, len(unique), _GET_ALL_IDS):
            refs = [self._ref(collection, d) for d in unique[start : start + _GET_ALL_IDS]]
            for snapshot in self._client.get_all(refs):
                if snapshot.exists:
                    found[decode_id(snapshot.id)] = _decode_document(snapshot.to_dict())
        return found

    def create_many(
        self, collection: str, docs: Mapping[str, Mapping[str, Any]]
    ) -> builtins.set[str]:
        """Create each document if absent; the ids created. One ``create`` per document
        (a write batch fails whole on one existing id, and create-if-absent must hold for
        each document on its own: racing batches may overlap), up to 16 at a time: a
        bucket's records would otherwise cost one round trip each, in a row. Returns
        when every create has; the first error is raised (the others may have landed)."""
        items = list(docs.items())
        if len(items) <= 1:
            return {d for d, data in items if self.create(collection, d, data)}
        with ThreadPoolExecutor(max_workers=min(_CREATE_WORKERS, len(items))) as pool:
            made = list(pool.map(lambda item: self.create(collection, *item), items))
        return {d for (d, _), created in zip(items, made, strict=True) if created}

    def set_many(self, collection: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Create or replace each document: write batches of up to 500 (each atomic)."""
        items = list(docs.items())
        for start in range(0, len(items), _BATCH_WRITES):
            batch = self._client.batch()
            for doc_id, data in items[start : start + _BATCH_WRITES]:
                batch.set(self._ref(collection, doc_id), _encode_document(data))
            batch.commit()

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Document]:
        """Documents matching every filter; sorted by ``order_by`` then id."""
        ref = self._collection(collection)
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        for flt in filters:
            _check_in_values(flt)
        if limit == 0 or any(f.op == "in" and not f.value for f in filters):
            return []
        local = [f for f in filters if _needs_local(f)]
        remote = [f for f in filters if not _needs_local(f)]
        inequality_fields = {f.field for f in remote if f.op in _INEQUALITY_OPS}
        # Firestore refuses a descending scan by document id alone: sort those here too.
        server_sorts = (not inequality_fields or inequality_fields == {order_by}) and not (
            descending and order_by is None
        )
        direction = firestore.Query.DESCENDING if descending else firestore.Query.ASCENDING

        query: Any = ref
        for flt in remote:
            if flt.op == "in":
                value: object = [_encode_value(v) for v in flt.value]
            else:
                value = _encode_value(flt.value)
            query = query.where(filter=FieldFilter(_field_path(flt.field), flt.op, value))
        if server_sorts:
            if order_by is not None:
                query = query.order_by(_field_path(order_by), direction=direction)
            if limit is not None and not local:
                query = query.limit(limit)

        rows = [(decode_id(s.id), _decode_document(s.to_dict())) for s in query.stream()]
        if local:
            rows = [(i, d) for i, d in rows if all(_matches_locally(d, f) for f in local)]
        if not server_sorts:
            if order_by is not None:
                rows = [(i, d) for i, d in rows if _lookup(d, order_by) is not _MISSING]
                rows.sort(key=lambda r: (_order_key(_lookup(r[1], order_by)), r[0]))
            else:
                rows.sort(key=lambda r: r[0])
            if descending:
                rows.reverse()
        docs = [d for _, d in rows]
        return docs[:limit] if limit is not None else docs

    def transaction(self, fn: Callable[[StateTransaction], T]) -> T:
        """Run ``fn`` atomically; retried on contention (keep it pure)."""
        if getattr(self._local, "active", False):
            raise RuntimeError("nested transactions are not supported")
        self._local.active = True
        try:
            with self._tx_lock:
                return self._run_transaction(fn)
        finally:
            self._local.active = False

    def _run_transaction(self, fn: Callable[[StateTransaction], T]) -> T:
        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> T:
            return fn(_Transaction(self, transaction))

        # The client retries an Aborted commit itself, but not an Aborted read (lock
        # contention can abort a read too): retry the whole attempt here, with jitter.
        for n in range(self.max_attempts):
            try:
                return attempt(self._client.transaction(max_attempts=5))  # type: ignore[no-any-return]
            except gexc.AlreadyExists as exc:
                raise AlreadyExists(str(exc)) from exc
            except gexc.NotFound as exc:
                raise KeyError(str(exc)) from exc
            except (gexc.Aborted, ValueError) as exc:
                # the client gives up on commit contention with a plain ValueError
                aborted = (
                    isinstance(exc, gexc.Aborted)
                    or isinstance(exc.__cause__, gexc.Aborted)
                    or str(exc).startswith("Failed to commit transaction")
                )
                if not aborted or n == self.max_attempts - 1:
                    raise
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2**n)))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ change feed
    def watch(self, collection: str, filters: Sequence[Filter] = ()) -> Watch:
        """Follow a query's result with a real ``on_snapshot`` listener
        (``firestore_change_feed``)."""
        from prometheus_trader.adapters.gcp.firestore_change_feed import FirestoreWatch

        return FirestoreWatch(self, collection, filters)
