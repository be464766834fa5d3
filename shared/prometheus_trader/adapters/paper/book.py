"""The live book of one paper account and the engine that matches its orders (pure).

``Session`` is one read-modify-write of an ``AccountBook``: it walks the trade stream from
the book's cursor, fills what triggers, and collects the orders and fills to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.market import Instrument, Trade
from prometheus_trader.domain.paper import (
    PaperPosition,
    apply_fill,
    closable,
    side_sign,
    trigger_price,
)
from prometheus_trader.domain.trading import Order, OrderStatus, OrderType

if TYPE_CHECKING:
    from prometheus_trader.adapters.paper.ledger import PaperLedger

M = TypeVar("M", bound=BaseModel)
_set = object.__setattr__
_FLAT = PaperPosition()  # a missing position (read only)


def assign(model: BaseModel, **values: Any) -> None:
    """``model.name = value`` for each value, as pydantic assigns a field of a model
    without ``validate_assignment`` (into ``__dict__``, and the name into the fields
    set), without its per-assignment dispatch (the ledger's hot path)."""
    model.__dict__.update(values)
    model.__pydantic_fields_set__.update(values)


def copy_model(model: M) -> M:
    """``model.model_copy()`` (shallow: a new ``__dict__``, the same values) without its
    overhead (the ledger copies every order it hands out)."""
    copy = model.__class__.__new__(model.__class__)
    _set(copy, "__dict__", model.__dict__.copy())
    _set(copy, "__pydantic_fields_set__", model.__pydantic_fields_set__.copy())
    _set(copy, "__pydantic_extra__", None)
    _set(copy, "__pydantic_private__", None)
    return copy


def copy_book(book: AccountBook) -> AccountBook:
    """A deep copy of ``book`` (what a dump and validate round trip gives: its positions,
    resting orders and their orders copied; every other value is immutable)."""
    copy = copy_model(book)
    copy.__dict__["positions"] = {s: copy_model(p) for s, p in book.positions.items()}
    orders = []
    for rec in book.open_orders:
        twin = copy_model(rec)
        twin.__dict__["order"] = copy_model(rec.order)
        orders.append(twin)
    copy.__dict__["open_orders"] = orders
    return copy


class PaperMarket(Protocol):
    """What the ledger needs from market data (the replay exchange provides it)."""

    def paper_instrument(self, symbol: str) -> Instrument | None:
        """The instrument, None if unknown."""
        ...

    def last_price(self, symbol: str, as_of_ms: int) -> float | None:
        """Price of the last trade visible at ``as_of_ms``."""
        ...

    def visible_trades(self, symbols: Sequence[str], after_ms: int, now_ms: int) -> list[Trade]:
        """Trades that became visible in ``(after_ms, now_ms]``, in stream order."""
        ...


@dataclass(frozen=True)
class FillConfig:
    """Paper fill parameters (SPEC §5 paper executor)."""

    exchange_id: str = "binance"
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    slippage: float = 0.0002  # a fraction (2 bps)
    latency_ms: int = 250
    starting_balance: float = 10_000.0


class RestingOrder(BaseModel):
    """An order with our bookkeeping beyond the port's ``Order`` model."""

    model_config = ConfigDict(extra="forbid")

    order: Order
    seq: int
    leverage: float
    active_after_ms: int  # the order sees trades stamped strictly after this
    note: str = ""  # why the engine cancelled or rejected it


class AccountBook(BaseModel):
    """The live state of one paper account (one document)."""

    model_config = ConfigDict(extra="forbid")

    exchange: str
    account: str
    wallet: float
    positions: dict[str, PaperPosition] = Field(default_factory=dict)
    open_orders: list[RestingOrder] = Field(default_factory=list)  # creation order
    synced_ms: int | None = None
    order_seq: int = 0
    fill_seq: int = 0
    version: int = 0

    def resting(self, symbol: str | None = None) -> list[RestingOrder]:
        """Open orders (of ``symbol``), in creation order."""
        return [
            r
            for r in self.open_orders
            if r.order.status is OrderStatus.OPEN and (symbol is None or r.order.symbol == symbol)
        ]


@dataclass
class Session:
    """One read-modify-write of a book; collects the documents to write."""

    ledger: PaperLedger
    book: AccountBook
    orders: dict[str, RestingOrder] = field(default_factory=dict)  # changed, by id
    # (fill sequence number, order id): a fill's values are its filled order's
    fills: list[tuple[int, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.orders or self.fills)

    def finish(self, rec: RestingOrder, status: OrderStatus, ts_ms: int, note: str = "") -> None:
        order_id = rec.order.id
        assign(rec.order, status=status, updated_ms=ts_ms)
        if note:
            assign(rec, note=note)
        assign(self.book, open_orders=[r for r in self.book.open_orders if r.order.id != order_id])
        self.orders[order_id] = rec

    def sync(self, now_ms: int, quiet_until: int | None = None) -> None:
        """Match resting orders against the trades visible since the cursor.

        ``quiet_until``: the ledger checked that no resting order triggers on a trade
        visible up to then, so walking those trades would change nothing: the walk starts
        there (the cursor still moves to ``now_ms``)."""
        book = self.book
        start = book.synced_ms
        if start is None or now_ms <= start:
            assign(book, synced_ms=now_ms if start is None else start)
            return
        if quiet_until is not None:
            start = max(start, min(quiet_until, now_ms))
        symbols = sorted({r.order.symbol for r in book.resting()})
        if symbols and start < now_ms:
            for trade in self.ledger.market.visible_trades(symbols, start, now_ms):
                self.on_trade(trade)
        book.synced_ms = now_ms

    def on_trade(self, trade: Trade) -> None:
        slippage = self.ledger.config.slippage
        for rec in self.book.resting(trade.symbol):
            if rec.order.status is not OrderStatus.OPEN:
                continue  # cancelled by an earlier fill on this same trade
            if trade.ts_ms <= rec.active_after_ms:
                continue
            price = trigger_price(rec.order, trade.price, slippage)
            if price is not None:
                self.fill(rec, price, trade.ts_ms, rec.order.type is not OrderType.LIMIT)

    def opening_problem(self, rec: RestingOrder, price: float, inst: Instrument) -> str:
        """Why ``rec`` cannot be executed at ``price`` as an opening order ("" if it can).

        Margin is needed only for the part beyond closing the current opposite position.
        """
        order = rec.order
        notional = order.amount * price
        if notional < inst.min_notional:
            return f"notional {notional:.2f} below the minimum {inst.min_notional:g} USDT"
        pos = self.book.positions.get(order.symbol, _FLAT)
        opening = max(0.0, order.amount - closable(pos, order.side))
        needed = opening * price / rec.leverage
        free = self.ledger.free_margin(self.book)
        if opening > 0 and needed > free:
            return (
                f"insufficient margin: needs {needed:.2f} USDT at {rec.leverage:g}x, "
                f"free {free:.2f} USDT"
            )
        return ""

    def fill(self, rec: RestingOrder, price: float, ts_ms: int, taker: bool) -> str:
        """Execute ``rec`` at ``price``; returns why it could not ("" when filled).

        Reduce-only orders are clipped to the position and fail when there is nothing to
        reduce; opening orders fail when the margin no longer suffices. A resting order
        that fails is cancelled (reduce-only) or rejected (margin) and keeps the reason.
        """
        order = rec.order
        config = self.ledger.config
        inst = self.ledger.instrument(order.symbol)
        pos = self.book.positions.get(order.symbol)
        if pos is None:
            pos = self.book.positions[order.symbol] = PaperPosition()
        amount = order.amount
        if order.reduce_only:
            if pos.amount * side_sign(order.side) >= 0:
                note = "reduce-only order would not reduce the position"
                self.finish(rec, OrderStatus.CANCELED, ts_ms, note)
                return note
            amount = min(amount, abs(pos.amount))
        else:
            problem = self.opening_problem(rec, price, inst)
            if problem:
                self.finish(rec, OrderStatus.REJECTED, ts_ms, problem)
                return problem
        fee = amount * price * (config.taker_fee if taker else config.maker_fee)
        realized, closing = apply_fill(pos, order.side, amount, price, rec.leverage)
        book = self.book
        assign(book, wallet=book.wallet + (realized - fee))
        # the fill is read from the order (``PaperLedger.fills``): its amount, price, fee
        # and time are the order's ``filled``, ``average``, ``fee`` and ``updated_ms``
        assign(order, filled=float(amount), average=float(price), fee=float(fee))
        self.finish(rec, OrderStatus.FILLED, ts_ms)
        assign(book, fill_seq=book.fill_seq + 1)
        self.fills.append((book.fill_seq, order.id))
        if pos.amount == 0 and closing > 0:
            # OCO-like: a leftover stop or take-profit must not open a new position
            for other in self.book.resting(order.symbol):
                if other.order.reduce_only and other.order.id != order.id:
                    self.finish(other, OrderStatus.CANCELED, ts_ms, "position closed")
        return ""
