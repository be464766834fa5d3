"""Paper-trading fill math, shared by the paper exchange and backtests (pure).

One-way net positions with isolated per-position margin (``|amount| × entry /
leverage``). Takers pay slippage against them; a resting order is matched against one
trade at a time (limits fill at their price when a trade goes through them; stops and
take-profits fill at the trade price with slippage once triggered).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from prometheus_trader.domain.market import Side
from prometheus_trader.domain.trading import Order, OrderType


class PaperPosition(BaseModel):
    """A net position of one account in one symbol (``amount`` signed: > 0 long)."""

    model_config = ConfigDict(extra="forbid")

    amount: float = 0.0
    entry_price: float = 0.0
    leverage: float = 1.0

    @property
    def margin(self) -> float:
        """Isolated margin held by the position."""
        return abs(self.amount) * self.entry_price / self.leverage


def side_sign(side: Side) -> int:
    """+1 for a buy, -1 for a sell."""
    return 1 if side is Side.BUY else -1


def adverse(price: float, side: Side, slippage: float) -> float:
    """``price`` moved against the taker: up for a buy, down for a sell."""
    return price * (1 + slippage) if side is Side.BUY else price * (1 - slippage)


def trigger_price(order: Order, price: float, slippage: float) -> float | None:
    """The fill price if a trade at ``price`` executes resting ``order``, else None."""
    buy = order.side is Side.BUY
    if order.type is OrderType.LIMIT:
        assert order.price is not None
        # "trades through": strictly beyond the limit, filled at the limit (maker)
        hit = price < order.price if buy else price > order.price
        return order.price if hit else None
    assert order.stop_price is not None
    if order.type is OrderType.STOP_MARKET:
        # a buy stop protects a short (price rising), a sell stop a long
        hit = price >= order.stop_price if buy else price <= order.stop_price
    else:  # take-profit market: a buy TP closes a short below, a sell TP a long above
        hit = price <= order.stop_price if buy else price >= order.stop_price
    return adverse(price, order.side, slippage) if hit else None


def closable(position: PaperPosition, side: Side) -> float:
    """How much of ``position`` an order on ``side`` closes before it opens anything."""
    return abs(position.amount) if position.amount * side_sign(side) < 0 else 0.0


def apply_fill(
    position: PaperPosition, side: Side, amount: float, price: float, leverage: float
) -> tuple[float, float]:
    """Apply a fill of ``amount`` at ``price`` to ``position`` in place.

    Returns (realized PnL of the closed part, amount closed). The opening part averages
    into the entry price and sets the position's leverage.
    """
    sign = side_sign(side)
    realized = 0.0
    closing = min(amount, closable(position, side))
    if closing > 0:
        realized = closing * (price - position.entry_price) * (1 if position.amount > 0 else -1)
        position.amount += sign * closing
        if abs(position.amount) <= 1e-12 * closing:  # float dust from partial closes
            position.amount = 0.0
    opening = amount - closing
    if opening > 0:
        size = abs(position.amount)
        position.entry_price = (size * position.entry_price + opening * price) / (size + opening)
        position.amount += sign * opening
        position.leverage = leverage
    if position.amount == 0:
        position.entry_price = 0.0
    return realized, closing
