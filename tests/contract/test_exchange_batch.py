"""The ``Exchange`` port's batch calls: ``create_orders`` and ``fetch_balances`` give exactly
what the single calls give one by one, on every adapter.

Each test opens two fresh exchanges of one adapter and plays the same script on both: one
with ``create_order`` call by call, the other with ``create_orders`` batches. The returned
orders and refusals, the balances, positions and orders read back, and for the paper
venue the ledger's stored documents (as JSON text), must be identical.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.contract.exchange_adapters import ACCOUNTS, ADAPTERS, START_MS, PortHarness
from tests.standins.engine import recorded_market

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.paper import ledger as ledger_module
from prometheus_trader.adapters.paper.ledger import PaperCollections
from prometheus_trader.domain.market import Side
from prometheus_trader.domain.trading import Order, OrderRequest, OrderStatus, OrderType
from prometheus_trader.ports import Exchange, OrderRejected

pytestmark = pytest.mark.contract
BTC = "BTC/USDT:USDT"
Items = list[tuple[str, OrderRequest]]


@pytest.fixture(params=sorted(ADAPTERS))
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[PortHarness, PortHarness]]:
    """Two independent fresh exchanges of one adapter."""
    with ExitStack() as stack:
        one = stack.enter_context(ADAPTERS[request.param](request))
        two = stack.enter_context(ADAPTERS[request.param](request))
        yield one, two


def req(
    cid: str,
    side: Side,
    amount: float,
    kind: OrderType = OrderType.MARKET,
    *,
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
        stop_price=stop,
        reduce_only=reduce_only,
        leverage=leverage,
    )


def bracket(account: str, tag: str, side: Side, amount: float, price: float) -> Items:
    """A market entry with its stop and take profit (what an executor places)."""
    exit_side = Side.SELL if side is Side.BUY else Side.BUY
    down, up = round(price * 0.9, 1), round(price * 1.1, 1)
    stop, target = (down, up) if side is Side.BUY else (up, down)
    return [
        (account, req(f"{tag}-entry", side, amount, leverage=5)),
        (
            account,
            req(f"{tag}-sl", exit_side, amount, OrderType.STOP_MARKET, stop=stop, reduce_only=True),
        ),
        (
            account,
            req(
                f"{tag}-tp",
                exit_side,
                amount,
                OrderType.TAKE_PROFIT_MARKET,
                stop=target,
                reduce_only=True,
            ),
        ),
    ]


def first_batch(price: float) -> Items:
    alice, bob, carol = ACCOUNTS
    return [
        *bracket(alice, "a1", Side.BUY, 0.01, price),
        *bracket(bob, "b1", Side.SELL, 0.02, price),
        (carol, req("c0", Side.SELL, 0.01, reduce_only=True)),  # nothing to reduce
        (carol, req("c-nope", Side.BUY, 1.0, symbol="NOPE/USDT:USDT")),  # unknown symbol
        (carol, req("c1", Side.BUY, 0.01, leverage=2)),
        (alice, req("a1-entry", Side.BUY, 0.01, leverage=5)),  # a repeat: the same order
        (carol, req("c-big", Side.BUY, round(60_000 / price, 3), leverage=2)),  # no margin
        (carol, req("c-close", Side.SELL, 0.01, reduce_only=True)),
    ]


def second_batch(price: float) -> Items:
    alice, bob, carol = ACCOUNTS
    return [
        (alice, req("a1-close", Side.SELL, 0.01, reduce_only=True)),  # OCO cancels sl/tp
        *bracket(carol, "c2", Side.SELL, 0.01, price),
        (bob, req("b1-entry", Side.SELL, 0.02, leverage=5)),  # a repeat
        (bob, req("b2", Side.SELL, 0.01, leverage=5)),
    ]


def one_by_one(exchange: Exchange, items: Items) -> list[Order | OrderRejected]:
    out: list[Order | OrderRejected] = []
    for account, request in items:
        try:
            out.append(exchange.create_order(account, request))
        except OrderRejected as exc:
            out.append(exc)
    return out


def comparable(results: Sequence[Order | OrderRejected]) -> list[Any]:
    # a venue's refusal carries its server time (the Bybit stand-in's wall clock)
    return [
        r if isinstance(r, Order) else ("rejected", re.sub(r'"time": \d+', "", str(r)))
        for r in results
    ]


def account_state(exchange: Exchange, orders: Sequence[Order | OrderRejected]) -> list[Any]:
    """What the port reads back: balances, positions, resting orders, every order."""
    state: list[Any] = []
    for account in ACCOUNTS:
        state += [
            exchange.fetch_balance(account),
            exchange.fetch_positions(account),
            exchange.fetch_open_orders(account),
        ]
    state += [exchange.fetch_order(o.account, o.id) for o in orders if isinstance(o, Order)]
    return state


def ledger_text(exchange: Exchange) -> str | None:
    """The paper ledger's documents as JSON text (None: not a paper venue)."""
    if not isinstance(exchange, ReplayExchange):
        return None
    state = exchange.ledger.state
    collections = (PaperCollections.ACCOUNTS, PaperCollections.ORDERS, PaperCollections.FILLS)
    return json.dumps([state.query(c) for c in collections])


def test_create_orders_equals_create_order_one_by_one(
    pair: tuple[PortHarness, PortHarness],
) -> None:
    single, batch = pair
    price = single.exchange.fetch_tickers([BTC])[0].last
    assert batch.exchange.fetch_tickers([BTC])[0].last == price

    expected = one_by_one(single.exchange, first_batch(price))
    got = batch.exchange.create_orders(first_batch(price))
    assert comparable(got) == comparable(expected)
    kinds = ["order" if isinstance(r, Order) else "rejected" for r in got]
    assert kinds == ["order"] * 6 + ["rejected"] * 2 + ["order"] * 2 + ["rejected", "order"]
    placed = [r for r in got if isinstance(r, Order)]
    # the repeated client order id: the first order
    assert (placed[7].id, placed[7].status) == (placed[0].id, placed[0].status)
    assert placed[0].status is OrderStatus.FILLED and placed[1].status is OrderStatus.OPEN
    assert account_state(batch.exchange, got) == account_state(single.exchange, expected)
    assert ledger_text(batch.exchange) == ledger_text(single.exchange)

    single.advance_ms(3_600_000)
    batch.advance_ms(3_600_000)
    price = single.exchange.fetch_tickers([BTC])[0].last
    expected += one_by_one(single.exchange, second_batch(price))
    got += batch.exchange.create_orders(second_batch(price))
    assert comparable(got) == comparable(expected)
    assert account_state(batch.exchange, got) == account_state(single.exchange, expected)
    assert ledger_text(batch.exchange) == ledger_text(single.exchange)
    # an empty batch places nothing
    assert batch.exchange.create_orders([]) == []


def test_fetch_balances_equals_fetch_balance_per_account(h2: PortHarness) -> None:
    exchange = h2.exchange
    price = exchange.fetch_tickers([BTC])[0].last
    exchange.create_orders(bracket("alice", "a", Side.BUY, 0.01, price))
    asked = ["bob", "alice", "bob", "carol"]
    balances = exchange.fetch_balances(asked)
    assert list(balances) == ["bob", "alice", "carol"]
    assert balances == {a: exchange.fetch_balance(a) for a in asked}
    assert balances["alice"].used_margin > 0 and balances["bob"].used_margin == 0
    assert exchange.fetch_balances([]) == {}


@pytest.fixture(params=sorted(ADAPTERS))
def h2(request: pytest.FixtureRequest) -> Iterator[PortHarness]:
    with ADAPTERS[request.param](request) as harness:
        yield harness


class FailingCommits:
    """A ``MemoryStateStore`` whose chosen transactions fail at commit (rolled back)."""

    def __init__(self, fail_at: set[int]) -> None:
        self.inner = MemoryStateStore()
        self.fail_at = fail_at
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def transaction(self, fn: Callable[[Any], Any]) -> Any:
        self.transactions += 1
        if self.transactions not in self.fail_at:
            return self.inner.transaction(fn)

        def then_fail(t: Any) -> Any:
            fn(t)
            raise ConnectionError("store unavailable at commit")

        return self.inner.transaction(then_fail)


@pytest.mark.parametrize("exclusive", [True, False])
def test_a_failed_batch_raises_and_its_repeat_books_what_one_by_one_would(
    exclusive: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items go in transactions of ``BATCH_ITEMS`` (``SHARED_BATCH_ITEMS``): a failure in
    one raises for the whole call (the transactions before it stay), and repeating the
    call (idempotent) ends with the ledger of the calls one by one."""
    monkeypatch.setattr(ledger_module, "BATCH_ITEMS", 4)
    monkeypatch.setattr(ledger_module, "SHARED_BATCH_ITEMS", 4)
    market = recorded_market().store

    def exchange(state: Any) -> ReplayExchange:
        clock = SimulatedClock(datetime.fromtimestamp(START_MS / 1000, UTC))
        return ReplayExchange(market, clock, ledger=state, ledger_exclusive=exclusive)

    single = exchange(MemoryStateStore())
    flaky_state = FailingCommits(fail_at={2})
    batch = exchange(flaky_state)
    price = single.fetch_tickers([BTC])[0].last
    items = first_batch(price)
    expected = one_by_one(single, items)
    with pytest.raises(ConnectionError):
        batch.create_orders(items)
    # the first transaction's 4 items were booked, the failed one's rolled back
    assert ledger_text(batch) != ledger_text(single)
    assert len(batch.fills("alice")) == 1 and batch.fetch_open_orders("bob") == []
    got = batch.create_orders(items)
    assert comparable(got) == comparable(expected)
    assert account_state(batch, got) == account_state(single, expected)
    assert ledger_text(batch) == ledger_text(single)
