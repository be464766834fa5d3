"""Statistics without hot documents: the evaluator writes each trade once (journal) and
only the user's own stats; symbol aggregates are derived from the journal when read.

On the Firestore emulator, 50 evaluators closing trades of 50 users at once (10 separate
processes × 5 concurrent evaluators each) all complete. Before this change every one of
them also rewrote the shared ``symbol-*`` and ``strategy-*`` documents, and 20 at once
completed none in 240 s.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.unit._trading_fixtures import T0, T0_MS, position, signal

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.emulators import EmulatorStack
from prometheus_trader.domain.events import Event, EventType
from prometheus_trader.domain.trading import Execution, ExitReason, PositionStatus
from prometheus_trader.ports import BusMessage, StateStore
from prometheus_trader.usecases.evaluate import EvaluateClosedPosition
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.stats import symbol_success_rates, tally_by

pytestmark = pytest.mark.integration

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT")
CLOSED_AT = T0 + timedelta(hours=1)
PROCESSES, PER_PROCESS = 10, 5


def seed_closed_trade(state: StateStore, n: int) -> BusMessage:
    """User ``u<n>``'s closed position (win on even n, loss on odd) and its event."""
    user_id, pos_id, sig_id = f"u{n}", f"pos-{n}", f"sig-{n}"
    symbol = SYMBOLS[n % len(SYMBOLS)]
    sig = signal(symbol=symbol).model_copy(update={"id": sig_id})
    exit_price = 101.0 if n % 2 == 0 else 99.0
    pos = position(
        symbol=symbol,
        id=pos_id,
        user_id=user_id,
        signal_id=sig_id,
        status=PositionStatus.CLOSED,
        closed_at=CLOSED_AT,
        closed_ms=T0_MS + 3_600_000,
        exit_price=exit_price,
        exit_reason=ExitReason.TAKE_PROFIT if n % 2 == 0 else ExitReason.STOP_LOSS,
    )
    execution = Execution(
        id=pos_id, signal_id=sig_id, user_id=user_id, symbol=symbol, created_at=T0
    )
    state.set(Collections.SIGNALS, sig_id, sig.model_dump(mode="json"))
    state.set(Collections.POSITIONS, pos_id, pos.model_dump(mode="json"))
    state.set(Collections.EXECUTIONS, pos_id, execution.model_dump(mode="json"))
    event = Event(
        id=f"closed-{pos_id}",
        type=EventType.POSITION_CLOSED,
        created_at=CLOSED_AT,
        user_id=user_id,
        payload={"position_id": pos_id},
    )
    return BusMessage(topic="events", message_id=str(n), data=event.model_dump(mode="json"))


def test_evaluator_writes_only_the_trade_and_the_users_own_stats(tmp_path: Path) -> None:
    state = SqliteStateStore(tmp_path / "state.sqlite")
    evaluator = EvaluateClosedPosition(state, SimulatedClock(CLOSED_AT))
    for n in range(6):
        assert evaluator.handle(seed_closed_trade(state, n)) is not None

    stats_ids = sorted(d["user_id"] for d in state.query(Collections.STATS))
    assert stats_ids == [f"u{n}" for n in range(6)]
    assert all(d["kind"] == "user" for d in state.query(Collections.STATS))
    journal = state.query(Collections.JOURNAL)
    assert len(journal) == 6
    # aggregates come from the facts: n=0..5 → BTC {0 win, 3 loss}, ETH {1 loss, 4 win},
    # SOL {2 win, 5 loss}
    by_symbol = tally_by(journal, "symbol")
    assert {s: (t.trades, t.wins) for s, t in by_symbol.items()} == {
        "BTC/USDT:USDT": (2, 1),
        "ETH/USDT:USDT": (2, 1),
        "SOL/USDT:USDT": (2, 1),
    }
    assert tally_by(journal, "strategy")["consensus"].trades == 6
    assert symbol_success_rates(state, CLOSED_AT, timedelta(days=30)) == {s: 0.5 for s in SYMBOLS}
    # the lookback bounds what is read: a window that ends before the closes sees nothing
    later = CLOSED_AT + timedelta(days=40)
    assert symbol_success_rates(state, later, timedelta(days=30)) == {}


def _evaluate_batch(env: dict[str, str], project: str, prefix: str, numbers: list[int]) -> int:
    """One process: a fresh Firestore client per evaluator, all evaluating at once."""
    os.environ.update(env)
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

    def one(n: int) -> bool:
        state = FirestoreStateStore(project=project, prefix=prefix)
        evaluator = EvaluateClosedPosition(state, SimulatedClock(CLOSED_AT))
        message = seed_closed_trade_message(n)
        return evaluator.handle(message) is not None

    with ThreadPoolExecutor(max_workers=len(numbers)) as pool:
        return sum(pool.map(one, numbers))


def seed_closed_trade_message(n: int) -> BusMessage:
    """The event only (the documents were seeded by the test process)."""
    event = Event(
        id=f"closed-pos-{n}",
        type=EventType.POSITION_CLOSED,
        created_at=CLOSED_AT,
        user_id=f"u{n}",
        payload={"position_id": f"pos-{n}"},
    )
    return BusMessage(topic="events", message_id=str(n), data=event.model_dump(mode="json"))


def test_fifty_evaluators_of_different_users_all_complete_on_firestore(
    emulators: EmulatorStack,
) -> None:
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

    project, prefix = emulators.project, f"contention-{uuid.uuid4().hex[:8]}-"
    seeder = FirestoreStateStore(project=project, prefix=prefix)
    total = PROCESSES * PER_PROCESS
    for n in range(total):
        seed_closed_trade(seeder, n)

    batches = [list(range(p * PER_PROCESS, (p + 1) * PER_PROCESS)) for p in range(PROCESSES)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        done = pool.starmap(
            _evaluate_batch, [(emulators.env(), project, prefix, b) for b in batches]
        )

    assert sum(done) == total, f"evaluations completed per process: {done}"
    journal = seeder.query(Collections.JOURNAL)
    assert len(journal) == total
    stats = seeder.query(Collections.STATS)
    assert sorted(d["user_id"] for d in stats) == sorted(f"u{n}" for n in range(total))
    assert {d["kind"] for d in stats} == {"user"}, "no shared aggregate document is written"
    assert all(d["trades"] == 1 for d in stats)
    rates = symbol_success_rates(seeder, datetime(2030, 1, 1, tzinfo=UTC), timedelta(days=3650))
    assert set(rates) == set(SYMBOLS)
