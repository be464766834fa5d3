"""The paper ledger's stored layout: a bracket writes its account and one order document.

A resting order lives only in its account's document until it leaves the book (filled,
cancelled); an order's fill is stored in its order's document. Everything reads back
through the ``Exchange`` port as before, and a ledger an older layout wrote (resting
orders also in ``paper_orders``, fills in ``paper_fills``) reads back the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.adapters.paper.ledger import PaperCollections
from prometheus_trader.domain.market import Side
from prometheus_trader.domain.trading import OrderRequest, OrderStatus, OrderType
from prometheus_trader.sample import SAMPLE_STORE_DIR

pytestmark = pytest.mark.integration

START = datetime(2025, 5, 21, 8, 0, 30, tzinfo=UTC)
BTC = "BTC/USDT:USDT"


def instance(db: Path) -> tuple[ReplayExchange, SqliteStateStore]:
    state = SqliteStateStore(db)
    source = DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True)
    return ReplayExchange(source, SimulatedClock(START), ledger=state), state


def bracket(price: float) -> list[OrderRequest]:
    def req(cid: str, side: Side, kind: OrderType, stop: float | None = None) -> OrderRequest:
        return OrderRequest(
            client_order_id=cid,
            symbol=BTC,
            side=side,
            type=kind,
            amount=0.01,
            stop_price=stop,
            reduce_only=stop is not None,
        )

    return [
        req("entry", Side.BUY, OrderType.MARKET),
        req("sl", Side.SELL, OrderType.STOP_MARKET, price * 0.9),
        req("tp", Side.SELL, OrderType.TAKE_PROFIT_MARKET, price * 1.1),
    ]


def readback(ex: ReplayExchange) -> list[Any]:
    """What a reader of the account sees through the port."""
    orders = ex.orders("alice")
    return [
        ex.fetch_balance("alice"),
        ex.fetch_positions("alice"),
        ex.fetch_open_orders("alice"),
        orders,
        ex.fills("alice"),
        [ex.fetch_order("alice", o.id) for o in orders],
    ]


def test_a_bracket_writes_its_account_and_one_order_document(tmp_path: Path) -> None:
    ex, state = instance(tmp_path / "state.sqlite")
    price = ex.fetch_tickers([BTC])[0].last
    entry, sl, tp = ex.create_orders([("alice", r) for r in bracket(price)])
    assert not isinstance(entry, Exception) and entry.status is OrderStatus.FILLED
    assert not isinstance(sl, Exception) and not isinstance(tp, Exception)
    orders = state.query(PaperCollections.ORDERS)
    assert [d["record"]["order"]["id"] for d in orders] == [entry.id]
    assert orders[0]["fill_seq"] == 1
    (fill,) = ex.fills("alice")
    assert (fill.order_id, fill.price, fill.amount, fill.fee, fill.ts_ms) == (
        entry.id,
        entry.average,
        entry.filled,
        entry.fee,
        entry.updated_ms,
    )
    assert state.query(PaperCollections.FILLS) == []
    (account,) = state.query(PaperCollections.ACCOUNTS)
    assert [r["order"]["id"] for r in account["open_orders"]] == [sl.id, tp.id]
    # a second process: the resting orders come back by client order id, not again
    other, _ = instance(tmp_path / "state.sqlite")
    again = other.create_orders([("alice", r) for r in bracket(price)])
    assert [o.id for o in again if not isinstance(o, Exception)] == [entry.id, sl.id, tp.id]
    assert readback(other) == readback(ex)
    assert [o.status for o in other.orders("alice")] == [
        OrderStatus.FILLED,
        *[OrderStatus.OPEN] * 2,
    ]
    # a cancelled order leaves the book: its document is written then
    assert other.cancel_order("alice", sl.id).status is OrderStatus.CANCELED
    stored = {d["record"]["order"]["id"]: d["status"] for d in state.query(PaperCollections.ORDERS)}
    assert stored == {entry.id: OrderStatus.FILLED.value, sl.id: OrderStatus.CANCELED.value}
    assert [o.id for o in ex.fetch_open_orders("alice")] == [tp.id]


def test_a_ledger_in_the_older_layout_reads_back_the_same(tmp_path: Path) -> None:
    ex, state = instance(tmp_path / "state.sqlite")
    price = ex.fetch_tickers([BTC])[0].last
    ex.create_orders([("alice", r) for r in bracket(price)])
    before = readback(ex)
    # rewrite the documents as the older layout stored them: every resting order also
    # in paper_orders, each fill in paper_fills
    (account,) = state.query(PaperCollections.ACCOUNTS)
    fills = {f.order_id: f.model_dump(mode="json") for f in ex.fills("alice")}
    for doc in state.query(PaperCollections.ORDERS):
        seq = doc.pop("fill_seq")
        order_id = doc["record"]["order"]["id"]
        fill = fills[order_id]
        state.set(PaperCollections.ORDERS, order_id, doc)
        old_fill = {k: doc[k] for k in ("exchange", "account", "owner")}
        state.set(PaperCollections.FILLS, order_id, {**old_fill, "seq": seq, "fill": fill})
    for rec in account["open_orders"]:
        order = rec["order"]
        old = {k: doc[k] for k in ("exchange", "account", "owner")}
        state.set(
            PaperCollections.ORDERS,
            order["id"],
            {
                **old,
                "client_order_id": order["client_order_id"],
                "seq": rec["seq"],
                "status": order["status"],
                "record": rec,
            },
        )
    other, _ = instance(tmp_path / "state.sqlite")
    assert readback(other) == before
    again = other.create_orders([("alice", r) for r in bracket(price)])
    assert [o.id for o in again if not isinstance(o, Exception)] == [o.id for o in before[3]]
    assert len(other.orders("alice")) == 3 and len(other.fills("alice")) == 1
