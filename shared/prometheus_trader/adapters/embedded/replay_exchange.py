"""Embedded ``Exchange``: recorded market data on a simulated clock, with paper accounts.

Market data is served strictly *as of* ``clock.now_ms()`` (SPEC §1 embedded mode, §9):

* candles: only closed bars (``ts_ms + timeframe <= now``); timeframes the store lacks are
  rolled up from 1m bars;
* tickers: built from the last closed 1m bar (``last`` = close, bid/ask = last ∓ half a
  price step, 24h quote volume = Σ close×volume over the last 24h of bars);
* funding / open interest: the newest point at or before now;
* trades: recorded trades where the store has them for a minute (``source="trade"``,
  visible from their own ``ts_ms``); otherwise a price path derived from the 1m bar
  (``source="bar"``): open at +0 s, first extreme at +20 s, second extreme at +40 s, close
  at +59 s (bullish bar O→L→H→C, bearish O→H→L→C), volume/4 each, side by tick rule.

**The one-minute delay.** A derived path uses the bar's high, low and close, which are
known only when the bar closes, so the four trades of bar ``b`` become *visible* at
``b + 60 s`` although they are stamped at their intra-bar times. ``fetch_trades`` returns
visible trades with ``since_ms <= ts_ms <= now``. ``poll_trades(symbols, after_ms)`` is a
stream cursor: it returns the trades that *became visible* in ``(after_ms, now]``; for
recorded trades that is exactly ``after_ms < ts_ms <= now``, for derived ones a poll at
``b + 60 s`` also returns the bar's trades stamped before ``after_ms``, so a consumer
polling every 2 s with ``after_ms`` = its previous now never misses a trade. Every
returned trade has ``ts_ms <= now``. Trade reads reach back one day at most.

**Coarse stores.** With ``bar_timeframe`` (3m/5m/15m/1h, for a store holding no 1m
candles) every "1m bar" above is a bar of that timeframe: tickers, precision and the derived
path come from those bars, the path's offsets spread over the bar (``bar_path_offsets``)
and it becomes visible at the bar's close; candles finer than it are not served.

Speed: bars are cached per UTC day for all symbols (one ``candles_many`` query), the trade
stream per symbol and UTC hour, funding per symbol and open interest per symbol and day, so
the 2-second ``poll_trades`` of the exit monitor never queries the store once warm.

Paper trading (SPEC §5 paper executor) is the ``PaperLedger`` (``adapters/paper``): the
accounts persist in a ``StateStore`` (the run's SQLite file, Firestore deployed; a private
``MemoryStateStore`` when none is given), so every process using the same store shares
them. Accounts are created on first use with ``starting_balance`` USDT, one-way net
positions, isolated per-position margin (``|amount| × entry / leverage``). Orders are
idempotent on ``client_order_id`` per account. Market orders fill at the last trade
visible at ``now + latency_ms`` with ``slippage_bps`` against us and the taker fee; the
fill is stamped ``now + latency_ms``. Limit, stop-market and take-profit-market orders
rest and are processed lazily when their account is next read or written: the visible
trades of symbols with resting orders are walked from the account's cursor to now in
``(ts_ms, symbol, trade_id)`` order, orders in creation order, so the outcome is
deterministic. A resting order sees only trades stamped after ``now + latency_ms`` of its
placement. When a position goes flat, the account's other resting reduce-only orders on
that symbol are cancelled (OCO-like). The fill math is in ``domain.paper``.

Simplifications (documented, not hidden): no funding payments, no liquidation, fill prices
are not rounded to the price step, resting orders reserve no margin (margin is checked when
placed and again when they fill), one trade fills a whole order (no partial fills), and a
resting order triggered between ``now`` and ``now + latency_ms`` of a market order is
processed on the next call (its fill may be listed after the market fill). The source data
must not change while the exchange caches it, and the clock must not run backwards.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar, cast

from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.replay_data import (
    DAY_MS,
    HOUR_MS,
    TRADE_HISTORY_MS,
    ReplayMarketData,
    _candles,
    _step_decimals,
    _TradeChunk,
    bar_path_offsets,
)
from prometheus_trader.adapters.paper.ledger import FillConfig, PaperLedger
from prometheus_trader.domain.market import (
    TIMEFRAME_MS,
    Candle,
    CandleSeries,
    FundingRate,
    Instrument,
    MarketType,
    OpenInterest,
    Ticker,
    Trade,
)
from prometheus_trader.domain.trading import (
    Balance,
    ExchangePosition,
    Fill,
    Order,
    OrderRequest,
)
from prometheus_trader.ports import (
    Clock,
    ExchangeError,
    MarketStore,
    OrderRejected,
    SeriesKey,
    StateStore,
)

_F = TypeVar("_F", bound=Callable[..., Any])


def _serialized(method: _F) -> _F:
    """Run the method under the exchange's lock: like a real venue, the replay exchange
    serves concurrent clients (racing executors, the worker) one request at a time."""

    @functools.wraps(method)
    def locked(self: ReplayExchange, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, locked)


class ReplayExchange(ReplayMarketData):
    """``Exchange`` over a ``MarketStore`` replayed on a ``Clock``, with paper accounts."""

    def __init__(
        self,
        store: MarketStore,
        clock: Clock,
        *,
        exchange_id: str = "binance",
        market_type: MarketType = MarketType.PERP,
        taker_fee: float = 0.0005,
        maker_fee: float = 0.0002,
        slippage_bps: float = 2.0,
        latency_ms: int = 250,
        starting_balance: float = 10_000.0,
        min_notional: float = 5.0,
        max_leverage: float = 20.0,
        instruments: Sequence[Instrument] | None = None,
        ledger: StateStore | None = None,
        ledger_exclusive: bool = False,
        bar_timeframe: str = "1m",
    ) -> None:
        if bar_timeframe not in TIMEFRAME_MS or TIMEFRAME_MS[bar_timeframe] > HOUR_MS:
            raise ValueError(f"cannot replay {bar_timeframe!r} bars (1m..1h)")
        if taker_fee < 0 or maker_fee < 0 or slippage_bps < 0 or latency_ms < 0:
            raise ValueError("fees, slippage and latency must not be negative")
        self._lock = threading.RLock()
        # the finest bars replayed (1m; a store of only coarser candles replays those): the
        # derived price path, tickers and precision come from them
        self._bar_tf = bar_timeframe
        self._bar_ms = TIMEFRAME_MS[bar_timeframe]
        self._path_offsets = bar_path_offsets(self._bar_ms)
        self._store = store
        self._clock = clock
        self._exchange_id = exchange_id
        self._market_type = market_type
        self._taker_fee = taker_fee
        self._maker_fee = maker_fee
        self._slippage = slippage_bps / 10_000
        self._latency_ms = latency_ms
        self._starting_balance = starting_balance
        self._min_notional = min_notional
        self._max_leverage = max_leverage if market_type is MarketType.PERP else 1.0
        self._instruments: dict[str, Instrument] | None = (
            None if instruments is None else {i.symbol: i for i in instruments}
        )
        self._keys: dict[str, SeriesKey] | None = None
        self._bar_days: OrderedDict[int, dict[str, CandleSeries]] = OrderedDict()
        self._trade_chunks: OrderedDict[tuple[str, int], _TradeChunk] = OrderedDict()
        self._funding: dict[str, tuple[list[int], list[FundingRate]]] = {}
        self._first_bar: dict[str, int | None] = {}
        self._price_memo: dict[str, tuple[int, float | None]] = {}  # symbol → (as of, price)
        # the last 24 h summary per symbol, for one ``now`` (the collector and the worker
        # both ask for tickers at the same simulated time)
        self._day_summaries: tuple[int, dict[str, tuple[float, float, int, float] | None]] = (
            -1,
            {},
        )
        self._oi_days: OrderedDict[tuple[str, int], tuple[list[int], list[OpenInterest]]] = (
            OrderedDict()
        )
        # paper accounts live in the state store (shared by every process using it); a
        # private in-memory store when none is given (one process, tests: dicts, the
        # backtest's store; nothing else reads it)
        self._ledger = PaperLedger(
            ledger if ledger is not None else MemoryStateStore(),
            self,
            clock,
            FillConfig(
                exchange_id=exchange_id,
                taker_fee=taker_fee,
                maker_fee=maker_fee,
                slippage=self._slippage,
                latency_ms=latency_ms,
                starting_balance=starting_balance,
            ),
            # a private store has no other writer
            exclusive=ledger_exclusive or ledger is None,
        )

    # ============================================================ market data
    @property
    def store(self) -> MarketStore:
        """The recorded market data this exchange replays."""
        return self._store

    @property
    def exchange_id(self) -> str:
        """Our exchange name, e.g. ``binance``."""
        return self._exchange_id

    @_serialized
    def load_markets(self) -> list[Instrument]:
        """One instrument per stored series of this exchange and market type, by symbol.

        Unless given ``instruments``, precision is inferred once (first call) from the 1m
        bars of the 24 h before now (the first stored day if there are none yet):
        ``price_step`` = 10^-d where d is the most decimals any open/high/low/close needs;
        ``amount_step`` = 10^floor(log10(1 / median close)), so one step is worth 0.1–1
        USDT; ``min_amount`` = one step; ``min_notional`` and ``max_leverage`` from the
        constructor (leverage 1 for spot).
        """
        return sorted(self._instrument_map().values(), key=lambda i: i.symbol)

    @_serialized
    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> list[Ticker]:
        """Tickers from the last closed 1m bar of each symbol (none for a symbol with no bar
        yet), sorted by symbol."""
        now = self._clock.now_ms()
        wanted = sorted(self._instrument_map()) if symbols is None else sorted(set(symbols))
        tickers: list[Ticker] = []
        for symbol in wanted:
            inst = self._instrument(symbol)
            if self._day_summaries[0] != now:
                self._day_summaries = (now, {})
            summaries = self._day_summaries[1]
            if symbol not in summaries:
                summaries[symbol] = self._day_summary(symbol, now - DAY_MS, now)
            day = summaries[symbol]
            if day is None:
                continue
            last, first_open, last_ts, quote_volume = day
            half_step = inst.price_step / 2
            # one more decimal than the step: last ∓ half a step without float noise
            digits = _step_decimals(inst.price_step) + 1
            tickers.append(
                Ticker(
                    exchange=self._exchange_id,
                    market_type=self._market_type,
                    symbol=symbol,
                    ts_ms=last_ts + self._bar_ms,
                    last=last,
                    bid=round(last - half_step, digits),
                    ask=round(last + half_step, digits),
                    quote_volume_24h=quote_volume,
                    change_24h_pct=(last / first_open - 1) * 100 if first_open > 0 else None,
                )
            )
        return tickers

    @_serialized
    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int = 1000
    ) -> list[Candle]:
        """Closed candles with ``ts_ms >= since_ms``, oldest first, at most ``limit``
        (the newest ``limit`` when ``since_ms`` is None)."""
        if timeframe not in TIMEFRAME_MS:
            raise ExchangeError(f"unsupported timeframe {timeframe!r}")
        self._instrument(symbol)
        if limit <= 0 or TIMEFRAME_MS[timeframe] % self._bar_ms:
            return []  # finer than (or not made of) the replayed bars: none recorded
        now = self._clock.now_ms()
        step = TIMEFRAME_MS[timeframe]
        if since_ms is None:
            start, end = now - now % step - limit * step, now
        else:
            if symbol not in self._first_bar:
                rng = self._store.candle_range(self._key(symbol), self._bar_tf)
                self._first_bar[symbol] = None if rng is None else rng[0]
            first = self._first_bar[symbol]
            if first is not None and since_ms < first:
                since_ms = first  # like an exchange: the first bars after ``since_ms``
            start, end = since_ms, min(now, since_ms + (limit + 1) * step)
        if end <= start:
            return []
        series = self._series(symbol, timeframe, start, end)
        lo, hi = (max(0, len(series) - limit), len(series)) if since_ms is None else (0, limit)
        return _candles(series, self._exchange_id, self._market_type, lo, hi)

    @_serialized
    def fetch_funding_rate(self, symbol: str) -> FundingRate | None:
        """Latest funding rate at or before now (None for spot or when unknown)."""
        key = self._key(symbol)
        if self._market_type is not MarketType.PERP:
            return None
        if symbol not in self._funding:
            # funding is sparse (every 8 h): load the whole history once
            rates = self._store.funding(key, 0, 2**62)
            self._funding[symbol] = ([r.ts_ms for r in rates], rates)
        stamps, rates = self._funding[symbol]
        i = bisect.bisect_right(stamps, self._clock.now_ms())
        return rates[i - 1] if i else None

    @_serialized
    def fetch_open_interest(self, symbol: str) -> OpenInterest | None:
        """Latest open interest at or before now, looking back to the previous UTC day (None
        when the store has none)."""
        now = self._clock.now_ms()
        for day in (now // DAY_MS, now // DAY_MS - 1):
            stamps, points = self._oi_day(symbol, day)
            i = bisect.bisect_right(stamps, now)
            if i:
                return points[i - 1]
        return None

    @_serialized
    def fetch_trades(self, symbol: str, since_ms: int, limit: int = 1000) -> list[Trade]:
        """Visible trades with ``since_ms <= ts_ms <= now``, oldest first, at most ``limit``
        (history reaches back one day at most)."""
        self._instrument(symbol)
        now = self._clock.now_ms()
        out: list[Trade] = []
        if limit <= 0 or since_ms > now:
            return out
        since_ms = max(since_ms, now - TRADE_HISTORY_MS)
        for hour in range(since_ms // HOUR_MS, now // HOUR_MS + 1):
            chunk = self._chunk(symbol, hour)
            lo = bisect.bisect_left(chunk.ts, since_ms)
            hi = bisect.bisect_right(chunk.visible, now)
            out.extend(chunk.trades[lo:hi])
            if len(out) >= limit:
                break
        return out[:limit]

    @_serialized
    def poll_trades(self, symbols: Sequence[str], after_ms: int) -> list[Trade]:
        """Trades of ``symbols`` that became visible in ``(after_ms, now]`` (see the module
        docstring), ordered by (ts_ms, symbol, trade_id). Every one has ``ts_ms <= now``;
        ``after_ms`` older than one day is treated as one day ago."""
        for symbol in symbols:
            self._instrument(symbol)
        now = self._clock.now_ms()
        return self._visible_between(
            sorted(set(symbols)), max(after_ms, now - TRADE_HISTORY_MS), now
        )

    # the embedded run's worker sleeps until the stream has something new (app/monitor_wake)
    @_serialized
    def next_visible_ms(self, symbols: Sequence[str], after_ms: int, until_ms: int) -> int | None:
        """Earliest time in ``(after_ms, until_ms]`` at which a trade of ``symbols``
        becomes visible (None: none does)."""
        best: int | None = None
        # a trade is visible at most one replayed bar after its stamp
        first_hour = (after_ms - self._bar_ms) // HOUR_MS
        for symbol in sorted(set(symbols)):
            for hour in range(first_hour, until_ms // HOUR_MS + 1):
                if best is not None and hour * HOUR_MS >= best:
                    break  # this hour's trades become visible at its start or later
                visible = self._chunk(symbol, hour).visible
                i = bisect.bisect_right(visible, after_ms)
                # visibility is non-decreasing in stream order, except across hours: an
                # hour's trades are all visible by the next hour's start, the next
                # hour's from its start on, so this symbol's first hit is its earliest
                if i < len(visible) and visible[i] <= until_ms:
                    best = visible[i] if best is None else min(best, visible[i])
                    break
        return best

    @_serialized
    def real_trade_between(self, symbols: Sequence[str], after_ms: int, until_ms: int) -> bool:
        """Whether a recorded trade (``source == "trade"``) of ``symbols`` is stamped in
        ``(after_ms, until_ms]``."""
        for symbol in sorted(set(symbols)):
            for hour in range(after_ms // HOUR_MS, until_ms // HOUR_MS + 1):
                chunk = self._chunk(symbol, hour)
                if not chunk.real:  # bars only (every hour of a candles-only store)
                    continue
                lo = bisect.bisect_right(chunk.ts, after_ms)
                hi = bisect.bisect_right(chunk.ts, until_ms)
                if any(t.source == "trade" for t in chunk.trades[lo:hi]):
                    return True
        return False

    # ============================================================ paper accounts
    @property
    def ledger(self) -> PaperLedger:
        """The paper accounts (persisted in the state store)."""
        return self._ledger

    @_serialized
    def fetch_balance(self, account: str) -> Balance:
        """Wallet (start + realized PnL − fees), unrealized PnL at the last price, margin."""
        return self._ledger.fetch_balance(account)

    @_serialized
    def create_order(self, account: str, request: OrderRequest) -> Order:
        """Place an order; the same ``client_order_id`` returns the existing order unchanged.

        Raises ``OrderRejected`` (nothing is recorded) for an unknown symbol, bad leverage,
        missing price, a notional under the minimum, insufficient free margin, a reduce-only
        order with nothing to reduce, or a stop that would trigger at once.
        """
        self._instrument_map()
        return self._ledger.create_order(account, request)

    @_serialized
    def create_orders(
        self, requests: Sequence[tuple[str, OrderRequest]]
    ) -> list[Order | OrderRejected]:
        """``create_order`` for each (account, request), in order; a refusal in its place
        (see ``PaperLedger.create_orders``)."""
        self._instrument_map()
        return self._ledger.create_orders(requests)

    @_serialized
    def fetch_balances(self, accounts: Sequence[str]) -> dict[str, Balance]:
        """``fetch_balance`` of each account, by account."""
        return self._ledger.fetch_balances(accounts)

    @_serialized
    def fetch_order(self, account: str, order_id: str) -> Order:
        """One order by exchange id (``ExchangeError`` if unknown)."""
        return self._ledger.fetch_order(account, order_id)

    @_serialized
    def fetch_open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        """Resting orders, in creation order."""
        return self._ledger.fetch_open_orders(account, symbol)

    @_serialized
    def fetch_open_orders_on(self, account: str, symbols: Collection[str]) -> list[Order]:
        """Resting orders on ``symbols``, in creation order."""
        return self._ledger.fetch_open_orders_on(account, symbols)

    @_serialized
    def cancel_order(self, account: str, order_id: str) -> Order:
        """Cancel a resting order (no-op on a filled or cancelled one)."""
        return self._ledger.cancel_order(account, order_id)

    @_serialized
    def fetch_positions(self, account: str) -> list[ExchangePosition]:
        """Open net positions, by symbol."""
        return self._ledger.fetch_positions(account)

    # --------------------------------------------------------- not in the port
    @_serialized
    def fills(self, account: str) -> list[Fill]:
        """Every fill of ``account`` in execution order (for the ledger)."""
        return self._ledger.fills(account)

    @_serialized
    def orders(self, account: str) -> list[Order]:
        """Every order of ``account`` (any status) in creation order (for the ledger)."""
        return self._ledger.orders(account)

    @_serialized
    def accounts(self) -> list[str]:
        """Names of the paper accounts created so far, sorted."""
        return self._ledger.accounts()

    # ------------------------------------------------- market data for the ledger
    def paper_instrument(self, symbol: str) -> Instrument | None:
        """The instrument, None if unknown."""
        return self._instrument_map().get(symbol)

    def last_price(self, symbol: str, as_of_ms: int) -> float | None:
        """Price of the last trade visible at ``as_of_ms``."""
        # the ledger asks at one time many times (every order and balance of a batch)
        memo = self._price_memo.get(symbol)
        if memo is not None and memo[0] == as_of_ms:
            return memo[1]
        price = self._last_price(symbol, as_of_ms)
        self._price_memo[symbol] = (as_of_ms, price)
        return price

    def visible_trades(self, symbols: Sequence[str], after_ms: int, now_ms: int) -> list[Trade]:
        """Trades of ``symbols`` that became visible in ``(after_ms, now_ms]``."""
        return self._visible_between(symbols, after_ms, now_ms)


__all__ = ["ReplayExchange"]
