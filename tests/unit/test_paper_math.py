"""The pure paper-fill math (domain/paper.py) the paper ledger and backtests share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prometheus_trader.domain.market import Side
from prometheus_trader.domain.paper import (
    PaperPosition,
    adverse,
    apply_fill,
    closable,
    trigger_price,
)
from prometheus_trader.domain.trading import Order, OrderStatus, OrderType

pytestmark = pytest.mark.unit


def order(
    side: Side, type_: OrderType, *, price: float | None = None, stop: float | None = None
) -> Order:
    return Order(
        id="o",
        client_order_id="c",
        account="a",
        symbol="BTC/USDT:USDT",
        side=side,
        type=type_,
        amount=1.0,
        price=price,
        stop_price=stop,
        status=OrderStatus.OPEN,
        created_ms=0,
        updated_ms=0,
    )


def test_takers_pay_slippage_against_them() -> None:
    assert adverse(100.0, Side.BUY, 0.001) == pytest.approx(100.1)
    assert adverse(100.0, Side.SELL, 0.001) == pytest.approx(99.9)


@pytest.mark.parametrize(
    ("side", "type_", "level", "price", "fills"),
    [
        (Side.SELL, OrderType.STOP_MARKET, 95.0, 95.0, True),  # a long's stop at the level
        (Side.SELL, OrderType.STOP_MARKET, 95.0, 95.1, False),
        (Side.BUY, OrderType.STOP_MARKET, 105.0, 105.0, True),  # a short's stop
        (Side.SELL, OrderType.TAKE_PROFIT_MARKET, 110.0, 110.5, True),
        (Side.BUY, OrderType.TAKE_PROFIT_MARKET, 90.0, 90.5, False),
        (Side.BUY, OrderType.LIMIT, 99.0, 99.0, False),  # a limit needs a trade through it
        (Side.BUY, OrderType.LIMIT, 99.0, 98.9, True),
    ],
)
def test_resting_orders_trigger_on_the_right_side(
    side: Side, type_: OrderType, level: float, price: float, fills: bool
) -> None:
    resting = (
        order(side, type_, price=level)
        if type_ is OrderType.LIMIT
        else order(side, type_, stop=level)
    )
    result = trigger_price(resting, price, 0.0002)
    assert (result is not None) is fills
    if fills and type_ is OrderType.LIMIT:
        assert result == level  # a limit fills at its price (maker)
    elif fills:
        assert result == pytest.approx(adverse(price, side, 0.0002))


def test_open_add_close_and_flip() -> None:
    pos = PaperPosition()
    assert apply_fill(pos, Side.BUY, 1.0, 100.0, 5.0) == (0.0, 0.0)
    apply_fill(pos, Side.BUY, 1.0, 110.0, 5.0)
    assert (pos.amount, pos.entry_price, pos.margin) == (2.0, 105.0, pytest.approx(42.0))
    realized, closed = apply_fill(pos, Side.SELL, 3.0, 120.0, 2.0)  # close 2, open 1 short
    assert (realized, closed) == (pytest.approx(30.0), 2.0)
    assert (pos.amount, pos.entry_price, pos.leverage) == (-1.0, 120.0, 2.0)
    assert closable(pos, Side.BUY) == 1.0 and closable(pos, Side.SELL) == 0.0


@given(
    st.floats(0.001, 10),
    st.floats(1, 1e5),
    st.floats(1, 1e5),
    st.sampled_from([Side.BUY, Side.SELL]),
)
def test_a_round_trip_realizes_the_price_difference(
    amount: float, entry: float, exit_: float, side: Side
) -> None:
    pos = PaperPosition()
    apply_fill(pos, side, amount, entry, 1.0)
    back = Side.SELL if side is Side.BUY else Side.BUY
    realized, closed = apply_fill(pos, back, amount, exit_, 1.0)
    sign = 1 if side is Side.BUY else -1
    assert closed == pytest.approx(amount)
    assert realized == pytest.approx(sign * amount * (exit_ - entry), rel=1e-9, abs=1e-9)
    assert pos.amount == 0.0 and pos.entry_price == 0.0
