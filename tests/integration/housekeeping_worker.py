"""The child process of the concurrent-housekeeping test (light imports: spawn is slow)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.usecases.housekeeping import NotifyExpiringWatchlist


def notice_pass(path: str, start: str) -> list[str]:
    """One notice pass over the shared SQLite state; returns what it published."""
    store = SqliteStateStore(Path(path))
    try:
        clock = SimulatedClock(datetime.fromisoformat(start))
        return NotifyExpiringWatchlist(store, InMemoryBus(), clock).run()
    finally:
        store.close()
