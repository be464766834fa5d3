"""Builds a real run's daily report from tests/fixtures/run (no pipeline run)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.report import DailyReporter

RUN = Path(__file__).parent / "fixtures" / "run"
BREAKER_DAY = date(2025, 5, 21)  # the real run's day with trades and 49 breaker trips
_IDS = {"users": "user_id", "journal": "position_id"}


def run_state() -> dict[str, Any]:
    """The run's state documents by collection."""
    data: dict[str, Any] = json.loads((RUN / "state.json").read_text())
    return data


def build_reports(out: Path, day: date = BREAKER_DAY, *, with_market: bool = True) -> Path:
    """Write every user's report for ``day`` under ``out``; returns the blob root."""
    state = SqliteStateStore(out / "state.sqlite")
    for collection, docs in run_state().items():
        if collection == "stats":
            continue
        for doc in docs:
            state.set(collection, doc[_IDS.get(collection, "id")], doc)
    market = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True) if with_market else None
    blobs = LocalBlobStore(out / "blobs")
    clock = SimulatedClock(datetime.combine(day, datetime.min.time(), tzinfo=UTC))
    try:
        DailyReporter(state, blobs, InMemoryBus(), clock, market).run(day)
    finally:
        state.close()
        if market is not None:
            market.close()
    return out / "blobs"
