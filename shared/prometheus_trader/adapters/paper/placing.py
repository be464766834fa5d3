"""Placing a new paper order: validation, the fill of a market order, a resting order's
checks, and leaving no trace when it is refused (``PaperLedger.create_orders`` calls it
for each new client order id)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_trader.adapters.paper.book import RestingOrder, Session, assign, copy_model
from prometheus_trader.domain.market import Instrument, Side
from prometheus_trader.domain.paper import adverse, side_sign, trigger_price
from prometheus_trader.domain.trading import Order, OrderRequest, OrderStatus, OrderType
from prometheus_trader.domain.trusted import trusted
from prometheus_trader.ports import OrderRejected

if TYPE_CHECKING:
    from prometheus_trader.adapters.paper.ledger import PaperLedger

# what validating the models would have set as their fields set (the rest are defaults)
_ORDER_FIELDS_SET = frozenset(
    (
        "id",
        "client_order_id",
        "account",
        "symbol",
        "side",
        "type",
        "amount",
        "price",
        "stop_price",
        "reduce_only",
        "status",
        "created_ms",
        "updated_ms",
    )
)
_RESTING_FIELDS_SET = frozenset(("order", "seq", "leverage", "active_after_ms"))


def place_order(
    ledger: PaperLedger, session: Session, account: str, order_id: str, request: OrderRequest
) -> Order:
    """Validate and place a new order (``OrderRejected``: nothing is recorded)."""
    cid = request.client_order_id
    inst = ledger.market.paper_instrument(request.symbol)
    if inst is None:
        raise OrderRejected(f"order {cid}: unknown symbol {request.symbol}")
    leverage = 1.0 if request.leverage is None else float(request.leverage)
    if not 1 <= leverage <= inst.max_leverage:
        raise OrderRejected(f"order {cid}: leverage {leverage:g} outside 1..{inst.max_leverage:g}")
    now = ledger.now_ms()
    arrival = now + ledger.config.latency_ms
    # the request's fields are validated already: build without validating again
    order = trusted(
        Order,
        {
            "id": order_id,
            "client_order_id": cid,
            "account": account,
            "symbol": request.symbol,
            "side": side if type(side := request.side) is Side else Side(side),
            "type": kind if type(kind := request.type) is OrderType else OrderType(kind),
            "amount": float(request.amount),
            "price": None if request.price is None else float(request.price),
            "stop_price": None if request.stop_price is None else float(request.stop_price),
            "reduce_only": bool(request.reduce_only),
            "status": OrderStatus.OPEN,
            "filled": 0.0,
            "average": None,
            "fee": 0.0,
            "created_ms": now,
            "updated_ms": now,
        },
        set(_ORDER_FIELDS_SET),
    )
    rec = trusted(
        RestingOrder,
        {
            "order": order,
            "seq": session.book.order_seq + 1,
            "leverage": leverage,
            "active_after_ms": arrival,
            "note": "",
        },
        set(_RESTING_FIELDS_SET),
    )
    # a rejected order must leave no trace in the book. Until an order is accepted the
    # only changes to the book are (see ``Session.fill``) its record appended to (or
    # filtered out of) the resting orders and an empty position for its symbol: both
    # undone on a refusal. Its orders and fills are collected apart, adopted on success.
    book = session.book
    scratch = Session(ledger, book)
    resting = list(book.open_orders)
    had_position = request.symbol in book.positions
    try:
        if request.type is OrderType.MARKET:
            price = ledger.market.last_price(request.symbol, arrival)
            if price is None:
                raise OrderRejected(f"order {cid}: no market price for {request.symbol} yet")
            fill_price = adverse(price, request.side, ledger.config.slippage)
            if not request.reduce_only:
                reason = scratch.opening_problem(rec, fill_price, inst)
                if reason:
                    raise OrderRejected(f"order {cid}: {reason}")
            reason = scratch.fill(rec, fill_price, arrival, True)
            if reason:
                raise OrderRejected(f"order {cid}: {reason}")
        else:
            book.open_orders.append(rec)
            _validate_resting(ledger, scratch, rec, inst)
    except OrderRejected:
        assign(book, open_orders=resting)
        if not had_position:
            book.positions.pop(request.symbol, None)
        raise
    scratch.orders[rec.order.id] = rec
    assign(book, order_seq=rec.seq)
    session.orders.update(scratch.orders)
    session.fills.extend(scratch.fills)
    return copy_model(rec.order)


def _validate_resting(
    ledger: PaperLedger, session: Session, rec: RestingOrder, inst: Instrument
) -> None:
    order = rec.order
    cid = order.client_order_id
    slippage = ledger.config.slippage
    last = ledger.market.last_price(order.symbol, rec.active_after_ms)
    if order.type is OrderType.LIMIT:
        if order.price is None or order.price <= 0:
            raise OrderRejected(f"order {cid}: a limit order needs a positive price")
        reference = order.price
    else:
        if order.stop_price is None or order.stop_price <= 0:
            raise OrderRejected(f"order {cid}: a {order.type} order needs a stop price")
        reference = order.stop_price
        if last is not None and trigger_price(order, last, 0.0) is not None:
            raise OrderRejected(
                f"order {cid}: stop price {order.stop_price:g} would trigger immediately "
                f"(last {last:g})"
            )
    if not order.reduce_only:
        reason = session.opening_problem(rec, reference, inst)
        if reason:
            raise OrderRejected(f"order {cid}: {reason}")
    if order.type is OrderType.LIMIT and order.price is not None and last is not None:
        marketable = adverse(last, order.side, slippage)
        if (side_sign(order.side) > 0 and marketable <= order.price) or (
            side_sign(order.side) < 0 and marketable >= order.price
        ):
            # a limit that crosses the book fills at once as a taker (never worse than
            # its limit)
            reason = session.fill(rec, marketable, rec.active_after_ms, True)
            if reason:
                raise OrderRejected(f"order {cid}: {reason}")


__all__ = ["place_order"]
