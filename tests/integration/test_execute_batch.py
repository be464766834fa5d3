"""The batched executor equals the per-user path, document for document.

The same world (mixed profiles, users with open positions, paused, advisory, Kelly users,
a tripped breaker, watchlist users, a refused stop, a close-on-opposite user) runs one
signal through ``DispatchSignal`` + ``ExecuteSignalForUser`` (one message per user) and
through ``DispatchSignal(buckets=...)`` + ``ExecuteSignalBatch`` (one message per bucket);
every stored document (executions, positions, events, stats, the paper ledger's orders,
fills and balances, which live in the same SQLite file) must be equal.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError
from tests.integration.execution_world import SYMBOL, World, make_world

from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.users import RiskProfile, TradingMode, User
from prometheus_trader.ports import BusMessage, Exchange, OrderRejected, OrderRequest
from prometheus_trader.usecases.dispatch import DispatchSignal, user_bucket
from prometheus_trader.usecases.execute import ExecuteSignalForUser
from prometheus_trader.usecases.execute_batch import BatchReport, ExecuteSignalBatch
from prometheus_trader.usecases.names import Collections, Subscriptions, Topics

pytestmark = pytest.mark.integration

PROFILES = list(RiskProfile)
BUCKETS = 3


@pytest.fixture
def worlds(tmp_path: Path) -> Iterator[tuple[World, World]]:
    one = make_world(tmp_path / "per-user")
    two = make_world(tmp_path / "batch")
    yield next(one), next(two)
    for gen in (one, two):
        for _ in gen:
            pass


def _signal(
    world: World, direction: Direction, levels: tuple[float, ...], symbol: str = SYMBOL
) -> OpportunitySignal:
    price = world.exchange.fetch_tickers([symbol])[0].last
    sign = 1 if direction is Direction.LONG else -1
    now = world.clock.now()
    signal = OpportunitySignal(
        id=f"sig-{direction.value}-{symbol[:3]}-{world.clock.now_ms()}",
        symbol=symbol,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=direction,
        entry_price=price,
        entry_low=price * 0.999,
        entry_high=price * 1.001,
        stop_loss=price * (1 - sign * 0.01),
        stop_loss_pct=1.0,
        take_profits=[
            TakeProfitLevel(price=price * (1 + sign * r / 100), pct=r, size_fraction=f)
            for r, f in zip(levels, (0.5, 0.3, 0.2), strict=True)
        ],
        reward_risk=sum(r * f for r, f in zip(levels, (0.5, 0.3, 0.2), strict=True)),
        confidence=0.8,
        created_at=now,
        expires_at=now + timedelta(minutes=20),
        strategy="consensus",
    )
    world.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
    return signal


def _users() -> list[User]:
    users = [User.with_profile(f"u{i:03d}", PROFILES[i % 3]) for i in range(18)]
    users.append(User.with_profile("paused", RiskProfile.MODERATE, paused=True))
    users.append(User.with_profile("advisor", RiskProfile.MODERATE, mode=TradingMode.ADVISORY))
    users.append(User.with_profile("kelly-a", RiskProfile.AGGRESSIVE, kelly_fraction=0.5))
    users.append(User.with_profile("kelly-b", RiskProfile.MODERATE, kelly_fraction=0.25))
    users.append(User.with_profile("tripped", RiskProfile.AGGRESSIVE))
    users.append(User.with_profile("watching", RiskProfile.AGGRESSIVE, watch_all=False))
    users.append(User.with_profile("not-watching", RiskProfile.AGGRESSIVE, watch_all=False))
    users.append(User.with_profile("stop-refused", RiskProfile.AGGRESSIVE))
    users.append(
        User.with_profile("flipper", RiskProfile.AGGRESSIVE, close_on_opposite_signal=True)
    )
    return users


def _seed(world: World) -> None:
    now = world.clock.now()
    for user in _users():
        world.state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
    for user_id in ("kelly-a", "kelly-b"):
        for j in range(30):
            world.state.set(
                Collections.JOURNAL,
                f"j-{user_id}-{j}",
                {"user_id": user_id, "equity_pnl_pct": 2.0 if j % 3 else -1.0},
            )
    # an equity peak far above today's equity: the drawdown breaker trips on observation
    world.state.set(
        Collections.STATS,
        "user-tripped",
        {
            "kind": "user",
            "user_id": "tripped",
            "peak_equity": 25_000.0,
            "day": now.strftime("%Y-%m-%d"),
            "day_start_equity": 10_000.0,
        },
    )
    world.state.set(
        Collections.WATCHLISTS,
        "watching-eth",
        {
            "user_id": "watching",
            "exchange": "binance",
            "market_type": "perp",
            "symbol": SYMBOL,
            "priority": 1,
            "added_at": now.isoformat(),
            "expires_at": (now + timedelta(days=1)).isoformat(),
        },
    )


_HANDLERS: dict[int, Any] = {}
REPORTS: list[BatchReport] = []


def _run(world: World, signal: OpportunitySignal, batched: bool) -> None:
    exchange = cast(Exchange, world.faulty)
    args = (world.state, exchange, world.market, world.bus, world.blobs, world.clock)
    if batched:
        batch = ExecuteSignalBatch(*args)

        def handler(message: BusMessage) -> None:
            assert "user_ids" in message.data
            REPORTS.append(batch.handle_batch(message))

        dispatcher = DispatchSignal(world.state, world.bus, world.clock, buckets=BUCKETS)
    else:
        handler = ExecuteSignalForUser(*args).handle  # type: ignore[assignment]
        dispatcher = DispatchSignal(world.state, world.bus, world.clock)
    if id(world) not in _HANDLERS:  # one subscription per world, its handler swapped
        world.bus.subscribe(
            Topics.EXECUTIONS,
            Subscriptions.EXECUTOR,
            lambda message: _HANDLERS[id(world)](message),
        )
    _HANDLERS[id(world)] = handler
    dispatcher.handle(_message(signal))
    world.bus.drain_all()


def _message(signal: OpportunitySignal) -> BusMessage:
    return BusMessage(
        topic=Topics.SIGNALS, message_id=signal.id, data=signal.model_dump(mode="json")
    )


def _documents(world: World) -> dict[tuple[str, str], str]:
    path = world.state.path
    conn = sqlite3.connect(str(path))
    try:
        rows = conn.execute("SELECT collection, id, data FROM documents").fetchall()
    finally:
        conn.close()
    return {(c, i): d for c, i, d in rows}


def _audit_lines(world: World) -> list[str]:
    """Every line of the order audit log (per-user and per-batch objects), sorted."""
    return sorted(
        line
        for key in world.blobs.list("audit/orders/")
        for line in world.blobs.get(key).decode().splitlines()
    )


def _refuse_stop(signal_id: str) -> Any:
    cid = client_order_id(signal_id, "stop-refused", "sl")

    def rule(account: str, request: OrderRequest) -> BaseException | None:
        return OrderRejected("stop refused") if request.client_order_id == cid else None

    return rule


def test_the_batch_path_stores_what_the_per_user_path_stores(
    worlds: tuple[World, World],
) -> None:
    stores: list[dict[tuple[str, str], str]] = []
    audits: list[list[str]] = []
    for world, batched in zip(worlds, (False, True), strict=True):
        _seed(world)
        # a first (short) signal per user on both sides: open positions to count, and
        # the close-on-opposite user's position the long signal closes first
        first = _signal(world, Direction.SHORT, (3.0, 4.0, 5.0))
        other = _signal(world, Direction.LONG, (3.0, 4.0, 5.0), symbol="BTC/USDT:USDT")
        for user in _users():
            if user.user_id in ("flipper", "u001", "u002"):
                world.executor.handle(world.message(first, user))
            elif user.user_id in ("u003", "u004", "u005", "kelly-a", "advisor"):
                world.executor.handle(world.message(other, user))
        world.clock.advance(180)
        # the long signal: the conservative third rejects it (first take profit at 2.2R)
        second = _signal(world, Direction.LONG, (2.2, 3.0, 4.0))
        world.faulty.rules.append(_refuse_stop(second.id))
        _run(world, second, batched=batched)
        stores.append(_documents(world))
        audits.append(_audit_lines(world))
    per_user, batch = stores
    assert per_user.keys() == batch.keys()
    different = sorted(k for k in per_user if per_user[k] != batch[k])
    assert different == []
    outcomes = {
        k[1]: v
        for k, v in per_user.items()
        if k[0] == Collections.EXECUTIONS and "sig-long-ETH" in v
    }
    text = " ".join(outcomes.values())
    for outcome in ('"accepted"', '"rejected"', '"advised"', '"failed"'):
        assert outcome in text
    assert len({user_bucket(u.user_id, BUCKETS) for u in _users()}) == BUCKETS
    # most users went the fast path; the rare cases went per user
    fast = {u for r in REPORTS for u in r.fast}
    per_user = {u for r in REPORTS for u in r.per_user}
    assert len(REPORTS) == BUCKETS
    assert {"stop-refused", "flipper"} <= per_user
    assert {"advisor", "kelly-a", "kelly-b", "tripped", "watching", "u000", "u003"} <= fast
    assert not fast & per_user
    # the audit log: the same lines. The batch writes its fast users' lines as one
    # object per batch message; a user it hands to the per-user path after placing its
    # entry (the refused stop) gets that entry's line again from the per-user path (at
    # least once, as on a redelivery)
    one, two = audits
    assert set(one) == set(two)
    twice = Counter(two) - Counter(one)
    assert [(json.loads(x)["user_id"], json.loads(x)["type"]) for x in twice] == [
        ("stop-refused", "market")
    ]
    objects = worlds[1].blobs.list("audit/orders/")
    in_batches = {
        json.loads(x)["user_id"]
        for key in objects
        if "/batch-" in key
        for x in worlds[1].blobs.get(key).decode().splitlines()
    }
    assert sum("/batch-" in key for key in objects) == BUCKETS
    assert in_batches <= fast | {"stop-refused"}


def test_buckets_are_stable_and_spread() -> None:
    assert user_bucket("u000", 64) == user_bucket("u000", 64)
    spread = {user_bucket(f"user-{i}", 64) for i in range(1000)}
    assert len(spread) == 64


def test_a_broken_document_holds_up_only_its_own_user(worlds: tuple[World, World]) -> None:
    """A user document or an open position that does not parse fails that user alone:
    the rest of the bucket is decided and executed, then the batch raises (the trigger
    acks a ``ValidationError`` as poison, so nothing else would ever run them)."""
    world = worlds[1]
    good = [User.with_profile(f"ok{i}", PROFILES[i % 3]) for i in range(4)]
    for user in good:
        world.state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
    broken_user = User.with_profile("broken-user", RiskProfile.MODERATE).model_dump(mode="json")
    broken_user["limits"] = "not limits"
    world.state.create(Collections.USERS, "broken-user", broken_user)
    holder = User.with_profile("broken-position", RiskProfile.MODERATE)
    world.state.create(Collections.USERS, holder.user_id, holder.model_dump(mode="json"))
    world.state.create(
        Collections.POSITIONS,
        "garbled",
        {"id": "garbled", "user_id": holder.user_id, "status": "open", "symbol": SYMBOL},
    )
    signal = _signal(world, Direction.LONG, (3.0, 4.0, 5.0))
    batch = ExecuteSignalBatch(
        world.state, world.exchange, world.market, world.bus, world.blobs, world.clock
    )
    ids = [u.user_id for u in good] + ["broken-user", holder.user_id]
    message = BusMessage(
        topic=Topics.EXECUTIONS,
        message_id="batch-1",
        data={"signal_id": signal.id, "user_ids": ids},
    )
    with pytest.raises(ValidationError):
        batch.handle_batch(message)
    records = {
        d["user_id"]: d
        for d in world.state.query(Collections.EXECUTIONS)
        if d["signal_id"] == signal.id
    }
    assert set(records) == {u.user_id for u in good}
    assert all(r["completed_at"] is not None for r in records.values())
    assert {r["outcome"] for r in records.values()} <= {"accepted", "rejected"}
    assert any(r["outcome"] == "accepted" for r in records.values())
