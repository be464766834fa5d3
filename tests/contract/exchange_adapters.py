"""The ``Exchange`` adapters under contract, one factory each.

A factory takes the test's ``pytest.FixtureRequest`` (for fixtures such as ``emulators``:
``request.getfixturevalue("emulators")``) and is a context manager yielding a
``PortHarness``: a fresh exchange whose accounts start with 10 000 USDT, at 2025-05-21
06:00:30 UTC of the bundled sample (the same recorded Binance USD-M bars behind every
adapter), and a way to move its market time. Add an adapter with ``@register("name")``;
``test_exchange_port.py`` runs every test on it: the replay exchange, its paper ledger
persisted in SQLite and in Firestore (the emulator), and ccxt on the Binance USD-M and
Bybit stand-ins.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from tests.standins.engine import DEFAULT_NOW_MS, Engine, recorded_market

from prometheus_trader.adapters.ccxt import CcxtExchange, Credentials, RetryPolicy
from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.ports import Exchange

START_MS = DEFAULT_NOW_MS
ACCOUNTS = ("alice", "bob", "carol")


@dataclass
class PortHarness:
    """An exchange under test and how to move its market time."""

    name: str
    exchange: Exchange
    advance_ms: Callable[[int], None]
    exchange_id: str = "binance"


Factory = Callable[[pytest.FixtureRequest], AbstractContextManager[PortHarness]]
ADAPTERS: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Add an adapter factory under ``name``."""

    def add(factory: Factory) -> Factory:
        ADAPTERS[name] = factory
        return factory

    return add


@register("replay")
@contextmanager
def replay(request: pytest.FixtureRequest) -> Iterator[PortHarness]:
    store = recorded_market().store
    clock = SimulatedClock(datetime.fromtimestamp(START_MS / 1000, UTC))
    exchange = ReplayExchange(store, clock, starting_balance=10_000.0)
    yield PortHarness("replay", exchange, lambda ms: clock.advance(ms / 1000))


@register("paper-sqlite")
@contextmanager
def paper_sqlite(request: pytest.FixtureRequest) -> Iterator[PortHarness]:
    """The replay exchange with its paper ledger persisted in a SQLite state store."""
    tmp = request.getfixturevalue("tmp_path")
    clock = SimulatedClock(datetime.fromtimestamp(START_MS / 1000, UTC))
    # a file of its own: a test may open two harnesses (tests/contract/test_exchange_batch.py)
    ledger = SqliteStateStore(tmp / f"paper-{uuid.uuid4().hex[:8]}.sqlite")
    exchange = ReplayExchange(
        recorded_market().store, clock, starting_balance=10_000.0, ledger=ledger
    )
    yield PortHarness("paper-sqlite", exchange, lambda ms: clock.advance(ms / 1000))


@register("paper-memory")
@contextmanager
def paper_memory(request: pytest.FixtureRequest) -> Iterator[PortHarness]:
    """The same with its paper ledger in a ``MemoryStateStore`` (the backtest's)."""
    clock = SimulatedClock(datetime.fromtimestamp(START_MS / 1000, UTC))
    exchange = ReplayExchange(
        recorded_market().store,
        clock,
        starting_balance=10_000.0,
        ledger=MemoryStateStore(),
        ledger_exclusive=True,
    )
    yield PortHarness("paper-memory", exchange, lambda ms: clock.advance(ms / 1000))


@register("paper-firestore")
@contextmanager
def paper_firestore(request: pytest.FixtureRequest) -> Iterator[PortHarness]:
    """The same with its paper ledger in Firestore (the emulator)."""
    request.getfixturevalue("emulators")
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore

    clock = SimulatedClock(datetime.fromtimestamp(START_MS / 1000, UTC))
    ledger = FirestoreStateStore(prefix=f"port-{uuid.uuid4().hex[:12]}-")
    exchange = ReplayExchange(
        recorded_market().store, clock, starting_balance=10_000.0, ledger=ledger
    )
    yield PortHarness("paper-firestore", exchange, lambda ms: clock.advance(ms / 1000))


def standin_keys(exchange: str, env: str = "demo") -> Callable[[str], Credentials]:
    """Every test account's keys on a stand-in: key = account name."""
    return lambda account: Credentials(exchange, "demo", account, f"{account}-secret")  # type: ignore[arg-type]


FAST_RETRY = RetryPolicy(attempts=5, base_s=0.01, max_wait_s=0.05)


@register("ccxt-binanceusdm-standin")
@contextmanager
def ccxt_binance(request: pytest.FixtureRequest) -> Iterator[PortHarness]:
    from tests.standins.binance_usdm import serve_binance

    engine = Engine(keys={a: f"{a}-secret" for a in ACCOUNTS}, now_ms=START_MS)
    with serve_binance(engine) as stand:
        exchange = CcxtExchange(
            "binance",
            "demo",
            standin_keys("binance"),
            urls=stand.urls,
            retry=FAST_RETRY,
            timeout_ms=3_000,
            rate_limit=False,
        )
        yield PortHarness("ccxt-binanceusdm-standin", exchange, engine.advance)


@register("ccxt-bybit-standin")
@contextmanager
def ccxt_bybit(request: pytest.FixtureRequest) -> Iterator[PortHarness]:
    from tests.standins.bybit import serve_bybit

    engine = Engine(keys={a: f"{a}-secret" for a in ACCOUNTS}, now_ms=START_MS)
    with serve_bybit(engine) as stand:
        exchange = CcxtExchange(
            "bybit",
            "demo",
            standin_keys("bybit"),
            urls=stand.urls,
            retry=FAST_RETRY,
            timeout_ms=3_000,
            rate_limit=False,
        )
        yield PortHarness("ccxt-bybit-standin", exchange, engine.advance, exchange_id="bybit")
