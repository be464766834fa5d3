"""A world where one exit-monitor cycle closes many venue positions at once: users whose
orders go through ccxt to the Binance USD-M stand-in (``tests/standins/binance_usdm.py``)
with their own keys, positions opened by the real executor (``ExecuteSignalForUser``,
entry + stop + take-profit at the venue), and an ``ExitMonitor`` over the same SQLite
state whose max hold (1 minute) has passed for every position, so its next cycle closes
all of them. Used by ``bench/close_latency.py`` and
``tests/integration/test_close_pool_venue.py``.
"""

from __future__ import annotations

import copy
import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.integration.ccxt_executors import FAST, make_executor, message, standin_keys
from tests.standins.binance_usdm import Stand, serve_binance
from tests.standins.engine import DEFAULT_NOW_MS, Engine

from prometheus_trader.adapters.ccxt import CcxtExchange, OrderClaims, RetryPolicy
from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.trading import Position
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections

# symbols of the bundled sample, most liquid first (one position per user and symbol)
SYMBOLS = (
    "BTC/USDT:USDT",
    "ETH/USDT:USDT",
    "SOL/USDT:USDT",
    "XRP/USDT:USDT",
    "BNB/USDT:USDT",
    "ADA/USDT:USDT",
)


def signal_for(signal_id: str, symbol: str, price: float, now: datetime) -> OpportunitySignal:
    """A long signal at ``price``: stop 1 % below, take-profit 3 % above."""
    return OpportunitySignal(
        id=signal_id,
        symbol=symbol,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=Direction.LONG,
        entry_price=price,
        entry_low=price * 0.999,
        entry_high=price * 1.001,
        stop_loss=price * 0.99,
        stop_loss_pct=1.0,
        take_profits=[TakeProfitLevel(price=price * 1.03, pct=3.0, size_fraction=1.0)],
        reward_risk=3.0,
        confidence=0.8,
        created_at=now,
        expires_at=now + timedelta(minutes=20),
        strategy="consensus",
    )


def exit_client_id(position: Position) -> str:
    """The client order id of the monitor's exit order for ``position``."""
    return client_order_id(position.signal_id, position.user_id, "exit")


@dataclass
class World:
    """The stand-in, the shared state and the positions opened at the venue."""

    stand: Stand
    engine: Engine
    state: SqliteStateStore
    positions: list[Position]
    blobs: Path
    _saved: dict[str, Any] = field(default_factory=dict)
    _forks: int = 0

    def save(self) -> None:
        """Remember the venue's books as they are (what ``fork`` goes back to)."""
        e = self.engine
        with e.lock:
            next_id = next(e._ids)
            e._ids = itertools.count(next_id)
            self._saved = {
                "accounts": copy.deepcopy(e.accounts),
                "orders": copy.deepcopy(e.orders),
                "log": copy.deepcopy(e.log),
                "next_id": next_id,
            }

    def fork(self) -> World:
        """The saved world again: the venue's books put back and a copy of the state
        store as it is now (so several monitors can each close the same positions)."""
        e = self.engine
        with e.lock:
            e.accounts = copy.deepcopy(self._saved["accounts"])
            e.orders = copy.deepcopy(self._saved["orders"])
            e.log = copy.deepcopy(self._saved["log"])
            e._ids = itertools.count(self._saved["next_id"])
            e.requests.clear()
        self._forks += 1
        path = self.blobs / f"state-fork-{self._forks}.sqlite"
        src, dst = sqlite3.connect(self.state.path), sqlite3.connect(path)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        blobs = self.blobs / f"fork-{self._forks}"
        blobs.mkdir()
        return World(self.stand, e, SqliteStateStore(path), self.positions, blobs)

    def monitor(
        self, concurrency: int, *, rate_limit: bool = False, retry: RetryPolicy | None = None
    ) -> ExitMonitor:
        """An exit monitor (its own ccxt clients, as a worker process has) two minutes
        after the opening: every position is past its 1-minute max hold."""
        exchange = CcxtExchange(
            "binance",
            "demo",
            standin_keys("binance"),
            urls=self.stand.urls,
            retry=retry or FAST,
            timeout_ms=10_000,
            rate_limit=rate_limit,
            claims=OrderClaims(self.state),
        )
        clock = SimulatedClock(datetime.fromtimestamp(DEFAULT_NOW_MS / 1000, UTC))
        clock.advance(120.0)
        return ExitMonitor(
            self.state,
            exchange,
            InMemoryBus(),
            LocalBlobStore(self.blobs / f"monitor-{concurrency}"),
            clock,
            ExitConfig(max_hold_minutes=1),
            close_concurrency=concurrency,
        )


@contextmanager
def venue_world(tmp: Path, users: int, per_user: int) -> Iterator[World]:
    """``users`` users with ``per_user`` open long positions each (one per symbol), opened
    through the executor on a stand-in answering at once (TCP_NODELAY: no ~40 ms
    delayed-ACK stall per request, so the latency is the one set); set ``world.stand.venue.
    latency_s`` afterwards to slow the venue down for the cycle."""
    if per_user > len(SYMBOLS):
        raise ValueError(f"at most {len(SYMBOLS)} positions per user")
    names = [f"u{i:03d}" for i in range(users)]
    engine = Engine(keys={u: f"{u}-secret" for u in names})
    now = datetime.fromtimestamp(DEFAULT_NOW_MS / 1000, UTC)
    state_path = tmp / "state.sqlite"
    state = SqliteStateStore(state_path)
    with serve_binance(engine) as stand:
        executor = make_executor(stand.urls, state_path, tmp / "blobs-exec", DEFAULT_NOW_MS)
        for u in names:
            user = User.with_profile(u, RiskProfile.AGGRESSIVE)
            state.create(Collections.USERS, u, user.model_dump(mode="json"))
        for k, symbol in enumerate(SYMBOLS[:per_user]):
            price = engine.last_price(symbol)
            for u in names:
                signal = signal_for(f"sig-{k}-{u}", symbol, price, now)
                state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
                done = executor.handle(message(signal.id, u))
                if done.position_id is None:
                    raise RuntimeError(f"{u} {symbol}: not opened ({done.outcome})")
        positions = sorted(
            (
                Position.model_validate(d)
                for d in state.query(Collections.POSITIONS)
                if d["status"] == "open"
            ),
            key=lambda p: p.id,
        )
        world = World(stand, engine, state, positions, tmp)
        world.save()
        yield world
