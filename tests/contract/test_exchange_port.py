"""The generic ``Exchange`` port contract: what every adapter does, whatever feeds its prices.

Runs on every factory in ``exchange_adapters.ADAPTERS`` (replay, ccxt on the Binance USD-M
stand-in, ...). How fills are priced (slippage, bar paths, latency) and what "as of now"
means for market data are adapter semantics, checked in ``test_exchange.py`` (replay) and
``tests/integration/test_ccxt_exchange.py`` (ccxt); here only the port's promises are.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.contract.exchange_adapters import ADAPTERS, START_MS, PortHarness
from tests.standins.engine import recorded_market

from prometheus_trader.domain.market import MINUTE_MS, Side
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import OrderRequest, OrderStatus, OrderType
from prometheus_trader.ports import Exchange, ExchangeError, OrderRejected

pytestmark = pytest.mark.contract
BTC = "BTC/USDT:USDT"


@pytest.fixture(params=sorted(ADAPTERS))
def h(request: pytest.FixtureRequest) -> Iterator[PortHarness]:
    with ADAPTERS[request.param](request) as harness:
        yield harness


def order(
    cid: str,
    side: Side,
    amount: float,
    kind: OrderType = OrderType.MARKET,
    *,
    price: float | None = None,
    stop: float | None = None,
    reduce_only: bool = False,
    leverage: float | None = None,
    symbol: str = BTC,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        type=kind,
        amount=amount,
        price=price,
        stop_price=stop,
        reduce_only=reduce_only,
        leverage=leverage,
    )


def last_price(ex: Exchange) -> float:
    return ex.fetch_tickers([BTC])[0].last


def lowest_low_ahead(hours: int = 6) -> float:
    bars = recorded_market().bars(BTC, START_MS, START_MS + hours * 3_600_000)
    return float(bars.low.min())


# ---------------------------------------------------------------- market data
def test_satisfies_the_port(h: PortHarness) -> None:
    assert isinstance(h.exchange, Exchange)
    assert h.exchange.exchange_id == h.exchange_id


def test_markets_are_usdt_perps_with_precision_and_limits(h: PortHarness) -> None:
    markets = h.exchange.load_markets()
    assert [m.symbol for m in markets] == sorted(m.symbol for m in markets)
    btc = next(m for m in markets if m.symbol == BTC)
    assert (btc.base, btc.quote, btc.settle) == ("BTC", "USDT", "USDT")
    assert btc.price_step > 0 and btc.amount_step > 0 and btc.min_notional >= 0
    assert btc.max_leverage >= 1 and btc.active
    price = last_price(h.exchange)
    assert btc.round_price(price) == pytest.approx(price, abs=btc.price_step)


def test_tickers_cover_the_requested_symbols(h: PortHarness) -> None:
    all_tickers = h.exchange.fetch_tickers()
    assert BTC in {t.symbol for t in all_tickers}
    (t,) = h.exchange.fetch_tickers([BTC])
    assert t.symbol == BTC and t.last > 0
    if t.bid is not None and t.ask is not None:
        assert t.bid <= t.last <= t.ask


def test_ohlcv_is_closed_oldest_first_and_bounded(h: PortHarness) -> None:
    candles = h.exchange.fetch_ohlcv(BTC, "1m", limit=5)
    assert len(candles) == 5
    assert [c.ts_ms for c in candles] == sorted(c.ts_ms for c in candles)
    assert all(c.close_ms <= START_MS for c in candles)
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles)
    since = START_MS - 30 * MINUTE_MS
    later = h.exchange.fetch_ohlcv(BTC, "1m", since_ms=since, limit=10)
    assert len(later) == 10 and later[0].ts_ms >= since


def test_funding_is_a_rate_for_the_symbol(h: PortHarness) -> None:
    rate = h.exchange.fetch_funding_rate(BTC)
    assert rate is not None and rate.symbol == BTC and abs(rate.rate) < 0.01


def test_unknown_symbol_is_an_error_and_its_order_a_rejection(h: PortHarness) -> None:
    with pytest.raises(ExchangeError):
        h.exchange.fetch_ohlcv("NOPE/USDT:USDT", "1m")
    with pytest.raises(OrderRejected):
        h.exchange.create_order("alice", order("u1", Side.BUY, 1.0, symbol="NOPE/USDT:USDT"))


# --------------------------------------------------------------------- orders
def test_create_order_is_idempotent_on_client_id(h: PortHarness) -> None:
    first = h.exchange.create_order("alice", order("entry-1", Side.BUY, 0.01, leverage=5))
    again = h.exchange.create_order("alice", order("entry-1", Side.BUY, 0.01, leverage=5))
    assert again.id == first.id and again.status is first.status
    assert first.status is OrderStatus.FILLED and first.filled == pytest.approx(0.01)
    (pos,) = h.exchange.fetch_positions("alice")
    assert pos.amount == pytest.approx(0.01) and pos.direction is Direction.LONG
    other = h.exchange.create_order("bob", order("entry-1", Side.BUY, 0.01))
    assert other.id != first.id


def test_market_order_fills_near_the_price(h: PortHarness) -> None:
    price = last_price(h.exchange)
    buy = h.exchange.create_order("alice", order("b1", Side.BUY, 0.02, leverage=5))
    assert buy.client_order_id == "b1" and buy.side is Side.BUY
    assert buy.average is not None and abs(buy.average / price - 1) < 0.01
    sell = h.exchange.create_order("carol", order("s1", Side.SELL, 0.02, leverage=5))
    (pos,) = h.exchange.fetch_positions("carol")
    assert pos.direction is Direction.SHORT and pos.entry_price == pytest.approx(sell.average or 0)


def test_reduce_only_cannot_open(h: PortHarness) -> None:
    with pytest.raises(OrderRejected):
        h.exchange.create_order("alice", order("r0", Side.SELL, 0.01, reduce_only=True))
    h.exchange.create_order("alice", order("e", Side.BUY, 0.01))
    close = h.exchange.create_order("alice", order("r1", Side.SELL, 0.01, reduce_only=True))
    assert close.status is OrderStatus.FILLED
    assert h.exchange.fetch_positions("alice") == []


def test_insufficient_margin_is_rejected_and_leaves_no_order(h: PortHarness) -> None:
    amount = round(30_000 / last_price(h.exchange), 3)  # 30k notional on a 10k account
    with pytest.raises(OrderRejected, match=r"(?i)margin|insufficient"):
        h.exchange.create_order("alice", order("big", Side.BUY, amount, leverage=2))
    assert h.exchange.fetch_positions("alice") == []
    ok = h.exchange.create_order("alice", order("big", Side.BUY, amount, leverage=5))
    assert ok.status is OrderStatus.FILLED


def test_balance_shows_margin_in_use(h: PortHarness) -> None:
    before = h.exchange.fetch_balance("alice")
    assert before.currency == "USDT" and before.wallet == pytest.approx(10_000.0)
    h.exchange.create_order("alice", order("in", Side.BUY, 0.05, leverage=5))
    mid = h.exchange.fetch_balance("alice")
    assert mid.used_margin == pytest.approx(0.05 * last_price(h.exchange) / 5, rel=0.01)


def test_stop_loss_rests_reduce_only_and_cancels_idempotently(h: PortHarness) -> None:
    entry = h.exchange.create_order("alice", order("e", Side.BUY, 0.01, leverage=5))
    assert entry.average is not None
    sl = h.exchange.create_order(
        "alice",
        order(
            "sl",
            Side.SELL,
            0.01,
            OrderType.STOP_MARKET,
            stop=round(entry.average * 0.9, 1),
            reduce_only=True,
        ),
    )
    assert sl.status is OrderStatus.OPEN and sl.type is OrderType.STOP_MARKET
    assert sl.reduce_only and sl.stop_price == pytest.approx(round(entry.average * 0.9, 1))
    assert [o.id for o in h.exchange.fetch_open_orders("alice", BTC)] == [sl.id]
    assert h.exchange.fetch_order("alice", sl.id).client_order_id == "sl"
    assert h.exchange.cancel_order("alice", sl.id).status is OrderStatus.CANCELED
    assert h.exchange.cancel_order("alice", sl.id).status is OrderStatus.CANCELED
    assert h.exchange.fetch_open_orders("alice") == []
    with pytest.raises(ExchangeError):
        h.exchange.fetch_order("alice", "no-such-order")


def test_stop_that_would_trigger_at_once_is_rejected(h: PortHarness) -> None:
    entry = h.exchange.create_order("alice", order("e", Side.BUY, 0.01))
    with pytest.raises(OrderRejected):
        h.exchange.create_order(
            "alice",
            order(
                "sl",
                Side.SELL,
                0.01,
                OrderType.STOP_MARKET,
                stop=round((entry.average or 0) * 1.01, 1),
                reduce_only=True,
            ),
        )


def test_stop_loss_fires_when_price_crosses_it(h: PortHarness) -> None:
    entry = h.exchange.create_order("alice", order("e", Side.BUY, 0.05, leverage=10))
    assert entry.average is not None
    stop = round(entry.average - (entry.average - lowest_low_ahead()) * 0.5, 1)
    sl = h.exchange.create_order(
        "alice", order("sl", Side.SELL, 0.05, OrderType.STOP_MARKET, stop=stop, reduce_only=True)
    )
    h.advance_ms(6 * 3_600_000)
    filled = h.exchange.fetch_order("alice", sl.id)
    assert filled.status is OrderStatus.FILLED and filled.filled == pytest.approx(0.05)
    assert filled.average is not None and abs(filled.average / stop - 1) < 0.01
    assert h.exchange.fetch_positions("alice") == []


def test_limit_order_rests_until_cancelled(h: PortHarness) -> None:
    price = last_price(h.exchange)
    limit = h.exchange.create_order(
        "alice", order("lim", Side.BUY, 0.01, OrderType.LIMIT, price=round(price * 0.5, 1))
    )
    assert limit.status is OrderStatus.OPEN and limit.price == pytest.approx(round(price * 0.5, 1))
    assert [o.id for o in h.exchange.fetch_open_orders("alice")] == [limit.id]
    assert h.exchange.cancel_order("alice", limit.id).status is OrderStatus.CANCELED


def test_open_orders_on_symbols_are_the_accounts_listing_kept_to_them(h: PortHarness) -> None:
    price = last_price(h.exchange)
    limit = h.exchange.create_order(
        "alice", order("lim", Side.BUY, 0.01, OrderType.LIMIT, price=round(price * 0.5, 1))
    )
    other = next(m.symbol for m in h.exchange.load_markets() if m.symbol != BTC)
    listing = [o.id for o in h.exchange.fetch_open_orders("alice")]
    assert listing == [limit.id]
    assert h.exchange.fetch_open_orders_on("alice", []) == []
    assert h.exchange.fetch_open_orders_on("alice", [other]) == []
    assert [o.id for o in h.exchange.fetch_open_orders_on("alice", [BTC])] == listing
    assert [o.id for o in h.exchange.fetch_open_orders_on("alice", {BTC, other})] == listing
    assert h.exchange.fetch_open_orders_on("bob", [BTC]) == []
