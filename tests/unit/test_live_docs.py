"""``LiveDocs``: a query's result held in memory, fed by the store's change feed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import Filter, Watch, WatchLost
from prometheus_trader.usecases.live_docs import LiveDocs

pytestmark = pytest.mark.unit

OPEN = [Filter("status", "==", "open")]


class Doc(BaseModel):
    id: str
    status: str
    v: int = 0


class CountingStore(SqliteStateStore):
    """The embedded store, counting full queries and able to break its watches."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0
        self.watches: list[Watch] = []
        self.break_next_poll = False

    def query(self, collection: str, filters: Sequence[Filter] = (), *a: Any, **k: Any) -> Any:
        self.queries += 1
        return super().query(collection, filters, *a, **k)

    def watch(self, collection: str, filters: Sequence[Filter] = ()) -> Watch:
        inner = super().watch(collection, filters)
        store = self

        class Breakable:
            def poll(self) -> Any:
                if store.break_next_poll:
                    store.break_next_poll = False
                    raise WatchLost("injected")
                return inner.poll()

            def close(self) -> None:
                inner.close()

        watch = Breakable()
        self.watches.append(watch)
        return watch


class NoFeed:
    """A state store without a change feed (only the StateStore port)."""

    def __init__(self, inner: SqliteStateStore) -> None:
        self.inner = inner
        self.queries = 0

    def query(self, collection: str, filters: Sequence[Filter] = (), *a: Any, **k: Any) -> Any:
        self.queries += 1
        return self.inner.query(collection, filters, *a, **k)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(datetime(2025, 5, 21, tzinfo=UTC))


def test_reads_once_then_only_changes(clock: SimulatedClock) -> None:
    store = CountingStore()
    store.set("pos", "a", {"id": "a", "status": "open"})
    store.set("pos", "b", {"id": "b", "status": "closed"})
    live = LiveDocs(store, clock, "pos", OPEN, Doc)
    assert list(live.refresh()) == ["a"]
    first = live.refresh()["a"]
    store.set("pos", "c", {"id": "c", "status": "open", "v": 1})
    store.update("pos", "b", {"status": "open"})
    store.update("pos", "a", {"status": "closed"})
    held = live.refresh()
    assert sorted(held) == ["b", "c"] and held["c"].v == 1
    assert [d.id for d in live.ordered()] == ["b", "c"]
    assert store.queries == 0  # the watch's reads are its own: no query per refresh
    assert live.full_reads == 0
    store.update("pos", "c", {"v": 2})
    assert live.refresh()["c"].v == 2
    assert first.id == "a"


def test_an_unchanged_document_keeps_its_validated_model(clock: SimulatedClock) -> None:
    store = CountingStore()
    store.set("pos", "a", {"id": "a", "status": "open"})
    live = LiveDocs(store, clock, "pos", OPEN, Doc)
    held = live.refresh()["a"]
    store.set("pos", "a", {"id": "a", "status": "open"})  # rewritten, same content
    assert live.refresh()["a"] is held


def test_a_lost_stream_falls_back_and_watches_again(clock: SimulatedClock) -> None:
    store = CountingStore()
    store.set("pos", "a", {"id": "a", "status": "open"})
    live = LiveDocs(store, clock, "pos", OPEN, Doc)
    live.refresh()
    store.break_next_poll = True
    store.set("pos", "b", {"id": "b", "status": "open"})
    assert sorted(live.refresh()) == ["a", "b"]  # a new watch, read complete at once
    assert len(store.watches) == 2
    store.set("pos", "c", {"id": "c", "status": "open"})
    assert sorted(live.refresh()) == ["a", "b", "c"]


def test_resync_on_a_schedule(clock: SimulatedClock) -> None:
    store = CountingStore()
    live = LiveDocs(store, clock, "pos", OPEN, Doc, resync_ms=60_000)
    live.refresh()
    clock.advance(30)
    live.refresh()
    assert len(store.watches) == 1
    clock.advance(31)
    live.refresh()
    assert len(store.watches) == 2  # a fresh watch: a complete re-read


def test_without_a_change_feed_every_refresh_queries(clock: SimulatedClock) -> None:
    inner = SqliteStateStore()
    store = NoFeed(inner)
    inner.set("pos", "a", {"id": "a", "status": "open"})
    live = LiveDocs(store, clock, "pos", OPEN, Doc)  # type: ignore[arg-type]
    assert list(live.refresh()) == ["a"]
    inner.set("pos", "b", {"id": "b", "status": "open"})
    assert sorted(live.refresh()) == ["a", "b"]
    assert store.queries == 2 and live.full_reads == 2


def test_a_forgotten_document_ignores_late_echoes_until_the_store_confirms(
    clock: SimulatedClock,
) -> None:
    store = CountingStore()
    store.set("pos", "a", {"id": "a", "status": "open"})
    live = LiveDocs(store, clock, "pos", OPEN, Doc)
    live.refresh()
    live.forget("a")  # this process closed it; the store still says open (an echo)
    assert live.refresh() == {}
    store.update("pos", "a", {"status": "closed"})
    assert live.refresh() == {}


def test_merge_keeps_what_memory_tracks(clock: SimulatedClock) -> None:
    store = CountingStore()
    store.set("pos", "a", {"id": "a", "status": "open", "v": 1})
    live = LiveDocs(
        store,
        clock,
        "pos",
        OPEN,
        Doc,
        merge=lambda held, new: new.model_copy(update={"v": max(held.v, new.v)}),
    )
    live.refresh()
    live.hold("a", Doc(id="a", status="open", v=5))  # tracked in memory, not written
    store.update("pos", "a", {"status": "open", "v": 2})  # someone else writes
    assert live.refresh()["a"].v == 5
