"""Closes run concurrently across accounts change nothing: two identical embedded worlds
over the bundled real sample, one exit monitor closing inline as it decides
(``close_concurrency=1``, the sequential cycle) and one running each cycle's closes on a
pool of threads (``close_concurrency=4``). Many positions close in the same cycle (stops,
targets, the rules, a kill switch, max hold), one user's exit orders fail; every cycle's
report and, at the end, every stored document (all collections, journal and stats from
the closed events included), every exchange order and the audit log are the same
(``tests/unit/test_close_pool.py`` proves the groups do run at the same time)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_usecases_embedded import World, world

from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.signals import Direction, OpportunitySignal
from prometheus_trader.domain.trading import Order, OrderRequest
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import ExchangeError
from prometheus_trader.usecases.close_pool import CloseOutcome, PendingClose
from prometheus_trader.usecases.evaluate import EvaluateClosedPosition
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Collections, Topics

pytestmark = pytest.mark.integration
__all__ = ["world"]

USERS = 16
FAILING = "user2"  # its exit orders are refused: the close fails, the others proceed
KILLED = "user6"  # kill switch on, inactive: the portfolio rules skip it, the cycle closes
SECOND = "XRP/USDT:USDT"  # each user's second position (one exchange account)
CONFIG = ExitConfig(max_hold_minutes=4)  # the default rules; what is left closes at once


def _open(w: World) -> None:
    """Longs and shorts on two symbols per user, a few with tight stops (they fill on the
    exchange), most with wide ones (the rules and max hold close them with market
    orders: a user's two closes in one cycle, in order on one thread)."""
    for k in range(USERS):
        w.clock.advance(0.001)  # one signal each (its id holds the time in ms)
        user = w.add_user(User.with_profile(f"user{k}", RiskProfile.AGGRESSIVE))
        direction = Direction.LONG if k % 2 == 0 else Direction.SHORT
        signal = w.signal(direction=direction, stop_pct=(0.05, 0.1, 3.0, 4.0)[k % 4])
        w.executor.handle(w.execution_message(signal.id, user.user_id))
        other = _on(w, signal, SECOND)
        w.executor.handle(w.execution_message(other.id, user.user_id))


def _on(w: World, signal: OpportunitySignal, symbol: str) -> OpportunitySignal:
    """``signal``'s levels moved to ``symbol``'s current price, stored."""
    price = w.exchange.fetch_tickers([symbol])[0].last
    r = price / signal.entry_price
    moved = signal.model_copy(
        update={
            "id": f"{signal.id}-{symbol.split('/')[0]}",
            "symbol": symbol,
            "entry_price": price,
            "entry_low": signal.entry_low * r,
            "entry_high": signal.entry_high * r,
            "stop_loss": signal.stop_loss * r,
            "take_profits": [
                tp.model_copy(update={"price": tp.price * r}) for tp in signal.take_profits
            ],
        }
    )
    w.state.create(Collections.SIGNALS, moved.id, moved.model_dump(mode="json"))
    return moved


def _refuse_exits(w: World) -> None:
    real = w.exchange.create_order

    def create_order(account: str, request: OrderRequest) -> Order:
        if account == FAILING and request.reduce_only and request.type.value == "market":
            raise ExchangeError("refused (test)")
        return real(account, request)

    w.exchange.create_order = create_order  # type: ignore[method-assign]


def _stored(w: World, blobs: Path) -> dict[str, Any]:
    """Every stored document, every order of every account, the audit log's lines."""
    collections = sorted(
        v for k, v in vars(Collections).items() if k.isupper() and isinstance(v, str)
    )
    docs = {
        c: sorted(w.state.query(c, []), key=lambda d: str(d.get("id", d.get("user_id", d))))
        for c in collections
    }
    orders = {
        a: [o.model_dump(mode="json") for o in w.exchange.orders(a)]
        for a in sorted(w.exchange.accounts())
    }
    audit = {
        str(p.relative_to(blobs)): sorted(p.read_text().splitlines())  # order across accounts
        for p in sorted(blobs.rglob("*"))
        if p.is_file()
    }
    return {"docs": docs, "orders": orders, "audit": audit}


@pytest.fixture
def worlds(tmp_path: Path) -> Iterator[tuple[World, World]]:
    gen = world.__wrapped__  # type: ignore[attr-defined]
    made = [gen(tmp_path / "one"), gen(tmp_path / "many")]
    yield next(made[0]), next(made[1])
    for g in made:
        next(g, None)


def test_concurrent_closes_store_exactly_what_sequential_closes_store(
    worlds: tuple[World, World], tmp_path: Path
) -> None:
    threads: set[str] = set()
    monitors: list[ExitMonitor] = []
    for w, concurrency in zip(worlds, (1, 4), strict=True):
        _open(w)
        _refuse_exits(w)
        evaluator = EvaluateClosedPosition(w.state, w.clock)  # journal + stats
        w.bus.subscribe(Topics.EVENTS, "evaluator", evaluator.handle)
        monitors.append(
            ExitMonitor(
                w.state, w.exchange, w.bus, w.blobs, w.clock, CONFIG, close_concurrency=concurrency
            )
        )
    pooled = monitors[1]
    inner = pooled._run_close

    def seen(pending: PendingClose) -> CloseOutcome:
        threads.add(threading.current_thread().name)
        return inner(pending)

    pooled._run_close = seen  # type: ignore[method-assign]
    most = 0
    failed: set[str] = set()
    try:
        for cycle in range(150):  # 5 minutes of 2-second cycles
            reports = []
            for w, monitor in zip(worlds, monitors, strict=True):
                w.clock.advance(2)
                if cycle == 40:
                    killed = {"kill_switch": True, "active": False}
                    w.state.update(Collections.USERS, KILLED, killed)
                reports.append(monitor.cycle())
                w.bus.drain()
            assert reports[0] == reports[1], cycle
            most = max(most, len(reports[0].closed))
            failed |= set(reports[0].failed)
        assert _stored(worlds[0], tmp_path / "one" / "blobs") == _stored(
            worlds[1], tmp_path / "many" / "blobs"
        )
    finally:
        for m in monitors:
            m.close()
    reasons = {
        d["exit_reason"]
        for d in worlds[0].state.query(Collections.POSITIONS, [])
        if d["status"] == "closed"
    }
    assert {"stop_loss", "kill_switch", "max_hold"} <= reasons, reasons  # both paths
    assert most >= 6, "one cycle closed many positions at once"
    owners = {worlds[0].state.get(Collections.POSITIONS, pid)["user_id"] for pid in failed}  # type: ignore[index]
    assert owners == {FAILING}, failed  # isolated and counted (retried every cycle)
    assert len(worlds[0].state.query(Collections.JOURNAL, [])) >= USERS - 2
    assert any(t.startswith("exit-close") for t in threads), threads  # on the pool
