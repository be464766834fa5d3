"""Builders for the planner / risk / exit / evaluation unit tests (not collected)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from prometheus_trader.domain.market import Instrument, MarketType, Side, Trade
from prometheus_trader.domain.signals import (
    AnalystView,
    Direction,
    OpportunitySignal,
    TakeProfitLevel,
)
from prometheus_trader.domain.trading import Position
from prometheus_trader.domain.users import RiskProfile, User

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
SYMBOL = "BTC/USDT:USDT"


def instrument(**overrides: object) -> Instrument:
    data: dict[str, object] = {
        "exchange": "binanceusdm",
        "market_type": MarketType.PERP,
        "symbol": SYMBOL,
        "base": "BTC",
        "quote": "USDT",
        "settle": "USDT",
        "price_step": 0.01,
        "amount_step": 0.001,
        "min_amount": 0.001,
        "min_notional": 5.0,
        "max_leverage": 50.0,
        "taker_fee": 0.0005,
    }
    data.update(overrides)
    return Instrument.model_validate(data)


def signal(
    direction: Direction = Direction.LONG,
    entry: float = 100.0,
    stop: float | None = 98.0,
    tps: tuple[float, ...] = (104.0, 106.0, 108.0),
    fractions: tuple[float, ...] | None = None,
    entry_low: float | None = None,
    entry_high: float | None = None,
    symbol: str = SYMBOL,
    created_at: datetime = T0,
    ttl_min: int = 20,
    analysts: list[AnalystView] | None = None,
) -> OpportunitySignal:
    fracs = fractions or tuple(1 / len(tps) for _ in tps)
    risk = abs(entry - stop) if stop is not None else 0.0
    return OpportunitySignal(
        id="sig-1",
        symbol=symbol,
        exchange="binanceusdm",
        market_type=MarketType.PERP,
        direction=direction,
        entry_price=entry,
        entry_low=entry_low if entry_low is not None else entry * 0.998,
        entry_high=entry_high if entry_high is not None else entry * 1.002,
        stop_loss=stop,
        stop_loss_pct=risk / entry * 100 if stop is not None else None,
        take_profits=[
            TakeProfitLevel(price=p, pct=abs(p - entry) / entry * 100, size_fraction=f)
            for p, f in zip(tps, fracs, strict=True)
        ],
        reward_risk=abs(tps[0] - entry) / risk if risk else 0.0,
        confidence=0.8,
        created_at=created_at,
        expires_at=created_at + timedelta(minutes=ttl_min),
        strategy="consensus",
        analysts=analysts or [],
    )


def user(profile: RiskProfile = RiskProfile.MODERATE, **limit_overrides: object) -> User:
    u = User.with_profile("alice", profile)
    if limit_overrides:
        u = u.model_copy(update={"limits": u.limits.model_copy(update=limit_overrides)})
    return u


def position(
    direction: Direction = Direction.LONG,
    entry: float = 100.0,
    stop: float = 98.0,
    tps: tuple[float, ...] = (104.0,),
    amount: float = 1.0,
    trailing_pct: float = 0.5,
    symbol: str = SYMBOL,
    max_hold_minutes: int = 240,
    **overrides: object,
) -> Position:
    data: dict[str, object] = {
        "id": "pos-1",
        "user_id": "alice",
        "signal_id": "sig-1",
        "exchange": "binanceusdm",
        "market_type": MarketType.PERP,
        "symbol": symbol,
        "direction": direction,
        "amount": amount,
        "entry_price": entry,
        "leverage": 5.0,
        "stop_loss": stop,
        "take_profits": [
            TakeProfitLevel(price=p, pct=abs(p - entry) / entry * 100, size_fraction=1.0)
            for p in tps
        ],
        "trailing_stop_pct": trailing_pct,
        "best_price": entry,
        "worst_price": entry,
        "entry_order_id": "o-1",
        "opened_at": T0,
        "opened_ms": T0_MS,
        "max_hold_minutes": max_hold_minutes,
    }
    data.update(overrides)
    return Position.model_validate(data)


_counter = {"n": 0}


def trade(
    ts_ms: int,
    price: float,
    amount: float = 1.0,
    side: Side = Side.BUY,
    source: Literal["trade", "bar"] = "trade",
    symbol: str = SYMBOL,
    trade_id: str | None = None,
) -> Trade:
    _counter["n"] += 1
    return Trade(
        exchange="binanceusdm",
        market_type=MarketType.PERP,
        symbol=symbol,
        ts_ms=ts_ms,
        trade_id=trade_id or f"t{ts_ms}-{_counter['n']}",
        price=price,
        amount=amount,
        side=side,
        source=source,
    )
