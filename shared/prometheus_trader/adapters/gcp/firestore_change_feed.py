"""Firestore's change stream (``ChangeFeed``): a real ``on_snapshot`` query listener.

The listener runs on the client's background thread and queues what it hears; ``poll``
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
from typing import TYPE_CHECKING, Any

from google.cloud.firestore_v1.base_query import FieldFilter

from prometheus_trader.ports import DocumentChange, Filter, WatchBatch, WatchLost

if TYPE_CHECKING:
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore


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
        query: Any = store._collection(collection)
        for flt in filters:
            if fss._needs_local(flt):
                continue
            value: object = (
                [fss._encode_value(v) for v in flt.value]
                if flt.op == "in"
                else fss._encode_value(flt.value)
            )
            query = query.where(filter=FieldFilter(fss._field_path(flt.field), flt.op, value))
        self._listener = query.on_snapshot(self._on_snapshot)

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
