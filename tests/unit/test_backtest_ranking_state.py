"""The backtest's incremental answers to the ranker's two state reads equal the live ones.

``LiveSignals`` / ``JournalRates`` (app/backtest/ranking_state.py) against
``live_signal_symbols`` / ``symbol_success_rates`` on the same store, at every step of a
run that publishes signals, expires them, and journals trades (closes at whole and
fractional seconds, several in one second, wins, losses and flat trades, entries leaving
the look-back window).
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from _trading_fixtures import T0, signal

from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.backtest.ranking_state import JournalRates, LiveSignals
from prometheus_trader.ports import StateStore
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.rank import live_signal_symbols
from prometheus_trader.usecases.stats import symbol_success_rates

pytestmark = pytest.mark.unit

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT")


@pytest.mark.parametrize("store", [SqliteStateStore, MemoryStateStore])
def test_live_signals_and_rates_follow_the_store(store: type[StateStore]) -> None:
    """On SQLite JournalRates queries by close time, on the memory store it watches."""
    rng = random.Random(5)
    state = store(":memory:") if store is SqliteStateStore else store()
    live, rates = LiveSignals(), JournalRates()
    lookback = timedelta(hours=6)
    now = T0
    trades = 0
    for step in range(400):
        now += timedelta(minutes=5)
        if rng.random() < 0.3:  # a ranking publishes a signal (as publish_signal stores it)
            sig = signal(symbol=rng.choice(SYMBOLS), created_at=now, ttl_min=rng.choice((20, 45)))
            sig = sig.model_copy(update={"id": f"sig-{step}"})
            state.create(Collections.SIGNALS, sig.id, sig.model_dump(mode="json"))
            live.published(sig)
        for _ in range(rng.choice((0, 0, 1, 3))):  # trades closed since the last ranking
            closed = now - timedelta(minutes=4) + timedelta(seconds=rng.choice((0, 1, 30)))
            closed += timedelta(microseconds=rng.choice((0, 0, 250_000)))
            trades += 1
            doc = {
                "position_id": f"pos-{trades:04d}",
                "symbol": rng.choice(SYMBOLS),
                "closed_at": closed.isoformat().replace("+00:00", "Z"),
                "pnl_pct": rng.choice((-1.5, 0.0, 0.7, 2.0)),
            }
            state.create(Collections.JOURNAL, doc["position_id"], doc)
        assert live.symbols(now) == live_signal_symbols(state, now)
        assert rates.rates(state, now, lookback) == symbol_success_rates(state, now, lookback)
    assert trades > 100
