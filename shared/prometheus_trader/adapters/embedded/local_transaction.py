"""``LocalTransaction``: the ``StateTransaction`` of the local stores (SQLite, memory)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_trader.ports import AlreadyExists, Document


class ReadAfterWriteError(RuntimeError):
    """A transaction read a document after writing (Firestore refuses this too)."""


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
