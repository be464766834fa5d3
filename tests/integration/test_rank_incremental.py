"""The ranker reads only the bars it has not read yet, and ranks exactly as a fresh one.

A long-lived ranker and a fresh ranker per round rank the same store (filled minute by
minute by the collector) at the same times: the stored rankings must be identical, and
after its first round the long-lived one must read a few minutes of bars per round, not
the whole window again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.analysts import default_panel
from prometheus_trader.domain.market import MINUTE_MS, CandleSeries, MarketType
from prometheus_trader.domain.synthesizer import policy_from_name
from prometheus_trader.ports import SeriesKey
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.rank import RankAndPublishSignals, RankerConfig

pytestmark = pytest.mark.integration
START = datetime(2025, 5, 21, 6, 0, tzinfo=UTC)


class CountingStore(DuckDBMarketStore):
    """Counts the candle rows the ranker reads."""

    rows_read = 0

    def candles_many(
        self, keys: Sequence[SeriesKey], timeframe: str, start_ms: int, end_ms: int
    ) -> dict[SeriesKey, CandleSeries]:
        out = super().candles_many(keys, timeframe, start_ms, end_ms)
        self.rows_read += sum(len(s) for s in out.values())
        return out


def _ranker(store: DuckDBMarketStore, clock: SimulatedClock) -> RankAndPublishSignals:
    return RankAndPublishSignals(
        store,
        SqliteStateStore(),
        InMemoryBus(),
        clock,
        default_panel(),
        policy_from_name("consensus"),
        RankerConfig(exchange="binance", market_type=MarketType.PERP, btc_symbol="BTC/USDT:USDT"),
    )


def test_long_lived_ranker_reads_only_new_bars(tmp_path: Path) -> None:
    clock = SimulatedClock(START)
    with DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True) as source:
        exchange = ReplayExchange(source, clock)
        store = CountingStore(tmp_path / "market")
        collector = CollectMarketData(exchange, store, clock, backfill_minutes=6 * 60)
        long_lived = _ranker(store, clock)
        per_round = []
        for round_ in range(4):
            for _ in range(5):  # the pipeline's minutes: collect, then rank at the 5th
                clock.set_ms(clock.now_ms() + MINUTE_MS)
                collector.run()
            before = store.rows_read
            long_lived.run()
            per_round.append(store.rows_read - before)
            fresh = _ranker(store, clock)
            fresh.run()
            (again,) = fresh._state.query(Collections.RANKINGS)
            kept = long_lived._state.get(Collections.RANKINGS, again["id"])
            assert kept == again, f"round {round_}: the rankings differ"
        store.close()
    symbols = 16
    assert per_round[0] >= symbols * 6 * 60  # the first round reads the whole window
    assert all(n <= symbols * 6 for n in per_round[1:]), per_round
