"""A query's result held in memory as validated models, kept fresh by the change feed.

The exit monitor reads every open position (and their users) every cycle; re-reading and
validating 10,000 documents each 2 s was a third of a cycle. ``LiveDocs`` reads the result
once, then applies only what the store's change stream (``ChangeFeed``) reports. It falls
back to a plain query when the store has no change feed, while a remote listener has not
delivered its first result, and after a stream error (a new watch is started at once);
it also starts a fresh watch (a complete re-read) every ``resync_ms`` of clock time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from prometheus_trader.ports import ChangeFeed, Clock, Document, Filter, StateStore, Watch
from prometheus_trader.usecases.names import labels

log = logging.getLogger(__name__)


class _Validates(Protocol):
    @classmethod
    def model_validate(cls, obj: Any) -> Any: ...


M = TypeVar("M", bound=_Validates)
# (the model held so far, the model of a changed stored document) -> the model to hold
Merge = Callable[[Any, Any], Any]

RESYNC_MS = 10 * 60_000


class LiveDocs(Generic[M]):
    """``collection`` documents matching ``filters``, as ``model`` instances by id."""

    def __init__(
        self,
        state: StateStore,
        clock: Clock,
        collection: str,
        filters: Sequence[Filter],
        model: type[M],
        *,
        merge: Merge | None = None,
        id_field: str = "id",
        resync_ms: int = RESYNC_MS,
    ) -> None:
        self._state = state
        self._clock = clock
        self._collection = collection
        self._filters = list(filters)
        self._model = model
        self._merge = merge
        self._resync_ms = resync_ms
        self._id_field = id_field  # the field holding the document id (for queries)
        self._feed: ChangeFeed | None = state if isinstance(state, ChangeFeed) else None
        if getattr(state, "watch_lossless", False) is True:
            # an in-process feed that cannot drop a change (MemoryStateStore): a complete
            # re-read holds what the changes built, so none is scheduled
            self._resync_ms = 2**62
        self._watch: Watch | None = None
        self._resync_at = 0
        # id -> (the stored document as last seen, the model held)
        self._held: dict[str, tuple[Document, M]] = {}
        # ids this process saw leave (e.g. it closed them): a late echo of an older write
        # must not bring them back; cleared by every complete result
        self._gone: set[str] = set()
        self._sorted: list[M] | None = None
        self.full_reads = 0  # complete results read (start, fallbacks, resyncs)

    # ----------------------------------------------------------------- reading
    def refresh(self) -> dict[str, M]:
        """Bring the held result up to date; id -> model."""
        if self._feed is None:
            self._replace(self._query())
            return self.models()
        now = self._clock.now_ms()
        if self._watch is not None and now >= self._resync_at:
            self._drop_watch()  # on a schedule: a fresh watch re-reads the whole result
        for _ in range(2):  # a watch lost while polling is replaced once, at once
            if self._watch is None:
                try:
                    self._watch = self._feed.watch(self._collection, self._filters)
                except Exception as exc:  # the store still answers queries
                    self._warn("watch failed", exc)
                    break
                self._resync_at = now + self._resync_ms
            try:
                batch = self._watch.poll()
            except Exception as exc:  # WatchLost or a transport error: watch again
                self._warn("change stream lost", exc)
                self._drop_watch()
                continue
            if batch is None:
                break  # the listener's first result is not in yet: query this time
            if batch.complete:
                self._gone.clear()
                self._replace((c.doc_id, c.data) for c in batch.changes)
            else:
                self._apply((c.doc_id, c.data) for c in batch.changes)
            return self.models()
        self._replace(self._query())
        return self.models()

    def models(self) -> dict[str, M]:
        """The held models by id (no store access)."""
        return {i: m for i, (_, m) in self._held.items()}

    def ordered(self) -> list[M]:
        """The held models sorted by id (cached until something changes)."""
        if self._sorted is None:
            self._sorted = [self._held[i][1] for i in sorted(self._held)]
        return list(self._sorted)

    # ----------------------------------------------------------------- writing
    def hold(self, doc_id: str, model: M, stored: Document | None = None) -> None:
        """Hold ``model`` for ``doc_id`` (changed in memory); ``stored``: fields just
        written to the store, so their echo from the stream is known."""
        if doc_id not in self._held:
            return
        doc = self._held[doc_id][0]
        if stored:
            doc = {**doc, **stored}
        self._held[doc_id] = (doc, model)
        self._sorted = None

    def forget(self, doc_id: str) -> None:
        """Drop ``doc_id`` now (this process closed it); its late echoes are ignored."""
        if self._held.pop(doc_id, None) is not None:
            self._sorted = None
        if self._feed is not None:
            self._gone.add(doc_id)

    def close(self) -> None:
        """Stop the change stream."""
        self._drop_watch()

    # ----------------------------------------------------------------- internals
    def _query(self) -> Iterable[tuple[str, Document]]:
        self.full_reads += 1
        docs = self._state.query(self._collection, self._filters)
        return ((str(d[self._id_field]), d) for d in docs)

    def _replace(self, docs: Iterable[tuple[str, Document | None]]) -> None:
        """Start from an empty result and apply ``docs`` in order (None: it left)."""
        held, self._held = self._held, {}
        self._sorted = None
        for doc_id, doc in docs:
            if doc is None:
                self._held.pop(doc_id, None)
            else:
                self._held[doc_id] = self._entry(self._held.get(doc_id) or held.get(doc_id), doc)

    def _apply(self, changes: Iterable[tuple[str, Document | None]]) -> None:
        for doc_id, doc in changes:
            self._sorted = None
            if doc is None:
                self._held.pop(doc_id, None)
                self._gone.discard(doc_id)  # the store confirms it left
            elif doc_id not in self._gone:
                self._held[doc_id] = self._entry(self._held.get(doc_id), doc)

    def _entry(self, known: tuple[Document, M] | None, doc: Document) -> tuple[Document, M]:
        if known is not None and known[0] == doc:
            return known
        model = self._model.model_validate(doc)
        if known is not None and self._merge is not None:
            model = self._merge(known[1], model)
        return doc, model

    def _drop_watch(self) -> None:
        if self._watch is not None:
            try:
                self._watch.close()
            except Exception as exc:  # closing a broken listener may fail too
                self._warn("closing the change stream failed", exc)
            self._watch = None

    def _warn(self, what: str, exc: Exception) -> None:
        log.warning(
            "%s (%s): %s: %s",
            what,
            self._collection,
            type(exc).__name__,
            exc,
            extra=labels(stage="monitor"),
        )


__all__ = ["RESYNC_MS", "LiveDocs"]
