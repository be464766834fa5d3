"""Scaled entries (SPEC §5.1): N resting limit orders across the entry range.

The executor places every entry leg (:func:`place_scaled_entries`) and stores a
``scaled_entries`` record; no position exists until a leg fills. Every monitor cycle,
:func:`sync_scaled_entries` looks at the legs: the first fill creates the position (id =
the execution id, as for a bracket) with an exchange-side stop and take-profits for the
filled amount; each later fill grows it and replaces the protective orders for the new
total (new order first, then the old one cancelled). When the signal expires, or the
position is closed, the legs still resting are cancelled. Every order action is audited.

Limitation (documented): between a leg's fill and the next monitor cycle (2 s) the new
amount is covered only by the previous stop; an exchange-native OTOCO would close that gap.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.trading import (
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
    TradePlan,
)
from prometheus_trader.domain.users import User
from prometheus_trader.ports import BlobStore, Bus, Clock, Exchange, Filter, StateStore
from prometheus_trader.usecases.audit import audit_order
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import Collections


def is_scaled(plan: TradePlan) -> bool:
    """True when the plan has several entry legs (scaled entries)."""
    return sum(1 for o in plan.orders if o.leg.startswith("entry")) > 1


def place_scaled_entries(
    state: StateStore,
    exchange: Exchange,
    blobs: BlobStore,
    clock: Clock,
    signal: OpportunitySignal,
    user: User,
    plan: TradePlan,
    exec_id: str,
) -> list[str]:
    """Place every entry leg as a resting limit order; returns their order ids."""
    ids: list[str] = []
    legs: list[dict[str, Any]] = []
    for leg in plan.orders:
        if not leg.leg.startswith("entry"):
            continue
        request = OrderRequest(
            client_order_id=client_order_id(signal.id, user.user_id, leg.leg),
            symbol=signal.symbol,
            side=leg.side,
            type=OrderType.LIMIT,
            amount=leg.amount,
            price=leg.price,
            leverage=plan.leverage,
        )
        order = exchange.create_order(user.exchange_account, request)
        _audit(blobs, clock, "create_order", user.user_id, signal.id, order)
        ids.append(order.id)
        legs.append({"leg": leg.leg, "order_id": order.id})
    state.create(
        Collections.SCALED_ENTRIES,
        exec_id,
        {
            "id": exec_id,
            "user_id": user.user_id,
            "account": user.exchange_account,
            "signal_id": signal.id,
            "status": "pending",
            "legs": legs,
            "expires_at": signal.expires_at.isoformat(),
            "plan": plan.model_dump(mode="json"),
            "protective_round": 0,
        },
    )
    return ids


def sync_scaled_entries(
    state: StateStore, exchange: Exchange, bus: Bus, blobs: BlobStore, clock: Clock
) -> list[str]:
    """Create, grow or finish positions from filled legs; returns the ids touched."""
    touched: list[str] = []
    for doc in state.query(Collections.SCALED_ENTRIES, [Filter("status", "==", "pending")]):
        if _sync_one(state, exchange, bus, blobs, clock, doc):
            touched.append(str(doc["id"]))
    return touched


def _sync_one(
    state: StateStore,
    exchange: Exchange,
    bus: Bus,
    blobs: BlobStore,
    clock: Clock,
    doc: dict[str, Any],
) -> bool:
    account = str(doc["account"])
    plan = TradePlan.model_validate(doc["plan"])
    orders = [exchange.fetch_order(account, leg["order_id"]) for leg in doc["legs"]]
    filled = [o for o in orders if o.status is OrderStatus.FILLED and o.average is not None]
    resting = [o for o in orders if o.status is OrderStatus.OPEN]
    seen = set(doc.get("filled_seen", []))
    for order in filled:
        if order.id not in seen:  # an exchange-side fill of an entry leg: audit it once
            _audit(blobs, clock, "exchange_fill", str(doc["user_id"]), plan.signal_id, order)
    if any(o.id not in seen for o in filled):
        state.update(
            Collections.SCALED_ENTRIES, str(doc["id"]), {"filled_seen": [o.id for o in filled]}
        )
    pos_doc = state.get(Collections.POSITIONS, str(doc["id"]))
    position = Position.model_validate(pos_doc) if pos_doc else None
    now = clock.now()
    expired = now >= datetime.fromisoformat(str(doc["expires_at"]))
    closed = position is not None and position.status is PositionStatus.CLOSED
    if closed or expired or not resting:
        for order in resting:  # nothing more may fill: cancel what still rests
            cancelled = exchange.cancel_order(account, order.id)
            _audit(blobs, clock, "cancel_order", str(doc["user_id"]), plan.signal_id, cancelled)
        state.update(Collections.SCALED_ENTRIES, str(doc["id"]), {"status": "done"})
    total = sum(o.filled for o in filled)
    if closed or total <= 0 or (position is not None and total <= position.amount):
        return bool(resting) and (closed or expired)
    entry = sum(o.filled * (o.average or 0.0) for o in filled) / total
    fees = sum(o.fee for o in filled)
    round_no = int(doc.get("protective_round", 0)) + 1
    stop_id, tp_ids = _protect(exchange, blobs, clock, doc, plan, total, round_no)
    if position is not None:  # replace: the new orders are in, cancel the old ones
        for old in [position.stop_order_id, *position.take_profit_order_ids]:
            if old:
                cancelled = exchange.cancel_order(account, old)
                _audit(blobs, clock, "cancel_order", plan.user_id, plan.signal_id, cancelled)
    state.update(Collections.SCALED_ENTRIES, str(doc["id"]), {"protective_round": round_no})
    assert plan.stop_loss is not None  # the gate approved it
    grown = {
        "amount": total,
        "entry_price": entry,
        "entry_fee": fees,
        "stop_order_id": stop_id,
        "take_profit_order_ids": tp_ids,
    }
    if position is not None:
        state.update(Collections.POSITIONS, position.id, grown)
        return True
    first = min(filled, key=lambda o: o.updated_ms)
    new = Position(
        id=str(doc["id"]),
        user_id=plan.user_id,
        signal_id=plan.signal_id,
        exchange=plan.exchange,
        market_type=plan.market_type,
        symbol=plan.symbol,
        direction=plan.direction,
        exchange_account=account,  # where its legs rest, whatever the user's account now
        amount=total,
        entry_price=entry,
        entry_fee=fees,
        leverage=plan.leverage,
        stop_loss=plan.stop_loss,
        take_profits=plan.take_profits,
        trailing_stop_pct=_trailing_pct(state, plan.user_id),
        best_price=entry,
        worst_price=entry,
        stop_order_id=stop_id,
        take_profit_order_ids=tp_ids,
        entry_order_id=first.id,
        opened_at=now,
        opened_ms=first.updated_ms,
        max_hold_minutes=_max_hold(state, plan.user_id),
    )
    if state.create(Collections.POSITIONS, new.id, new.model_dump(mode="json")):
        publish_event(
            bus,
            state,
            EventType.POSITION_OPENED,
            key=new.id,
            now=now,
            user_id=new.user_id,
            payload={
                "position_id": new.id,
                "signal_id": new.signal_id,
                "symbol": new.symbol,
                "direction": new.direction.value,
                "amount": new.amount,
                "entry_price": new.entry_price,
                "stop_loss": new.stop_loss,
                "scaled_legs_filled": len(filled),
            },
        )
    return True


def _protect(
    exchange: Exchange,
    blobs: BlobStore,
    clock: Clock,
    doc: dict[str, Any],
    plan: TradePlan,
    total: float,
    round_no: int,
) -> tuple[str, list[str]]:
    """Stop-loss + take-profits for ``total``, TP amounts in the plan's proportions."""
    account = str(doc["account"])
    stop_id = ""
    tp_ids: list[str] = []
    protective = [o for o in plan.orders if not o.leg.startswith("entry")]
    tp_planned = sum(o.amount for o in protective if o.leg.startswith("tp"))
    allocated = 0.0
    tps = [o for o in protective if o.leg.startswith("tp")]
    for leg in protective:
        if leg.leg.startswith("tp"):
            share = leg.amount / tp_planned if tp_planned > 0 else 0.0
            is_last = leg is tps[-1]
            amount = total - allocated if is_last else round(total * share, 12)
            allocated += amount
        else:
            amount = total
        if amount <= 0:
            continue
        request = OrderRequest(
            client_order_id=client_order_id(plan.signal_id, plan.user_id, f"{leg.leg}-{round_no}"),
            symbol=plan.symbol,
            side=leg.side,
            type=leg.type,
            amount=amount,
            stop_price=leg.stop_price,
            reduce_only=True,
        )
        order = exchange.create_order(account, request)
        _audit(blobs, clock, "create_order", plan.user_id, plan.signal_id, order)
        if leg.type is OrderType.STOP_MARKET:
            stop_id = order.id
        else:
            tp_ids.append(order.id)
    return stop_id, tp_ids


def _user(state: StateStore, user_id: str) -> User | None:
    doc = state.get(Collections.USERS, user_id)
    return User.model_validate(doc) if doc else None


def _trailing_pct(state: StateStore, user_id: str) -> float:
    user = _user(state, user_id)
    return user.limits.trailing_stop_pct if user else 0.5


def _max_hold(state: StateStore, user_id: str) -> int:
    user = _user(state, user_id)
    return user.limits.max_hold_minutes if user else 240


def _audit(
    blobs: BlobStore, clock: Clock, action: str, user_id: str, signal_id: str, order: Order
) -> None:
    audit_order(
        blobs,
        clock.now(),
        {
            "action": action,
            "user_id": user_id,
            "signal_id": signal_id,
            "client_order_id": order.client_order_id,
            "order_id": order.id,
            "symbol": order.symbol,
            "side": order.side.value,
            "type": order.type.value,
            "amount": order.amount,
            "price": order.price,
            "stop_price": order.stop_price,
            "status": order.status.value,
            "filled": order.filled,
            "average": order.average,
            "ts_ms": clock.now_ms(),
        },
    )
