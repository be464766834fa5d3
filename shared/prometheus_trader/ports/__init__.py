"""Ports: the only way domain and use-cases reach the outside world (SPEC §2).

Each port has an embedded adapter (``adapters.embedded``) and a cloud adapter, and one
contract-test suite (``tests/contract``) runs against every adapter.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from prometheus_trader.domain.market import (
    Candle,
    CandleSeries,
    FundingRate,
    Instrument,
    MarketType,
    OpenInterest,
    Ticker,
    Trade,
)
from prometheus_trader.domain.ticks import TickBatch
from prometheus_trader.domain.trading import Balance, ExchangePosition, Order, OrderRequest

T = TypeVar("T")
Document = dict[str, Any]


# --------------------------------------------------------------------------- Clock
@runtime_checkable
class Clock(Protocol):
    """Source of the current time (simulated in replay and tests)."""

    def now(self) -> datetime:
        """Current UTC time, timezone-aware."""
        ...

    def now_ms(self) -> int:
        """Current UTC time in epoch milliseconds."""
        ...


# ------------------------------------------------------------------------ Exchange
class ExchangeError(Exception):
    """An exchange refused or failed a request; the message never contains secrets."""


class OrderRejected(ExchangeError):
    """The exchange rejected an order (insufficient margin, bad size, ...)."""


@runtime_checkable
class Exchange(Protocol):
    """Market data, balances, orders, positions and the trade stream of one exchange.

    Market data is returned *as of the clock's now* only. Order calls are idempotent on
    ``OrderRequest.client_order_id`` per account: repeating one returns the first order.
    """

    @property
    def exchange_id(self) -> str:
        """Our exchange name, e.g. ``binance``."""
        ...

    def load_markets(self) -> list[Instrument]:
        """All active instruments."""
        ...

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> list[Ticker]:
        """Latest tickers (all instruments when ``symbols`` is None)."""
        ...

    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int = 1000
    ) -> list[Candle]:
        """Closed candles with ``ts_ms >= since_ms``, oldest first, at most ``limit``."""
        ...

    def fetch_funding_rate(self, symbol: str) -> FundingRate | None:
        """Latest funding rate, None for spot or when unknown."""
        ...

    def fetch_open_interest(self, symbol: str) -> OpenInterest | None:
        """Latest open interest, None when unknown."""
        ...

    def fetch_trades(self, symbol: str, since_ms: int, limit: int = 1000) -> list[Trade]:
        """Trades with ``since_ms <= ts_ms <= now``, oldest first."""
        ...

    def poll_trades(self, symbols: Sequence[str], after_ms: int) -> list[Trade]:
        """The trade stream: every trade of ``symbols`` that became visible in
        ``(after_ms, now]``, ordered by (ts_ms, symbol, trade_id); every one has
        ``ts_ms <= now``. A recorded trade is visible at its own time; a trade derived from
        a bar only once the bar has closed (so it can carry an earlier intra-bar stamp).
        Polling with the previous ``now`` as ``after_ms`` misses and repeats nothing."""
        ...

    def fetch_balance(self, account: str) -> Balance:
        """Balance of one account."""
        ...

    def create_order(self, account: str, request: OrderRequest) -> Order:
        """Place an order; idempotent on ``request.client_order_id``."""
        ...

    def fetch_order(self, account: str, order_id: str) -> Order:
        """One order by exchange id."""
        ...

    def fetch_open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        """Resting orders."""
        ...

    def fetch_open_orders_on(self, account: str, symbols: Collection[str]) -> list[Order]:
        """The resting orders on ``symbols`` (none: no request), as ``fetch_open_orders``
        orders them. The adapter reads them with whichever costs the venue less: one
        request per symbol or one for the whole account (Binance weighs an account-wide
        open-orders listing as 40 per-symbol ones)."""
        ...

    def cancel_order(self, account: str, order_id: str) -> Order:
        """Cancel a resting order (no-op on a filled or cancelled one)."""
        ...

    def fetch_positions(self, account: str) -> list[ExchangePosition]:
        """Open net positions."""
        ...

    # batch calls (a fan-out books many users' orders at once; issue 12)
    def create_orders(
        self, requests: Sequence[tuple[str, OrderRequest]]
    ) -> list[Order | OrderRejected]:
        """``create_order(account, request)`` for each item, in order, with the same
        client-order-id idempotency; a refused order's ``OrderRejected`` is returned in
        its place. Any other error (transient) raises for the whole call: some leading
        items may have been placed, so repeat the whole call (idempotent)."""
        ...

    def fetch_balances(self, accounts: Sequence[str]) -> dict[str, Balance]:
        """``fetch_balance`` of each account (each once), by account."""
        ...


# ---------------------------------------------------------------------- TickSource
@runtime_checkable
class TickSource(Protocol):
    """The exit monitor's trade stream as per-symbol columns (no object per trade).

    The same trades as ``Exchange.poll_trades(symbols, after_ms)``, grouped by symbol,
    each batch in the market's trade order (a trade older than the window's newest is
    kept at the newest time). The live websocket stream implements it; without one the
    monitor groups the exchange's ``poll_trades`` into batches itself.
    """

    def poll_ticks(self, symbols: Sequence[str], after_ms: int) -> Mapping[str, TickBatch]:
        """New trades of ``symbols`` since the last poll (or after ``after_ms``)."""
        ...


# ---------------------------------------------------------------------- StateStore
FilterOp = Literal["==", "!=", "<", "<=", ">", ">=", "in"]


@dataclass(frozen=True)
class Filter:
    """A field condition in a query (Firestore semantics; dotted paths allowed)."""

    field: str
    op: FilterOp
    value: Any


class AlreadyExists(Exception):
    """create() on a document id that exists."""


class StateTransaction(Protocol):
    """Reads and writes inside one atomic transaction (reads before writes)."""

    def get(self, collection: str, doc_id: str) -> Document | None:
        """Read a document."""
        ...

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create; the transaction fails with AlreadyExists if it exists."""
        ...

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create or replace."""
        ...

    def update(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        """Merge top-level fields into an existing document."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """Documents by (collection, id), with transactions and create-if-absent.

    Documents are JSON-compatible dicts (use ``model_dump(mode="json")``).
    """

    def get(self, collection: str, doc_id: str) -> Document | None:
        """Read a document or None."""
        ...

    def create(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> bool:
        """Create if absent. True if created, False if it already existed (untouched)."""
        ...

    def set(self, collection: str, doc_id: str, data: Mapping[str, Any]) -> None:
        """Create or replace."""
        ...

    def update(self, collection: str, doc_id: str, changes: Mapping[str, Any]) -> None:
        """Merge top-level fields into an existing document (KeyError if missing)."""
        ...

    def delete(self, collection: str, doc_id: str) -> None:
        """Delete (no-op if missing)."""
        ...

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Document]:
        """Documents matching every filter; sorted by ``order_by`` then id."""
        ...

    def transaction(self, fn: Callable[[StateTransaction], T]) -> T:
        """Run ``fn`` atomically (it may be retried on contention: keep it pure)."""
        ...

    # --- batches (hfx: the batched executor reads and writes many users at once) ---
    def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The documents of ``doc_ids`` that exist, by id (absent ids are left out)."""
        ...

    def create_many(
        self, collection: str, docs: Mapping[str, Mapping[str, Any]]
    ) -> builtins.set[str]:
        """Create each document if absent (each on its own, not all-or-nothing); the ids
        created. An existing document is left untouched, as ``create`` does."""
        ...

    def set_many(self, collection: str, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Create or replace each document (each on its own, not all-or-nothing)."""
        ...


# ---------------------------------------------------------------------- ChangeFeed
@dataclass(frozen=True)
class DocumentChange:
    """One document entering, changing in or leaving a watched query's result."""

    doc_id: str
    data: Document | None = None  # None: it left the result (deleted or no longer matches)


@dataclass(frozen=True)
class WatchBatch:
    """What a watch saw since the previous poll, oldest first."""

    complete: bool  # True: start from an empty result, then apply ``changes`` in order
    changes: list[DocumentChange]


class WatchLost(Exception):
    """The change stream broke (listener closed, history pruned): close it, watch again."""


class Watch(Protocol):
    """A live query: the documents matching it, kept fresh from the store's change stream."""

    def poll(self) -> WatchBatch | None:
        """Changes since the previous poll; the first batch is complete. None while the
        first complete result has not arrived yet (a remote listener). Raises WatchLost."""
        ...

    def close(self) -> None:
        """Stop following (idempotent)."""
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """The state store's change stream (Firestore listeners; the embedded store's change
    log). Writes by every process and every store instance are seen, not only our own."""

    def watch(self, collection: str, filters: Sequence[Filter] = ()) -> Watch:
        """Follow the documents of ``collection`` matching every filter."""
        ...


# ----------------------------------------------------------------------------- Bus
@dataclass(frozen=True)
class BusMessage:
    """A delivered message. ``dedupe_key`` is our own id (publisher retries make new
    ``message_id`` values); ``delivery_attempt`` starts at 1."""

    topic: str
    message_id: str
    data: Document
    attributes: Mapping[str, str] = field(default_factory=dict)
    ordering_key: str = ""
    delivery_attempt: int = 1

    @property
    def dedupe_key(self) -> str:
        """Our deterministic id for this message, carried as an attribute."""
        return self.attributes.get("dedupe_key", self.message_id)


Handler = Callable[[BusMessage], None]


def publish_attributes(
    topic: str, dedupe_key: str, attributes: Mapping[str, str] | None
) -> dict[str, str]:
    """The attributes a Bus adapter sends: the caller's plus ``dedupe_key``, validated the
    same way by every adapter (non-empty topic and key, string to string)."""
    if not topic:
        raise ValueError("topic must not be empty")
    if not dedupe_key:
        raise ValueError("dedupe_key must not be empty")
    attrs = dict(attributes or {})
    attrs["dedupe_key"] = dedupe_key
    for name, value in attrs.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"attribute {name!r} must map a string to a string")
    return attrs


@runtime_checkable
class Bus(Protocol):
    """Topics with at-least-once delivery, ordering keys and dead letters.

    A handler that raises gets the message again, up to the subscription's maximum
    delivery attempts; then the message goes to the dead-letter topic.
    """

    def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        dedupe_key: str,
        ordering_key: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Publish; returns the transport message id."""
        ...

    def subscribe(self, topic: str, subscription: str, handler: Handler) -> None:
        """Attach a handler (one subscription = one independent copy of the stream)."""
        ...


# ----------------------------------------------------------------------- BlobStore
@runtime_checkable
class BlobStore(Protocol):
    """Objects by key (``reports/u1/2025-05-20.html``)."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store an object; returns a URI for it."""
        ...

    def get(self, key: str) -> bytes:
        """Read an object (KeyError if missing)."""
        ...

    def exists(self, key: str) -> bool:
        """True if the object exists."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...

    def append_line(self, key: str, line: str) -> None:
        """Append one line to an append-only log object (audit log)."""
        ...

    def signed_url(self, key: str, expires_in_s: int = 900) -> str:
        """A link that reads the object without credentials until it expires (KeyError if
        the object is missing). Embedded: a ``file://`` URI (the process's own disk)."""
        ...


# --------------------------------------------------------------------- MarketStore
@dataclass(frozen=True)
class SeriesKey:
    """Identifies one instrument's data in the market store."""

    exchange: str
    market_type: MarketType
    symbol: str


@runtime_checkable
class MarketStore(Protocol):
    """Time-series market data. Writes are idempotent: re-writing a row adds nothing."""

    def write_candles(self, candles: Sequence[Candle]) -> int:
        """Store candles; returns how many were new."""
        ...

    def write_trades(self, trades: Sequence[Trade]) -> int:
        """Store trades; returns how many were new."""
        ...

    def write_funding(self, rates: Sequence[FundingRate]) -> int:
        """Store funding rates; returns how many were new."""
        ...

    def write_open_interest(self, points: Sequence[OpenInterest]) -> int:
        """Store open interest points; returns how many were new."""
        ...

    def write_tickers(self, tickers: Sequence[Ticker]) -> int:
        """Store ticker snapshots; returns how many were new."""
        ...

    def series_keys(self) -> list[SeriesKey]:
        """Every instrument with stored candles, sorted."""
        ...

    def candles(self, key: SeriesKey, timeframe: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Candles with ``start_ms <= ts_ms`` and close time ``<= end_ms``, oldest first."""
        ...

    def candles_many(
        self, keys: Sequence[SeriesKey], timeframe: str, start_ms: int, end_ms: int
    ) -> dict[SeriesKey, CandleSeries]:
        """``candles`` for several instruments in one query (empty series where none)."""
        ...

    def last_candle_ms(self, key: SeriesKey, timeframe: str) -> int | None:
        """Open time of the newest stored candle, None if none."""
        ...

    def candle_range(self, key: SeriesKey, timeframe: str) -> tuple[int, int] | None:
        """(first, last) candle open times stored, None if none."""
        ...

    def trades(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[Trade]:
        """Trades with ``start_ms <= ts_ms <= end_ms``, ordered by (ts_ms, trade_id)."""
        ...

    def funding(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[FundingRate]:
        """Funding rates in [start_ms, end_ms]."""
        ...

    def open_interest(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[OpenInterest]:
        """Open interest points in [start_ms, end_ms]."""
        ...

    def funding_many(
        self, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[FundingRate]]:
        """``funding`` for several instruments in one query."""
        ...

    def open_interest_many(
        self, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[OpenInterest]]:
        """``open_interest`` for several instruments in one query."""
        ...

    def latest_tickers(self, exchange: str, as_of_ms: int) -> list[Ticker]:
        """The newest ticker per symbol with ``ts_ms <= as_of_ms``."""
        ...

    def flush(self) -> None:
        """Persist buffered writes (partitioned Parquet)."""
        ...


# ------------------------------------------------------------------------ Notifier
@dataclass(frozen=True)
class Notification:
    """A message for a user (or the operator when ``user_id`` is None)."""

    event_type: str
    severity: str
    title: str
    body: Mapping[str, Any]
    user_id: str | None = None


@runtime_checkable
class Notifier(Protocol):
    """Delivers notifications (webhook, email, console)."""

    def send(self, notification: Notification) -> None:
        """Deliver one notification (raises on a permanent failure)."""
        ...


# --------------------------------------------------------------------- SecretStore
class SecretNotFound(KeyError):
    """No such secret."""


@runtime_checkable
class SecretStore(Protocol):
    """Per-user secrets such as exchange keys. Values never leave through logs or errors."""

    def put_secret(self, name: str, value: str) -> None:
        """Create or replace a secret."""
        ...

    def get_secret(self, name: str) -> str:
        """Read a secret (SecretNotFound if missing)."""
        ...

    def delete_secret(self, name: str) -> None:
        """Delete a secret (no-op if missing)."""
        ...

    def list_secrets(self, prefix: str = "") -> list[str]:
        """Names (never values) under ``prefix``."""
        ...


__all__ = [
    "AlreadyExists",
    "BlobStore",
    "Bus",
    "BusMessage",
    "ChangeFeed",
    "Clock",
    "Document",
    "DocumentChange",
    "Exchange",
    "ExchangeError",
    "Filter",
    "Handler",
    "MarketStore",
    "Notification",
    "Notifier",
    "OrderRejected",
    "SecretNotFound",
    "SecretStore",
    "SeriesKey",
    "StateStore",
    "StateTransaction",
    "TickSource",
    "Watch",
    "WatchBatch",
    "WatchLost",
    "publish_attributes",
]
