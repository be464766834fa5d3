"""The live trade stream for the exit monitor, on ccxt's websocket API (``ccxt.pro``).

``CcxtTradeStream`` keeps one ``watch_trades_for_symbols`` subscription for the symbols
the monitor asks about (the symbols with an open position), on an asyncio loop in a
background thread, and hands the monitor what arrived since its last poll. It is the
``poll_trades`` half of the ``Exchange`` port (``TradeSource``), so the monitor does not
know whether ticks come from a websocket, REST polling or a replay.

Rules (see ``docs/streaming.md``):
- the subscription follows the asked symbols: a symbol added is subscribed before the
  next poll returns (the watch is restarted with the new set);
- a dropped connection reconnects with exponential backoff (``backoff_s``), reset by the
  first message after a reconnect;
- a symbol with no message for ``stale_after_s`` is *stale*: ``on_stale`` is called once
  per stale episode (the worker turns it into an alert), the connection is restarted, and
  meanwhile that symbol's trades come from REST (``rest.fetch_trades``) if a REST source
  is given. The exchange-side stop placed with every entry stays in place whatever the
  feed does: a stale feed never cancels or moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import eq, itemgetter
from typing import Any, Protocol

import numpy as np

from prometheus_trader.domain.market import MarketType, Side, Trade
from prometheus_trader.domain.ticks import TickBatch, batches_from_trades, merge_batches
from prometheus_trader.domain.trade_window import TradeWindow

log = logging.getLogger(__name__)

_RECENT_IDS = 4096  # per symbol: enough to drop a replayed overlap after a reconnect


class TradeSource(Protocol):
    """REST trades of one symbol (the ``Exchange`` port's ``fetch_trades``)."""

    def fetch_trades(self, symbol: str, since_ms: int, limit: int = 1000) -> list[Trade]:
        """Trades with ``ts_ms >= since_ms``, oldest first."""
        ...


@dataclass
class FeedStatus:
    """What the stream knows about one symbol's feed."""

    symbol: str
    subscribed_at: float
    last_message_at: float | None = None
    last_trade_ms: int | None = None
    stale: bool = False
    stale_episodes: int = 0
    rest_polls: int = 0


class CcxtTradeStream:
    """Streams trades of the followed symbols; ``poll_trades`` drains what arrived.

    ``client_factory`` builds a *new* ``ccxt.pro`` exchange each (re)connect (so a dead
    connection's state never leaks into the next). Thread-safe: the monitor thread calls
    ``poll_trades``/``follow``; the loop thread fills the buffer.
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        *,
        exchange_id: str,
        market_type: MarketType = MarketType.PERP,
        rest: TradeSource | None = None,
        stale_after_s: float = 10.0,
        on_stale: Callable[[str, float], None] | None = None,
        backoff_s: tuple[float, float] = (0.25, 30.0),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = client_factory
        self._exchange_id = exchange_id
        self._market_type = market_type
        self._rest = rest
        self._stale_after = stale_after_s
        self._on_stale = on_stale
        self._backoff = backoff_s
        self._now = monotonic
        self._lock = threading.Lock()
        self._wanted: frozenset[str] = frozenset()
        # what arrived since the last poll: ccxt's unified dicts per symbol (the stream),
        # domain trades (the REST fallback)
        self._buffer: dict[str, list[Mapping[str, Any]]] = {}
        self._rest_buffer: list[Trade] = []
        self._recent: dict[str, tuple[deque[str], set[str]]] = {}
        self._status: dict[str, FeedStatus] = {}
        self.connects = 0
        self.errors = 0
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._changed: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run_loop, name="trade-stream", daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(10)

    # ------------------------------------------------------------------ public
    def follow(self, symbols: Iterable[str]) -> None:
        """Stream exactly these symbols (the monitor's open-position symbols)."""
        wanted = frozenset(symbols)
        with self._lock:
            if wanted == self._wanted:
                return
            now = self._now()
            for symbol in wanted - self._wanted:
                self._status[symbol] = FeedStatus(symbol=symbol, subscribed_at=now)
            for symbol in self._wanted - wanted:
                self._status.pop(symbol, None)
            self._wanted = wanted
        self._loop.call_soon_threadsafe(self._signal_change)

    def poll_ticks(self, symbols: Sequence[str], after_ms: int) -> dict[str, TickBatch]:
        """Follow ``symbols`` and return every trade of them that arrived since the last
        poll, per symbol as columns in time order (the ``TickSource`` port: the monitor's
        fast path, no ``Trade`` per tick). Stale symbols are filled from REST (from their
        last seen trade, or ``after_ms``)."""
        streamed, rest = self._drain(symbols, after_ms)
        out = buffered_batches(streamed)
        for symbol, batch in batches_from_trades(rest, checked=True).items():
            mine = out.get(symbol)
            out[symbol] = batch if mine is None else merge_batches(mine, batch)
        return out

    def poll_trades(self, symbols: Sequence[str], after_ms: int) -> list[Trade]:
        """As :meth:`poll_ticks`, as domain trades ordered by (ts_ms, symbol, trade_id)."""
        streamed, rest = self._drain(symbols, after_ms)
        return sorted(
            [*(self._to_trade(r) for rows in streamed.values() for r in rows), *rest],
            key=lambda t: (t.ts_ms, t.symbol, t.trade_id),
        )

    def accept_unified(self, raws: Sequence[Mapping[str, Any]]) -> int:
        """Buffer ccxt unified trades for the next poll, dropping ids seen recently (a
        reconnect replays an overlap); returns how many were new. The websocket loop
        calls it with each ``watch_trades_for_symbols`` result."""
        return self._accept_unified(raws, self._now())

    def _drain(
        self, symbols: Sequence[str], after_ms: int
    ) -> tuple[dict[str, list[Mapping[str, Any]]], list[Trade]]:
        """Follow ``symbols``, fill stale ones from REST, and take what arrived for them."""
        self.follow(symbols)
        for symbol in self._stale_symbols():
            self._poll_rest(symbol, after_ms)
        with self._lock:
            buffered, self._buffer = self._buffer, {}
            rest, self._rest_buffer = self._rest_buffer, []
        wanted = set(symbols)
        streamed = {s: buffered[s] for s in sorted(wanted & buffered.keys())}
        rest.sort(key=lambda t: (t.ts_ms, t.trade_id))
        return streamed, [t for t in rest if t.symbol in wanted]

    def status(self) -> Mapping[str, FeedStatus]:
        """Per followed symbol: last message, stale flag, REST fallbacks (a copy)."""
        self._check_staleness()
        with self._lock:
            return {s: FeedStatus(**vars(st)) for s, st in self._status.items()}

    def close(self) -> None:
        """Stop streaming and join the loop thread."""
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon_threadsafe(self._signal_change)
        self._thread.join(15)

    def __enter__(self) -> CcxtTradeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- staleness
    def _stale_symbols(self) -> list[str]:
        self._check_staleness()
        with self._lock:
            return sorted(s for s, st in self._status.items() if st.stale)

    def _check_staleness(self) -> list[str]:
        """Mark symbols stale; returns those that just became stale (alerted once)."""
        now = self._now()
        newly: list[tuple[str, float]] = []
        with self._lock:
            for symbol, st in self._status.items():
                quiet_for = now - (st.last_message_at or st.subscribed_at)
                if quiet_for > self._stale_after and not st.stale:
                    st.stale = True
                    st.stale_episodes += 1
                    newly.append((symbol, quiet_for))
        for symbol, quiet_for in newly:
            log.warning("trade feed stale: %s silent for %.1f s", symbol, quiet_for)
            if self._on_stale is not None:
                self._on_stale(symbol, quiet_for)
        return [s for s, _ in newly]

    def _poll_rest(self, symbol: str, after_ms: int) -> None:
        if self._rest is None:
            return
        with self._lock:
            st = self._status.get(symbol)
            since = (st.last_trade_ms + 1) if st and st.last_trade_ms is not None else after_ms
        try:
            trades = self._rest.fetch_trades(symbol, since_ms=since)
        except Exception as exc:  # the fallback must not break the monitor's cycle
            log.warning("REST trade poll failed for %s: %s", symbol, type(exc).__name__)
            return
        self._accept(trades, from_stream=False)
        with self._lock:
            if symbol in self._status:
                self._status[symbol].rest_polls += 1

    # ------------------------------------------------------------- ingestion
    def _accept(self, trades: Iterable[Trade], *, from_stream: bool) -> int:
        """Buffer REST trades (domain ``Trade``s), dropping ids seen recently."""
        taken = 0
        with self._lock:
            for trade in trades:
                if not self._remember(trade.symbol, [trade.trade_id]):
                    continue
                self._rest_buffer.append(trade)
                taken += 1
                st = self._status.get(trade.symbol)
                if st is not None:
                    st.last_trade_ms = max(st.last_trade_ms or 0, trade.ts_ms)
        return taken

    def _accept_unified(self, raws: Sequence[Mapping[str, Any]], now: float) -> int:
        """Buffer streamed unified trades per symbol (one step per symbol, not per tick)."""
        if not raws:
            return 0
        symbols = list(map(_SYMBOL, raws))
        first = symbols[0]
        if symbols.count(first) == len(symbols):  # a ccxt watch result is one market
            groups: dict[str, list[Mapping[str, Any]]] = {first: list(raws)}
        else:
            groups = {}
            for raw, symbol in zip(raws, symbols, strict=True):
                groups.setdefault(symbol, []).append(raw)
        taken = 0
        with self._lock:
            for symbol, rows in groups.items():
                fresh = self._remember(symbol, list(map(_ID, rows)))
                if isinstance(fresh, list):
                    rows = [r for r, new in zip(rows, fresh, strict=True) if new]
                    if not rows:
                        continue
                self._buffer.setdefault(symbol, []).extend(rows)
                taken += len(rows)
                st = self._status.get(symbol)
                if st is not None:
                    newest = max(map(_TIMESTAMP, rows))
                    st.last_trade_ms = max(st.last_trade_ms or 0, newest)
                    st.last_message_at = now
                    st.stale = False
        return taken

    def _remember(self, symbol: str, trade_ids: list[str]) -> bool | list[bool]:
        """Record ids as seen (under the lock): True if all were new, else a flag per id
        (the first of a repeated id is new). Only the last ``_RECENT_IDS`` are kept."""
        ids, seen = self._recent.setdefault(symbol, (deque(), set()))
        batch = set(trade_ids)
        if len(batch) == len(trade_ids) and seen.isdisjoint(batch):
            seen |= batch
            ids.extend(trade_ids)
            flags: bool | list[bool] = True
        else:
            flags = []
            for tid in trade_ids:
                new = tid not in seen
                flags.append(new)
                if new:
                    seen.add(tid)
                    ids.append(tid)
            if all(flags):
                flags = True
        while len(ids) > _RECENT_IDS:
            seen.discard(ids.popleft())
        return flags

    def _to_trade(self, raw: Mapping[str, Any]) -> Trade:
        """A ccxt unified trade as our domain trade (the aggressor side ccxt parsed)."""
        return Trade.model_construct(
            exchange=self._exchange_id,
            market_type=self._market_type,
            symbol=str(raw["symbol"]),
            ts_ms=int(raw["timestamp"]),
            trade_id=str(raw["id"]),
            price=float(raw["price"]),
            amount=float(raw["amount"]),
            side=Side.BUY if raw["side"] == "buy" else Side.SELL,
            source="trade",
        )

    # ------------------------------------------------------------------- loop
    def _signal_change(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._changed = asyncio.Event()
        self._started.set()
        try:
            self._loop.run_until_complete(self._supervise())
        finally:
            self._loop.close()

    async def _supervise(self) -> None:
        """(Re)connect for the wanted set; restart on a set change, an error or staleness."""
        assert self._changed is not None
        delay = self._backoff[0]
        while not self._closing:
            with self._lock:
                wanted = self._wanted
            if not wanted:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._changed.clear()
            client = self._factory()
            self.connects += 1
            received = False
            try:
                received = await self._watch(client, sorted(wanted))
            except Exception as exc:  # network errors, closed sockets: reconnect
                self.errors += 1
                log.warning("trade stream error (%s); reconnecting", type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await client.close()
            if self._closing:
                return
            with self._lock:
                changed_set = self._wanted != wanted
            if received or changed_set:
                delay = self._backoff[0]
                if changed_set:
                    continue
            await self._sleep_or_change(delay)
            delay = min(delay * 2, self._backoff[1])

    async def _watch(self, client: Any, symbols: list[str]) -> bool:
        """Watch until the wanted set changes, the feed goes stale or an error; returns
        whether any trade arrived on this connection."""
        assert self._changed is not None
        received = False
        last_rx = self._now()  # this connection's last message (or its start)
        watch: asyncio.Task[Any] | None = None
        change = asyncio.ensure_future(self._changed.wait())
        try:
            while not self._closing:
                if watch is None:
                    watch = asyncio.ensure_future(client.watch_trades_for_symbols(symbols))
                done, _ = await asyncio.wait(
                    {watch, change}, timeout=0.25, return_when=asyncio.FIRST_COMPLETED
                )
                if change in done:
                    return received
                if watch in done:
                    raw = watch.result()  # raises on a dropped connection
                    watch = None
                    last_rx = self._now()
                    if self._accept_unified(raw, last_rx):
                        received = True
                self._check_staleness()
                if self._now() - last_rx > self._stale_after:
                    return received  # reconnect: a silent socket may never error
            return received
        finally:
            for task in (watch, change):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    async def _sleep_or_change(self, seconds: float) -> None:
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=seconds)


def binance_usdm_client_factory(
    *, ws_url: str | None = None, rest_url: str | None = None, demo: bool = False
) -> Callable[[], Any]:
    """Builds ``ccxt.pro.binanceusdm`` clients for :class:`CcxtTradeStream`.

    ``ws_url``/``rest_url`` point ccxt at another host (the loopback stand-in in tests);
    ``demo`` selects Binance's demo-trading endpoints. Public streams need no keys.
    """
    import ccxt.pro  # the adapter family's only imports of ccxt (here and below)

    def build() -> Any:
        client = ccxt.pro.binanceusdm({"options": {"fetchMarkets": ["linear"]}})
        if demo:
            client.enable_demo_trading(True)
        if ws_url is not None:
            client.urls["api"]["ws"]["linear"] = ws_url
        if rest_url is not None:
            client.urls["api"]["fapiPublic"] = rest_url
        return client

    return build


def bybit_linear_client_factory(
    *, ws_url: str | None = None, rest_url: str | None = None, demo: bool = False
) -> Callable[[], Any]:
    """Builds ``ccxt.pro.bybit`` clients on linear (USDT) perpetuals for
    :class:`CcxtTradeStream`.

    ccxt's ``watch_trades_for_symbols`` subscribes ``publicTrade.<id>`` topics on
    ``urls['api']['ws']['public']['linear']``; its markets come from
    ``/v5/market/instruments-info?category=linear`` on ``urls['api']['public']``. ``ws_url``
    and ``rest_url`` replace those two (the loopback stand-in in tests). ``demo``: ccxt's
    ``enable_demo_trading`` (Bybit's demo trading serves the live public streams; its REST
    host is ``api-demo.bybit.com``). Public streams need no keys.
    """
    import ccxt.pro

    def build() -> Any:
        client = ccxt.pro.bybit(
            {
                "options": {
                    "defaultType": "swap",
                    "defaultSubType": "linear",
                    "fetchMarkets": {"types": ["linear"]},
                }
            }
        )
        if demo:
            client.enable_demo_trading(True)  # swaps urls['api'] for urls['demotrading']
        if ws_url is not None:
            client.urls["api"]["ws"]["public"]["linear"] = ws_url
        if rest_url is not None:
            client.urls["api"]["public"] = rest_url
        return client

    return build


__all__ = [
    "CcxtTradeStream",
    "FeedStatus",
    "TradeSource",
    "add_unified_trades",
    "binance_usdm_client_factory",
    "buffered_batches",
    "bybit_linear_client_factory",
    "unified_batches",
    "unified_columns",
]


def unified_batches(raws: Sequence[Mapping[str, Any]]) -> dict[str, TickBatch]:
    """ccxt unified trades as per-symbol column batches, each symbol's in the given order.

    The fast path of tick ingestion: one C-level pass reads the six fields of every dict,
    then numpy builds the columns and splits them by symbol (no object per tick).
    """
    if not raws:
        return {}
    symbols = list(map(_SYMBOL, raws))
    first = symbols[0]
    n = len(symbols)
    if symbols.count(first) == n:  # one symbol (a ccxt watch result is one market)
        return {first: unified_columns(first, raws)}
    stamps, prices, amounts, sides, ids = zip(*map(_FIELDS, raws), strict=True)
    ts = np.array(stamps, dtype=np.int64)
    price = np.array(prices, dtype=np.float64)
    amount = np.array(amounts, dtype=np.float64)
    is_buy = np.array(list(map(eq, sides, repeat("buy", n))), dtype=np.bool_)
    index = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    codes = np.fromiter(map(index.__getitem__, symbols), dtype=np.intp, count=n)
    order = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(index))).tolist()
    ts, price, amount, is_buy = ts[order], price[order], amount[order], is_buy[order]
    id_list = np.array(ids, dtype=object)[order].tolist()
    out: dict[str, TickBatch] = {}
    lo = 0
    for symbol, hi in zip(index, ends, strict=True):
        out[symbol] = TickBatch(
            symbol, ts[lo:hi], price[lo:hi], amount[lo:hi], is_buy[lo:hi], id_list[lo:hi]
        )
        lo = hi
    return out


def unified_columns(
    symbol: str, rows: Sequence[Mapping[str, Any]], *, checked: bool = False
) -> TickBatch:
    """One symbol's ccxt unified trades as a batch, in the given order (one C-level pass
    per column straight into a typed array). ``checked``: repeats already dropped."""
    n = len(rows)
    return TickBatch(
        symbol,
        np.fromiter(map(_TIMESTAMP, rows), dtype=np.int64, count=n),
        np.fromiter(map(_PRICE, rows), dtype=np.float64, count=n),
        np.fromiter(map(_AMOUNT, rows), dtype=np.float64, count=n),
        # ccxt's side is "buy"/"sell" (the aggressor); anything else counts as a sell
        np.fromiter([r["side"] == "buy" for r in rows], dtype=np.bool_, count=n),
        [r["id"] for r in rows],
        None,
        checked,
    )


def buffered_batches(streamed: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, TickBatch]:
    """What ``poll_ticks`` hands the monitor for the stream's per-symbol buffers: each
    symbol's unified trades as a batch, in arrival order (one market's websocket stream
    is in trade order; a trade older than the window's newest would be kept at the
    newest time by the window, its documented rule). The batches are ``checked``: the
    hand-over (``accept_unified``) already dropped the ids the stream saw recently."""
    return {s: unified_columns(s, rows, checked=True) for s, rows in streamed.items() if rows}


def add_unified_trades(windows: dict[str, TradeWindow], raws: Sequence[Mapping[str, Any]]) -> int:
    """Feed ccxt unified trades straight into per-symbol windows; returns how many were new
    (the window's content is the same as ``window.add`` on the equivalent ``Trade``s)."""
    added = 0
    for symbol, batch in unified_batches(raws).items():
        window = windows.get(symbol)
        if window is None:
            window = windows[symbol] = TradeWindow(symbol)
        added += window.add_batch(batch)
    return added


_FIELDS = itemgetter("timestamp", "price", "amount", "side", "id")
_SYMBOL, _TIMESTAMP, _PRICE, _AMOUNT, _ID = (
    itemgetter(k) for k in ("symbol", "timestamp", "price", "amount", "id")
)
