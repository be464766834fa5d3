"""The replay exchange's market data (``ReplayExchange``, replay_exchange.py): instruments
inferred from the bars, bars cached per UTC day, the trade stream per symbol and UTC hour
(recorded trades, else the path derived from each bar) and the last visible price.

A mixin, kept apart so the exchange module stays small; it uses the exchange's settings
and caches (declared below).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from prometheus_trader.domain.market import (
    MINUTE_MS,
    TIMEFRAME_MS,
    Candle,
    CandleSeries,
    Instrument,
    MarketType,
    OpenInterest,
    Side,
    Trade,
)
from prometheus_trader.domain.trusted import trusted
from prometheus_trader.ports import (
    Clock,
    ExchangeError,
    MarketStore,
    SeriesKey,
)

HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# Offsets of the four derived trades inside a 1m bar: open, first extreme, second, close.
BAR_PATH_OFFSETS_MS = (0, 20_000, 40_000, 59_000)


def bar_path_offsets(bar_ms: int) -> tuple[int, int, int, int]:
    """The four offsets inside a bar of ``bar_ms``: open, +1/3, +2/3, close 1 s before its
    end (``BAR_PATH_OFFSETS_MS`` for 1m bars)."""
    return (0, bar_ms // 3, 2 * bar_ms // 3, bar_ms - 1000)


# Bars used to infer an instrument's price step and typical price.
PRECISION_LOOKBACK_MS = DAY_MS
# How far back to look for the last trade before giving up (a gap in the data).
LAST_TRADE_LOOKBACK_HOURS = 48
# The trade stream is a recent-history API (like an exchange's): reads start at most this
# long before now, so a far-back ``since_ms``/``after_ms`` cannot scan years of empty hours.
TRADE_HISTORY_MS = DAY_MS
_MAX_DECIMALS = 10
# Cache sizes (entries); results never depend on what is cached.
_MAX_BAR_DAYS = 16
_MAX_TRADE_CHUNKS = 512


@dataclass(frozen=True)
class _TradeChunk:
    """The trade stream of one symbol over one UTC hour, sorted by (ts_ms, trade_id).

    ``visible`` is the time each trade becomes known (its ``ts_ms`` for recorded trades,
    the bar's close for derived ones); it is non-decreasing in stream order.
    """

    ts: list[int]
    visible: list[int]
    trades: list[Trade]
    real: bool = True  # whether any trade is recorded (``source == "trade"``)


class ReplayMarketData:
    """Mixin of ``ReplayExchange``: reading and caching the recorded market data."""

    _store: MarketStore
    _clock: Clock
    _exchange_id: str
    _market_type: MarketType
    _taker_fee: float
    _maker_fee: float
    _min_notional: float
    _max_leverage: float
    _bar_tf: str
    _bar_ms: int
    _path_offsets: tuple[int, int, int, int]
    _instruments: dict[str, Instrument] | None
    _keys: dict[str, SeriesKey] | None
    _bar_days: OrderedDict[int, dict[str, CandleSeries]]
    _trade_chunks: OrderedDict[tuple[str, int], _TradeChunk]
    _oi_days: OrderedDict[tuple[str, int], tuple[list[int], list[OpenInterest]]]

    def _instrument_map(self) -> dict[str, Instrument]:
        if self._instruments is None:
            self._instruments = {
                symbol: inst
                for symbol in sorted(self._series_keys())
                if (inst := self._infer_instrument(symbol)) is not None
            }
        return self._instruments

    def _instrument(self, symbol: str) -> Instrument:
        inst = self._instrument_map().get(symbol)
        if inst is None:
            raise ExchangeError(f"unknown symbol {symbol}")
        return inst

    def _series_keys(self) -> dict[str, SeriesKey]:
        if self._keys is None:
            self._keys = {
                k.symbol: k
                for k in self._store.series_keys()
                if k.exchange == self._exchange_id and k.market_type == self._market_type
            }
        return self._keys

    def _key(self, symbol: str) -> SeriesKey:
        self._instrument(symbol)
        key = self._series_keys().get(symbol)
        return key or SeriesKey(self._exchange_id, self._market_type, symbol)

    def _infer_instrument(self, symbol: str) -> Instrument | None:
        now = self._clock.now_ms()
        bars = self._bars_1m(symbol, now - PRECISION_LOOKBACK_MS, now)
        if len(bars) == 0:
            rng = self._store.candle_range(self._series_keys()[symbol], self._bar_tf)
            if rng is None:
                return None
            bars = self._bars_1m(symbol, rng[0], rng[0] + PRECISION_LOOKBACK_MS)
            if len(bars) == 0:
                return None
        prices = np.concatenate([bars.open, bars.high, bars.low, bars.close])
        decimals = max(_decimals(float(p)) for p in np.unique(prices))
        typical = float(np.median(bars.close))
        exponent = math.floor(math.log10(1 / typical)) if typical > 0 else 0
        amount_step = round(10.0**exponent, max(0, -exponent))
        base, quote, settle = _split_symbol(symbol)
        return Instrument(
            exchange=self._exchange_id,
            market_type=self._market_type,
            symbol=symbol,
            base=base,
            quote=quote,
            settle=settle,
            price_step=round(10.0**-decimals, decimals),
            amount_step=amount_step,
            min_amount=amount_step,
            min_notional=self._min_notional,
            max_leverage=self._max_leverage,
            taker_fee=self._taker_fee,
            maker_fee=self._maker_fee,
        )

    def _bar_day(self, day: int) -> dict[str, CandleSeries]:
        """Every symbol's replayed (1m) bars of one UTC day (one store query, cached)."""
        cached = self._bar_days.get(day)
        if cached is not None:
            self._bar_days.move_to_end(day)
            return cached
        keys = list(self._series_keys().values())
        start, end = day * DAY_MS, (day + 1) * DAY_MS
        many = getattr(self._store, "candles_many", None)
        if many is not None:
            loaded: dict[SeriesKey, CandleSeries] = many(keys, self._bar_tf, start, end)
        else:
            loaded = {k: self._store.candles(k, self._bar_tf, start, end) for k in keys}
        result = {k.symbol: s for k, s in loaded.items()}
        self._bar_days[day] = result
        while len(self._bar_days) > _MAX_BAR_DAYS:
            self._bar_days.popitem(last=False)
        return result

    def _bars_1m(self, symbol: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Closed replayed bars (1m unless ``bar_timeframe`` says otherwise) with
        ``start_ms <= ts_ms`` and ``ts_ms + bar <= end_ms``."""
        parts: list[CandleSeries] = []
        last_open = end_ms - self._bar_ms
        if last_open < start_ms:
            return CandleSeries.empty(symbol, self._bar_tf)
        for day in range(start_ms // DAY_MS, last_open // DAY_MS + 1):
            series = self._bar_day(day).get(symbol)
            if series is None or len(series) == 0:
                continue
            lo = int(np.searchsorted(series.ts_ms, start_ms, side="left"))
            hi = int(np.searchsorted(series.ts_ms, last_open, side="right"))
            if hi > lo:
                parts.append(series.rows(lo, hi))
        if not parts:
            return CandleSeries.empty(symbol, self._bar_tf)
        if len(parts) == 1:
            return parts[0]
        return CandleSeries(
            symbol,
            self._bar_tf,
            np.concatenate([p.ts_ms for p in parts]),
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("open", "high", "low", "close", "volume", "taker_buy_volume")
            ),
        )

    def _day_summary(
        self, symbol: str, start_ms: int, end_ms: int
    ) -> tuple[float, float, int, float] | None:
        """(last close, first open, last open time, Σ close×volume) of the closed replayed
        bars that ``_bars_1m`` returns, without joining their columns (a ticker per symbol
        every minute); None when there is no bar."""
        last_open = end_ms - self._bar_ms
        if last_open < start_ms:
            return None
        parts: list[tuple[CandleSeries, int, int]] = []
        for day in range(start_ms // DAY_MS, last_open // DAY_MS + 1):
            series = self._bar_day(day).get(symbol)
            if series is None or len(series) == 0:
                continue
            lo = int(np.searchsorted(series.ts_ms, start_ms, side="left"))
            hi = int(np.searchsorted(series.ts_ms, last_open, side="right"))
            if hi > lo:
                parts.append((series, lo, hi))
        if not parts:
            return None
        # the products joined, then one sum: the same float as summing the joined bars
        products = [s.close[lo:hi] * s.volume[lo:hi] for s, lo, hi in parts]
        quote = np.sum(products[0] if len(products) == 1 else np.concatenate(products))
        (first, lo, _), (last, _, hi) = parts[0], parts[-1]
        return (
            float(last.close[hi - 1]),
            float(first.open[lo]),
            int(last.ts_ms[hi - 1]),
            float(quote),
        )

    def _series(self, symbol: str, timeframe: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Closed bars of ``timeframe``: the store's own, else rolled up from 1m bars."""
        if timeframe == self._bar_tf:
            return self._bars_1m(symbol, start_ms, end_ms)
        key = self._key(symbol)
        if self._store.candle_range(key, timeframe) is not None:
            return self._store.candles(key, timeframe, start_ms, end_ms)
        step = TIMEFRAME_MS[timeframe]
        aligned = start_ms - start_ms % step + (step if start_ms % step else 0)
        return self._bars_1m(symbol, aligned, end_ms).resample(timeframe)

    def _oi_day(self, symbol: str, day: int) -> tuple[list[int], list[OpenInterest]]:
        """Open interest of one symbol over one UTC day (cached: polled every minute)."""
        cached = self._oi_days.get((symbol, day))
        if cached is None:
            points = self._store.open_interest(
                self._key(symbol), day * DAY_MS, (day + 1) * DAY_MS - 1
            )
            cached = ([p.ts_ms for p in points], points)
            self._oi_days[(symbol, day)] = cached
            while len(self._oi_days) > _MAX_TRADE_CHUNKS:
                self._oi_days.popitem(last=False)
        return cached

    def _chunk(self, symbol: str, hour: int) -> _TradeChunk:
        """The trade stream of one symbol over one UTC hour (cached)."""
        cache_key = (symbol, hour)
        cached = self._trade_chunks.get(cache_key)
        if cached is not None:
            self._trade_chunks.move_to_end(cache_key)
            return cached
        start = hour * HOUR_MS
        recorded = self._store.trades(self._key(symbol), start, start + HOUR_MS - 1)
        rows: list[tuple[int, str, int, Trade]] = [
            (t.ts_ms, t.trade_id, t.ts_ms, t) for t in recorded
        ]
        bar_ms = self._bar_ms
        recorded_minutes = {t.ts_ms // bar_ms for t in recorded}
        bars = self._bars_1m(symbol, start - bar_ms, start + HOUR_MS)
        for i in range(len(bars)):
            bar_ts = int(bars.ts_ms[i])
            if bar_ts < start or bar_ts // bar_ms in recorded_minutes:
                continue
            previous = (
                float(bars.close[i - 1])
                if i > 0 and int(bars.ts_ms[i - 1]) == bar_ts - bar_ms
                else None
            )
            for trade in self._bar_path(symbol, bars, i, previous):
                rows.append((trade.ts_ms, trade.trade_id, bar_ts + bar_ms, trade))
        rows.sort(key=lambda r: (r[0], r[1]))
        trades = [r[3] for r in rows]
        chunk = _TradeChunk(
            ts=[r[0] for r in rows],
            visible=[r[2] for r in rows],
            trades=trades,
            real=any(t.source == "trade" for t in trades),
        )
        self._trade_chunks[cache_key] = chunk
        while len(self._trade_chunks) > _MAX_TRADE_CHUNKS:
            self._trade_chunks.popitem(last=False)
        return chunk

    def _bar_path(
        self, symbol: str, bars: CandleSeries, i: int, previous: float | None
    ) -> Iterable[Trade]:
        bar_ts = int(bars.ts_ms[i])
        o, h, lo, c = (
            float(bars.open[i]),
            float(bars.high[i]),
            float(bars.low[i]),
            float(bars.close[i]),
        )
        bullish = c >= o
        path = (o, lo, h, c) if bullish else (o, h, lo, c)
        amount = float(bars.volume[i]) / 4
        prev = previous
        for n, (offset, price) in enumerate(zip(self._path_offsets, path, strict=True)):
            if prev is None or price == prev:
                side = Side.BUY if bullish else Side.SELL
            else:
                side = Side.BUY if price > prev else Side.SELL
            prev = price
            # built from our own float columns: nothing to validate (= model_construct
            # with every field, in declaration order; a third of model_construct's cost)
            yield trusted(
                Trade,
                {
                    "exchange": self._exchange_id,
                    "market_type": self._market_type,
                    "symbol": symbol,
                    "ts_ms": bar_ts + offset,
                    "trade_id": f"bar-{bar_ts}-{n}",
                    "price": price,
                    "amount": amount,
                    "side": side,
                    "source": "bar",
                },
            )

    def _visible_between(self, symbols: Sequence[str], after_ms: int, now_ms: int) -> list[Trade]:
        """Trades of ``symbols`` with visibility time in ``(after_ms, now_ms]``, ordered by
        (ts_ms, symbol, trade_id)."""
        out: list[Trade] = []
        if now_ms <= after_ms:
            return out
        # a trade is visible at most one bar after its stamp
        first_hour = (after_ms - self._bar_ms) // HOUR_MS
        for symbol in symbols:
            for hour in range(first_hour, now_ms // HOUR_MS + 1):
                chunk = self._chunk(symbol, hour)
                lo = bisect.bisect_right(chunk.visible, after_ms)
                hi = bisect.bisect_right(chunk.visible, now_ms)
                out.extend(chunk.trades[lo:hi])
        if len(symbols) > 1:
            out.sort(key=lambda t: (t.ts_ms, t.symbol, t.trade_id))
        return out

    def _last_price(self, symbol: str, as_of_ms: int) -> float | None:
        """Price of the last trade visible at ``as_of_ms``."""
        hour = as_of_ms // HOUR_MS
        for h in range(hour, hour - LAST_TRADE_LOOKBACK_HOURS, -1):
            chunk = self._chunk(symbol, h)
            hi = bisect.bisect_right(chunk.visible, as_of_ms)
            if hi > 0:
                return chunk.trades[hi - 1].price
        return None


def _decimals(price: float) -> int:
    """Fewest decimals that represent ``price`` (the feed's own precision)."""
    for d in range(_MAX_DECIMALS + 1):
        if abs(price - round(price, d)) <= 1e-12 * max(1.0, abs(price)):
            return d
    return _MAX_DECIMALS


def _step_decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def _split_symbol(symbol: str) -> tuple[str, str, str | None]:
    """``BTC/USDT:USDT`` → (BTC, USDT, USDT); ``BTC/USDT`` → (BTC, USDT, None)."""
    pair, _, settle = symbol.partition(":")
    base, _, quote = pair.partition("/")
    return base, quote or "USDT", settle or None


_CANDLE_FIELDS_SET = frozenset(set(Candle.model_fields) - {"quote_volume", "trades"})


def _candles(
    series: CandleSeries, exchange: str, market_type: MarketType, lo: int, hi: int
) -> list[Candle]:
    out: list[Candle] = []
    for i in range(lo, min(hi, len(series))):
        taker = float(series.taker_buy_volume[i])
        # from the store's typed columns: nothing to validate (= Candle.model_construct of
        # these fields: every field in declaration order, the defaults not in fields set)
        out.append(
            trusted(
                Candle,
                {
                    "exchange": exchange,
                    "market_type": market_type,
                    "symbol": series.symbol,
                    "timeframe": series.timeframe,
                    "ts_ms": int(series.ts_ms[i]),
                    "open": float(series.open[i]),
                    "high": float(series.high[i]),
                    "low": float(series.low[i]),
                    "close": float(series.close[i]),
                    "volume": float(series.volume[i]),
                    "quote_volume": None,
                    "taker_buy_volume": None if math.isnan(taker) else taker,
                    "trades": None,
                },
                set(_CANDLE_FIELDS_SET),
            )
        )
    return out
