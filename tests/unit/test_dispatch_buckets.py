"""The dispatcher's batch messages: one per non-empty bucket, stable keys, every admitted
user in exactly one bucket (the batched executor's input)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.memory_bus import InMemoryBus
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.domain.ids import stable_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import BusMessage
from prometheus_trader.usecases.dispatch import (
    DispatchSignal,
    ExecutionBatchRequest,
    user_bucket,
)
from prometheus_trader.usecases.names import Collections, Topics

pytestmark = pytest.mark.unit
NOW = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)


def _signal() -> OpportunitySignal:
    return OpportunitySignal(
        id="sig",
        symbol="ETH/USDT:USDT",
        exchange="binance",
        market_type=MarketType.PERP,
        direction=Direction.LONG,
        entry_price=100.0,
        entry_low=99.9,
        entry_high=100.1,
        stop_loss=99.0,
        stop_loss_pct=1.0,
        take_profits=[TakeProfitLevel(price=103.0, pct=3.0, size_fraction=1.0)],
        reward_risk=3.0,
        confidence=0.8,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=20),
        strategy="consensus",
    )


def test_one_batch_message_per_bucket_with_stable_keys() -> None:
    state, bus, clock = MemoryStateStore(), InMemoryBus(), SimulatedClock(NOW)
    users = [User.with_profile(f"user{i}", RiskProfile.MODERATE) for i in range(40)]
    users.append(User.with_profile("resting", RiskProfile.MODERATE, paused=True))
    for user in users:
        state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
    received: list[BusMessage] = []
    bus.subscribe(Topics.EXECUTIONS, "probe", received.append)
    signal = _signal()
    message = BusMessage(Topics.SIGNALS, "1", signal.model_dump(mode="json"))
    report = DispatchSignal(state, bus, clock, buckets=8).handle(message)
    bus.drain()
    assert report.not_admitted == {"resting": "paused"}
    assert sorted(report.dispatched) == sorted(u.user_id for u in users[:40])
    batches = [ExecutionBatchRequest.model_validate(m.data) for m in received]
    assert sorted(u for b in batches for u in b.user_ids) == sorted(report.dispatched)
    keys = [m.ordering_key for m in received]
    assert len(set(keys)) == len(received) <= 8
    for m, batch in zip(received, batches, strict=True):
        (bucket,) = {user_bucket(u, 8) for u in batch.user_ids}
        assert m.ordering_key == f"bucket-{bucket}-of-8"
        assert m.dedupe_key == stable_id("execution-batch", signal.id, m.ordering_key)
        assert batch.user_ids == sorted(batch.user_ids)
    with pytest.raises(ValueError):
        ExecutionBatchRequest.model_validate({"signal_id": "s", "user_ids": [], "x": 1})
