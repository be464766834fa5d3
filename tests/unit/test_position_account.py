"""``Position.exchange_account`` and ``position_account``: a position's orders live on its
own account; documents written before it read as the user's. The paper <-> live switch's
in-flight refusal lasts as long as an execution may still place orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import Position, position_account
from prometheus_trader.domain.users import RiskProfile, TradingMode, User
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.user_settings import Settings, SettingsUpdate
from prometheus_trader.usecases.users import Conflict

pytestmark = pytest.mark.unit

NOW = datetime(2025, 5, 21, 12, tzinfo=UTC)


def _position(**extra: object) -> Position:
    doc: dict[str, object] = {
        "id": "p1",
        "user_id": "alice",
        "signal_id": "s1",
        "exchange": "binance",
        "market_type": MarketType.PERP.value,
        "symbol": "BTC/USDT:USDT",
        "direction": Direction.LONG.value,
        "amount": 0.1,
        "entry_price": 100.0,
        "stop_loss": 99.0,
        "take_profits": [],
        "trailing_stop_pct": 1.0,
        "best_price": 100.0,
        "worst_price": 100.0,
        "entry_order_id": "e1",
        "opened_at": NOW.isoformat(),
        "opened_ms": 0,
        "max_hold_minutes": 60,
        **extra,
    }
    return Position.model_validate(doc)


def test_a_position_document_written_before_reads_as_the_users_account() -> None:
    old = _position()  # no exchange_account: a document from before the field
    live = User.with_profile("alice", RiskProfile.MODERATE, exchange_account="binance-demo:alice")
    assert old.exchange_account is None
    assert position_account(old, live) == "binance-demo:alice"
    assert position_account(old, None) == "alice"  # no user document: the paper account


def test_a_position_carrying_its_account_keeps_it_whatever_the_users_account() -> None:
    on_paper = _position(exchange_account="alice")
    live = User.with_profile("alice", RiskProfile.MODERATE, exchange_account="binance-demo:alice")
    assert position_account(on_paper, live) == "alice"
    assert position_account(on_paper, None) == "alice"
    again = Position.model_validate(on_paper.model_dump(mode="json"))
    assert again.exchange_account == "alice"


def test_the_switch_waits_only_for_executions_that_may_still_place_orders() -> None:
    state = MemoryStateStore()
    clock = SimulatedClock(NOW)
    user = User.with_profile("alice", RiskProfile.MODERATE)
    state.create(Collections.USERS, "alice", user.model_dump(mode="json"))
    settings = Settings(state, lambda uid: f"binance-demo:{uid}", clock)
    started = {"user_id": "alice", "symbol": "BTC/USDT:USDT", "completed_at": None}
    state.create(Collections.EXECUTIONS, "x1", {**started, "created_at": NOW.isoformat()})
    state.create(Collections.EXECUTIONS, "x0", {**started, "created_at": "not a date"})
    state.create(  # another user's execution never blocks alice
        Collections.EXECUTIONS, "x2", {**started, "user_id": "bob", "created_at": NOW.isoformat()}
    )
    with pytest.raises(Conflict, match="being executed"):
        settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE))
    clock.set(NOW + timedelta(minutes=29))
    with pytest.raises(Conflict, match="being executed"):
        settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE))
    # past the longest signal TTL: that execution places nothing on a live signal any more
    clock.set(NOW + timedelta(minutes=31))
    with pytest.raises(Conflict, match="being executed"):  # an unreadable stamp: recent
        settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE))
    state.delete(Collections.EXECUTIONS, "x0")
    assert settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE)).mode is TradingMode.LIVE
    doc = state.get(Collections.USERS, "alice")
    assert doc is not None and doc["exchange_account"] == "binance-demo:alice"
