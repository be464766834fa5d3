"""Firestore's change stream (``ChangeFeed``): a real ``on_snapshot`` query listener.

The listener (the client's own, with a lean snapshot step: ``_LeanWatch``) runs on the
client's background thread and queues what it hears; ``poll``
hands the queue over. Its first snapshot is the complete result (the port's first,
complete batch); later snapshots carry only the documents added, modified or removed.
Filters the adapter evaluates in Python for queries (``!=`` with a value, ``in`` holding
null or more than 30 values) are applied the same way here: a changed document that no
longer matches comes back as a removal. A listener the client closed (an error it does
not recover from) makes ``poll`` raise ``WatchLost``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from google.cloud.firestore_v1.base_document import DocumentSnapshot
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.watch import ChangeType, Watch

from prometheus_trader.ports import DocumentChange, Filter, WatchBatch, WatchLost

if TYPE_CHECKING:
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore


class _Change(NamedTuple):
    type: ChangeType
    document: Any


class _LeanWatch(Watch):
    """The client's query listener, minus its cost per change.

    The client rebuilds its sorted document tree for every change (a copy of the whole
    result per document) and sorts the whole result with a Python comparator for every
    snapshot: on the emulator 500 changes to a 1,000-document result took 47 s of CPU
    and starved the writing thread. The port needs neither order nor indexes, so this
    keeps the documents in one dict updated in place and reports only the changes (the
    complete result on the first snapshot). The stream, resume and reset handling are
    the client's own; the contract suite runs it on the emulator.
    """

    def push(self, read_time: Any, next_resume_token: Any) -> None:
        deletes, adds, updates = self._extract_changes(  # type: ignore[no-untyped-call]
            self.doc_map, self.change_map, read_time
        )
        changes: list[_Change] = []
        for name in deletes:
            changes.append(_Change(ChangeType.REMOVED, self.doc_map.pop(name)))
        for snapshot in adds:
            self.doc_map[snapshot.reference._document_path] = snapshot
            changes.append(_Change(ChangeType.ADDED, snapshot))
        for snapshot in updates:
            name = snapshot.reference._document_path
            if self.doc_map[name].update_time != snapshot.update_time:
                self.doc_map[name] = snapshot
                changes.append(_Change(ChangeType.MODIFIED, snapshot))
        if not self.has_pushed or changes:
            docs = [] if self.has_pushed else list(self.doc_map.values())
            self._snapshot_callback(docs, changes, read_time)
            self.has_pushed = True
        self.change_map.clear()
        self.resume_token = next_resume_token

    def _reset_docs(self) -> None:
        # the client walks its (unused here) tree: mark every held document removed;
        # the server sends again the ones still matching
        self.change_map.clear()
        self.resume_token = None
        for name in self.doc_map:
            self.change_map[name] = ChangeType.REMOVED


class FirestoreWatch:
    """``Watch`` on a ``FirestoreStateStore``: see the module doc."""

    def __init__(
        self, store: FirestoreStateStore, collection: str, filters: Sequence[Filter]
    ) -> None:
        from prometheus_trader.adapters.gcp import firestore_state_store as fss

        self._fss = fss
        for flt in filters:
            fss._check_in_values(flt)
        self._local = [f for f in filters if fss._needs_local(f)]
        self._lock = threading.Lock()
        self._pending: list[WatchBatch] = []
        self._synced = False
        self._closed = False
        self._listener: Any = None
        if any(f.op == "in" and not f.value for f in filters):  # matches nothing, ever
            self._pending.append(WatchBatch(complete=True, changes=[]))
            self._synced = True
            return
        query: Any = store._collection(collection)._query()  # a Query even with no filter
        for flt in filters:
            if fss._needs_local(flt):
                continue
            value: object = (
                [fss._encode_value(v) for v in flt.value]
                if flt.op == "in"
                else fss._encode_value(flt.value)
            )
            query = query.where(filter=FieldFilter(fss._field_path(flt.field), flt.op, value))
        self._listener = _LeanWatch.for_query(  # type: ignore[no-untyped-call]
            query, self._on_snapshot, DocumentSnapshot
        )

    def _change(self, snapshot: Any, removed: bool = False) -> DocumentChange:
        doc_id = self._fss.decode_id(snapshot.id)
        if removed:
            return DocumentChange(doc_id, None)
        data = self._fss._decode_document(snapshot.to_dict())
        if not all(self._fss._matches_locally(data, f) for f in self._local):
            return DocumentChange(doc_id, None)
        return DocumentChange(doc_id, data)

    def _on_snapshot(self, docs: list[Any], changes: list[Any], read_time: Any) -> None:
        """The listener thread: queue the snapshot (complete the first time)."""
        with self._lock:
            if not self._synced:
                batch = WatchBatch(complete=True, changes=[self._change(d) for d in docs])
                self._synced = True
            else:
                batch = WatchBatch(
                    complete=False,
                    changes=[
                        self._change(c.document, removed=c.type.name == "REMOVED") for c in changes
                    ],
                )
            self._pending.append(batch)

    def poll(self) -> WatchBatch | None:
        """What the listener heard since the previous poll; None before its first snapshot."""
        if self._closed:
            raise WatchLost("watch is closed")
        if self._listener is not None and getattr(self._listener, "_closed", False):
            raise WatchLost("the Firestore listener stopped")
        with self._lock:
            pending, self._pending, synced = self._pending, [], self._synced
        if not pending:
            return WatchBatch(complete=False, changes=[]) if synced else None
        return WatchBatch(
            complete=pending[0].complete, changes=[c for b in pending for c in b.changes]
        )

    def close(self) -> None:
        """Unsubscribe the listener (idempotent)."""
        self._closed = True
        if self._listener is not None:
            self._listener.unsubscribe()
            self._listener = None


__all__ = ["FirestoreWatch"]
