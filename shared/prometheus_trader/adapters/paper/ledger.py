"""Paper accounts persisted in a ``StateStore``: one ledger for every process.

Every executor instance, the worker and a restarted worker see the same accounts, because
the accounts live in the state store (SQLite embedded, Firestore deployed), not in a
process's memory. Layout (collection / document):

* ``paper_accounts/<exchange>-<hash(account)>``: the live book of one account: wallet,
  net positions, resting orders (each order's only copy while it rests), the trade-stream
  cursor ``synced_ms``, sequence numbers and a ``version`` bumped on every write;
* ``paper_orders/<order id>``: every order that left its book (filled, cancelled,
  rejected), with its fill's sequence number ``fill_seq`` if it filled (one trade fills
  a whole order: the fill's values are the filled order's). The id is derived from
  (account, client order id), so creation is create-if-absent by client order id
  (looked up in the book, then here) and a second process gets the first order back. A
  bracket (market entry, stop, take profit) so writes its account and one order
  document, not its account, three orders and a fill;
* ``paper_fills/<order id>``: read only, the fills an older layout stored apart (and
  ``paper_orders`` documents of resting orders it wrote: the book's record wins).

Resting orders are matched against the trade stream from the account's cursor to now,
inside the transaction that writes the result, so two processes never fill one order
twice (SQLite ``BEGIN IMMEDIATE`` serializes them; Firestore retries the loser, which then
sees the new cursor). Reads do not write: a read checks, without a transaction, whether
any resting order would trigger between the stored cursor and now; only then (or for an
order, a cancel) does it open a transaction. The cursor is written only with a change,
never per tick: re-walking trades that trigger nothing is free of side effects (the only
writer, ``exclusive``, starts the walk where its last read found nothing to trigger).

Orders: ``create_orders`` books many (a fan-out) in transactions of ``BATCH_ITEMS``: each
item exactly as its own ``create_order``, on the book the items before it left, and each
document the items change written once, with its last value, so the stored documents are
those of the calls one by one (``tests/contract/test_exchange_batch.py``).

Fill semantics are the replay exchange's (see its module docstring); the math is in
``domain.paper``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from prometheus_trader.adapters.exchange_batch import balances_one_by_one, open_orders_on
from prometheus_trader.adapters.paper.book import (
    AccountBook,
    FillConfig,
    PaperMarket,
    RestingOrder,
    Session,
    assign,
    copy_model,
)
from prometheus_trader.adapters.paper.placing import place_order
from prometheus_trader.domain.ids import stable_id
from prometheus_trader.domain.market import Instrument
from prometheus_trader.domain.paper import trigger_price
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import (
    Balance,
    ExchangePosition,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
)
from prometheus_trader.domain.trusted import trusted
from prometheus_trader.ports import (
    Clock,
    Document,
    ExchangeError,
    Filter,
    OrderRejected,
    StateStore,
    StateTransaction,
)

R = TypeVar("R")


class PaperCollections:
    """State-store collections of the paper ledger."""

    ACCOUNTS = "paper_accounts"
    ORDERS = "paper_orders"
    FILLS = "paper_fills"


_BALANCE_FIELDS_SET = frozenset(("wallet", "unrealized_pnl", "used_margin"))

# items booked in one transaction by ``create_orders``: an item writes 1–3 documents
# (account, order, fill) plus what its sync fills. A ledger other processes write too
# (Firestore deployed) locks fewer documents per transaction: about 100 writes at most,
# Firestore's advice (its hard cap is 500)
BATCH_ITEMS = 96
SHARED_BATCH_ITEMS = 32


@dataclass
class _Pending:
    """One account's book inside a ``create_orders`` transaction."""

    account: str
    doc_id: str
    book: AccountBook
    stored: bool  # its document exists (in the store, or written by this transaction)
    written: bool = False
    quiet: int | None = None  # no resting order triggers up to then (``_Cached.checked_ms``)


@dataclass
class _Cached:
    version: int
    book: AccountBook
    checked_ms: int  # no resting order triggers in (synced_ms, checked_ms]


class PaperLedger:
    """Paper accounts, orders, fills and positions over a ``StateStore``."""

    def __init__(
        self,
        state: StateStore,
        market: PaperMarket,
        clock: Clock,
        config: FillConfig,
        *,
        exclusive: bool = False,
    ) -> None:
        """``exclusive``: this object is the ledger's only writer (one process: ``run``,
        ``stack run``), so a read may trust its cache without reading the store; every
        write still goes to the store in a transaction."""
        self.state = state
        self.market = market
        self.config = config
        self._clock = clock
        self._exclusive = exclusive
        self._cache: dict[str, _Cached] = {}

    # ------------------------------------------------------------------ port calls
    def fetch_balance(self, account: str) -> Balance:
        """Wallet, unrealized PnL at the last price, and margin in use."""
        return self.balance(self._read(account))

    def create_order(self, account: str, request: OrderRequest) -> Order:
        """Place an order; the same ``client_order_id`` returns the existing order."""
        (result,) = self._create_batch([(account, request)])
        if isinstance(result, OrderRejected):
            raise result
        return result

    def create_orders(
        self, requests: Sequence[tuple[str, OrderRequest]]
    ) -> list[Order | OrderRejected]:
        """``create_order`` for each (account, request), in order; a refusal in its place.

        Up to ``BATCH_ITEMS`` items (``SHARED_BATCH_ITEMS`` on a ledger other processes
        write too) share one transaction: each item is booked exactly as
        its own ``create_order`` would (the same sync, version bump, orders and fills, on
        the book the previous items left), and every document the items change is written
        once, with its last value: the stored documents are those of the calls one by one.
        An error other than a refusal rolls back its transaction (the earlier ones stay)."""
        out: list[Order | OrderRejected] = []
        size = BATCH_ITEMS if self._exclusive else SHARED_BATCH_ITEMS
        for start in range(0, len(requests), size):
            out += self._create_batch(requests[start : start + size])
        return out

    def fetch_balances(self, accounts: Sequence[str]) -> dict[str, Balance]:
        """``fetch_balance`` of each account, by account."""
        return balances_one_by_one(self.fetch_balance, accounts)

    def _create_batch(
        self, items: Sequence[tuple[str, OrderRequest]]
    ) -> list[Order | OrderRejected]:
        """Book ``items`` in one transaction (see ``create_orders``)."""
        now = self._clock.now_ms()
        doc_ids = {account: self._doc_id(account) for account, _ in items}
        # the only writer may start from its cached books (the stored ones) instead of
        # reading and parsing them; the first run only (a retried fn reads the store) and
        # the cache is dropped if the transaction fails (the books are changed in place)
        trusted = (
            {d: c for d in doc_ids.values() if (c := self._cache.get(d)) is not None}
            if self._exclusive
            else {}
        )
        runs = 0

        def fn(t: StateTransaction) -> tuple[list[Order | OrderRejected], list[_Pending]]:
            nonlocal runs
            runs += 1
            books: dict[str, _Pending] = {}
            # what the items changed, by id, with its latest value (written once, at the end)
            orders: dict[str, tuple[str, RestingOrder]] = {}
            fills: dict[str, int] = {}  # fill sequence numbers by order id
            results: list[Order | OrderRejected] = []
            for account, request in items:
                doc_id = doc_ids[account]
                pending = books.get(doc_id)
                if pending is None:
                    cached = trusted.get(doc_id) if runs == 1 else None
                    if cached is not None:
                        pending = _Pending(
                            account, doc_id, cached.book, stored=True, quiet=cached.checked_ms
                        )
                    else:
                        doc = t.get(PaperCollections.ACCOUNTS, doc_id)
                        book = AccountBook.model_validate(doc) if doc else self._new_book(account)
                        pending = _Pending(account, doc_id, book, stored=doc is not None)
                    books[doc_id] = pending
                order_id = self.order_id(account, request.client_order_id)
                known = orders.get(order_id)
                existing: RestingOrder | Document | None = (
                    known[1]
                    if known
                    # a resting order lives in its account's document only
                    else _open_order(pending.book, order_id)
                    or t.get(PaperCollections.ORDERS, order_id)
                )
                session = Session(self, pending.book)
                session.sync(now, pending.quiet)
                result: Order | OrderRejected
                if existing is None:
                    try:
                        result = place_order(self, session, account, order_id, request)
                    except OrderRejected as exc:
                        result = exc
                elif order_id in session.orders:  # as of now: this very sync may have filled it
                    result = copy_model(session.orders[order_id].order)
                elif isinstance(existing, RestingOrder):
                    result = copy_model(existing.order)
                else:
                    result = RestingOrder.model_validate(existing["record"]).order
                if session.changed or not pending.stored:
                    assign(pending.book, version=pending.book.version + 1)
                    pending.stored = pending.written = True
                    for rec in session.orders.values():
                        orders[rec.order.id] = (account, rec)
                    fills.update((order_id, seq) for seq, order_id in session.fills)
                results.append(result)
            for pending in books.values():
                if pending.written:
                    doc = pending.book.model_dump(mode="json")
                    t.set(PaperCollections.ACCOUNTS, pending.doc_id, doc)
            for order_id, (account, rec) in orders.items():
                if rec.order.status is not OrderStatus.OPEN:  # a resting one: in its book
                    doc = self._order_doc(account, rec, fills.get(order_id))
                    t.set(PaperCollections.ORDERS, order_id, doc)
            return results, list(books.values())

        try:
            results, pendings = self.state.transaction(fn)
        except BaseException:
            for doc_id in doc_ids.values():
                self._cache.pop(doc_id, None)
            raise
        for pending in pendings:
            self._cache[pending.doc_id] = _Cached(pending.book.version, pending.book, now)
        return results

    def fetch_order(self, account: str, order_id: str) -> Order:
        """One order by exchange id (``ExchangeError`` if unknown)."""
        book = self._read(account)
        for rec in book.open_orders:
            if rec.order.id == order_id:
                return copy_model(rec.order)
        return self._stored_order(account, order_id).order

    def fetch_open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        """Resting orders, in creation order."""
        return [copy_model(r.order) for r in self._read(account).resting(symbol)]

    def fetch_open_orders_on(self, account: str, symbols: Collection[str]) -> list[Order]:
        """Resting orders on ``symbols``, in creation order (one read of the book)."""
        return open_orders_on(self.fetch_open_orders, account, symbols)

    def cancel_order(self, account: str, order_id: str) -> Order:
        """Cancel a resting order (no-op on a filled or cancelled one)."""
        if not self._rests(account, order_id):
            stored = self._stored_order(account, order_id)  # ExchangeError when unknown
            if stored.order.status is not OrderStatus.OPEN:
                return stored.order

        def op(session: Session, current: Document | None) -> Order:
            for rec in session.book.resting():
                if rec.order.id == order_id:
                    session.finish(rec, OrderStatus.CANCELED, self._clock.now_ms())
                    return copy_model(rec.order)
            if order_id in session.orders:  # filled by this very sync
                return copy_model(session.orders[order_id].order)
            if current is None:  # left the book meanwhile: its document is written then
                raise ExchangeError(f"order {order_id} not found")
            return RestingOrder.model_validate(current["record"]).order

        return self._transact(account, op, read_order=order_id)

    def fetch_positions(self, account: str) -> list[ExchangePosition]:
        """Open net positions, by symbol."""
        book = self._read(account)
        return [
            trusted(  # the book's own floats: nothing to validate
                ExchangePosition,
                {
                    "account": account,
                    "symbol": symbol,
                    "direction": Direction.LONG if pos.amount > 0 else Direction.SHORT,
                    "amount": abs(pos.amount),
                    "entry_price": pos.entry_price,
                },
            )
            for symbol, pos in sorted(book.positions.items())
            if pos.amount != 0
        ]

    def orders(self, account: str) -> list[Order]:
        """Every order of ``account`` (any status) in creation order."""
        book = self._read(account)
        # literal collection and filters: tests/integration/test_firestore_indexes.py reads them
        docs = self.state.query("paper_orders", [Filter("owner", "==", self._owner(account))])
        # the resting ones from the book (a document an older layout wrote while the order
        # rested is the same record)
        resting = {r.order.id: r for r in book.open_orders}
        recs = list(resting.values())  # their orders are copied below
        for d in docs:
            rec = RestingOrder.model_validate(d["record"])
            if rec.order.id not in resting:
                recs.append(rec)
        recs.sort(key=_by_seq)
        return [copy_model(r.order) if r.order.id in resting else r.order for r in recs]

    def fills(self, account: str) -> list[Fill]:
        """Every fill of ``account`` in execution order."""
        self._read(account)
        owner = self._owner(account)
        # literal collections and filters: tests/integration/test_firestore_indexes.py
        docs = self.state.query("paper_orders", [Filter("owner", "==", owner)])
        found = {
            d["record"]["order"]["id"]: (d["fill_seq"], _fill_of(d["record"]["order"]))
            for d in docs
            if "fill_seq" in d
        }
        # fills an older layout stored apart (``paper_fills/<order id>``)
        for d in self.state.query("paper_fills", [Filter("owner", "==", owner)]):
            found.setdefault(d["fill"]["order_id"], (d["seq"], d["fill"]))
        return [Fill.model_validate(f) for _, f in sorted(found.values(), key=_first)]

    def accounts(self) -> list[str]:
        """Names of the paper accounts created so far, sorted."""
        docs = self.state.query(
            "paper_accounts", [Filter("exchange", "==", self.config.exchange_id)]
        )
        return sorted(d["account"] for d in docs)

    # ------------------------------------------------------------------- helpers
    def order_id(self, account: str, client_order_id: str) -> str:
        """The exchange id of an account's order: derived, so creation is idempotent
        (``stable_id(account, client_order_id, length=20)``, spelled out: one per order)."""
        digest = hashlib.sha256(f"{account}\x1f{client_order_id}".encode()).hexdigest()
        return f"{self.config.exchange_id}-{digest[:20]}"

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _account_hash(account: str) -> str:
        return stable_id(account, length=24)

    def instrument(self, symbol: str) -> Instrument:
        """The instrument (``ExchangeError`` if unknown)."""
        inst = self.market.paper_instrument(symbol)
        if inst is None:
            raise ExchangeError(f"unknown symbol {symbol}")
        return inst

    def now_ms(self) -> int:
        """The clock's now."""
        return self._clock.now_ms()

    def balance(self, book: AccountBook) -> Balance:
        """Balance of ``book`` at the clock's now."""
        wallet, unrealized, used = self.balance_parts(book)
        # floats of our own: nothing to validate
        return trusted(
            Balance,
            {
                "currency": "USDT",
                "wallet": wallet,
                "unrealized_pnl": unrealized,
                "used_margin": used,
            },
            set(_BALANCE_FIELDS_SET),
        )

    def balance_parts(self, book: AccountBook) -> tuple[float, float, float]:
        """(wallet, unrealized PnL at the last price, margin in use) of ``book`` now."""
        unrealized = used = 0.0
        now = self._clock.now_ms()
        for symbol, pos in sorted(book.positions.items()):
            if pos.amount == 0:
                continue
            used += pos.margin
            last = self.market.last_price(symbol, now)
            if last is not None:
                unrealized += pos.amount * (last - pos.entry_price)
        return float(book.wallet), unrealized, used

    def free_margin(self, book: AccountBook) -> float:
        """``balance(book).free`` (the same floats, without building the model)."""
        balance = self.balance_parts(book)
        return balance[0] + balance[1] - balance[2]

    def _doc_id(self, account: str) -> str:
        return f"{self.config.exchange_id}-{self._account_hash(account)}"

    def _owner(self, account: str) -> str:
        return self._doc_id(account)

    def _new_book(self, account: str) -> AccountBook:
        return AccountBook(
            exchange=self.config.exchange_id,
            account=account,
            wallet=self.config.starting_balance,
        )

    def _rests(self, account: str, order_id: str) -> bool:
        """Whether ``order_id`` rests in the account's stored (or, for the only writer,
        cached) book, without syncing it."""
        cached = self._cache.get(self._doc_id(account)) if self._exclusive else None
        if cached is not None:
            return _open_order(cached.book, order_id) is not None
        doc = self.state.get(PaperCollections.ACCOUNTS, self._doc_id(account))
        return doc is not None and any(r["order"]["id"] == order_id for r in doc["open_orders"])

    def _stored_order(self, account: str, order_id: str) -> RestingOrder:
        doc = self.state.get(PaperCollections.ORDERS, order_id)
        if doc is None or doc.get("account") != account:
            raise ExchangeError(f"order {order_id} not found")
        return RestingOrder.model_validate(doc["record"])

    def _read(self, account: str) -> AccountBook:
        """The book as of now; writes only if a resting order triggered since the cursor."""
        doc_id = self._doc_id(account)
        now = self._clock.now_ms()
        cached = self._cache.get(doc_id)
        if not self._exclusive or cached is None:  # the only writer trusts its cache
            doc = self.state.get(PaperCollections.ACCOUNTS, doc_id)
            if doc is None:
                return self._new_book(account)
            if cached is None or cached.version != doc["version"]:
                book = AccountBook.model_validate(doc)
                cached = _Cached(book.version, book, book.synced_ms or now)
                self._cache[doc_id] = cached
        if now > cached.checked_ms:
            if self._would_trigger(cached.book, cached.checked_ms, now):
                return self._transact(account, lambda session, _: session.book)
            cached.checked_ms = now
        return cached.book

    def _would_trigger(self, book: AccountBook, after_ms: int, now_ms: int) -> bool:
        resting = book.resting()
        if not resting:
            return False
        by_symbol: dict[str, list[RestingOrder]] = {}
        for rec in resting:
            by_symbol.setdefault(rec.order.symbol, []).append(rec)
        # whether any trade triggers any order: one symbol at a time (no merged stream)
        for symbol, recs in by_symbol.items():
            for trade in self.market.visible_trades([symbol], after_ms, now_ms):
                for rec in recs:
                    if (
                        trade.ts_ms > rec.active_after_ms
                        and trigger_price(rec.order, trade.price, 0.0) is not None
                    ):
                        return True
        return False

    def _transact(
        self,
        account: str,
        op: Callable[[Session, Document | None], R],
        *,
        read_order: str | None = None,
    ) -> R:
        """Sync the book to now and run ``op`` in one transaction; write what changed.

        ``op`` may return an ``OrderRejected`` by raising it: the sync is still kept.
        """
        doc_id = self._doc_id(account)
        now = self._clock.now_ms()
        # the only writer may start from its cached book (the stored one) instead of
        # reading and parsing it; the first run only (a retried fn reads the store) and
        # the cache is dropped if the transaction fails (the book is changed in place)
        trusted = self._cache.get(doc_id) if self._exclusive else None
        runs = 0

        def fn(t: StateTransaction) -> tuple[R | None, OrderRejected | None, AccountBook]:
            nonlocal runs
            runs += 1
            doc: Document | None
            quiet: int | None = None
            if trusted is not None and runs == 1:
                doc, book = {"version": trusted.version}, trusted.book
                quiet = trusted.checked_ms
            else:
                doc = t.get(PaperCollections.ACCOUNTS, doc_id)
                book = AccountBook.model_validate(doc) if doc else self._new_book(account)
            existing = t.get(PaperCollections.ORDERS, read_order) if read_order else None
            session = Session(self, book)
            session.sync(now, quiet)
            result: R | None = None
            rejected: OrderRejected | None = None
            try:
                result = op(session, existing)
            except OrderRejected as exc:
                rejected = exc
            if session.changed or doc is None:
                book.version += 1
                t.set(PaperCollections.ACCOUNTS, doc_id, book.model_dump(mode="json"))
                fills = {order_id: seq for seq, order_id in session.fills}
                for rec in session.orders.values():
                    if rec.order.status is not OrderStatus.OPEN:  # a resting one: in its book
                        doc = self._order_doc(account, rec, fills.get(rec.order.id))
                        t.set(PaperCollections.ORDERS, rec.order.id, doc)
            return result, rejected, book

        try:
            result, rejected, book = self.state.transaction(fn)
        except BaseException:
            self._cache.pop(doc_id, None)
            raise
        self._cache[doc_id] = _Cached(book.version, book, now)
        if rejected is not None:
            raise rejected
        return cast(R, result)

    def _order_doc(self, account: str, rec: RestingOrder, fill_seq: int | None) -> dict[str, Any]:
        """The document of an order that left its book (filled, cancelled, rejected),
        with its fill (``fill_seq``: the account's fill sequence number) if it filled."""
        doc: dict[str, Any] = {
            "exchange": self.config.exchange_id,
            "account": account,
            "owner": self._owner(account),
            "client_order_id": rec.order.client_order_id,
            "seq": rec.seq,
            "status": rec.order.status.value,
            "record": rec.model_dump(mode="json"),
        }
        if fill_seq is not None:  # the fill's values are the filled order's
            doc["fill_seq"] = fill_seq
        return doc


def _open_order(book: AccountBook, order_id: str) -> RestingOrder | None:
    """The resting order ``order_id`` of ``book`` (None: not resting there)."""
    for rec in book.open_orders:
        if rec.order.id == order_id:
            return rec
    return None


def _fill_of(order: Document) -> dict[str, Any]:
    """The fill of a filled order's stored ``Order`` (``Session.fill`` sets the order's
    ``filled``, ``average``, ``fee`` and ``updated_ms`` to the fill's amount, price, fee
    and time)."""
    return {
        "order_id": order["id"],
        "client_order_id": order["client_order_id"],
        "account": order["account"],
        "symbol": order["symbol"],
        "side": order["side"],
        "ts_ms": order["updated_ms"],
        "price": order["average"],
        "amount": order["filled"],
        "fee": order["fee"],
    }


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _by_seq(rec: RestingOrder) -> int:
    return rec.seq


__all__ = [
    "AccountBook",
    "FillConfig",
    "PaperCollections",
    "PaperLedger",
    "PaperMarket",
    "RestingOrder",
]
