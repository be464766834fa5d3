"""Live collector: a real exchange's market data into the market store (docs/collectors.md).

One round (every minute): the markets (once per instance), every ticker in one request,
each symbol's 1m bars from its last stored bar with the holes inside the stored window
found and backfilled, open interest (now, and its 5m history), settled funding rates,
and recent public trades for the ranker's shortlist. 5m/15m/1h bars are derived from the
stored 1m bars and written to the store; they are never fetched.

Idempotent: every write is an upsert on the row's key, each fetch starts after what is
stored, and a range the venue could not fill is recorded once (``market_gaps`` in the
state store) and not asked for again, so a second round at the same instant writes no row.

Gaps are documents, not market-store rows, because they change state (open → filled or
unfillable, with an attempt count) and the market store is append-only; the state store
is where operators and the API already look (one document per missing range).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import numpy as np

from prometheus_trader.domain.market import (
    MINUTE_MS,
    TIMEFRAME_MS,
    Candle,
    CandleSeries,
    FundingRate,
    Instrument,
    OpenInterest,
    Trade,
)
from prometheus_trader.ports import Clock, Exchange, MarketStore, SeriesKey, StateStore
from prometheus_trader.ports.market_data import MarketHistory
from prometheus_trader.usecases.market_gaps import GapLedger, MarketGap, holes, subtract
from prometheus_trader.usecases.names import Collections, labels

log = logging.getLogger(__name__)
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class LiveCollectConfig:
    """Knobs of the live collector (from ``Settings.collector_*``)."""

    backfill_minutes: int = 24 * 60  # history on a symbol's first round, and the gap window
    page: int = 1000  # bars per klines request (Binance serves up to 1500, Bybit 1000)
    derive: tuple[str, ...] = ("5m", "15m", "1h")
    oi_timeframe: str = "5m"
    trades_minutes: int = 10  # how far back a shortlisted symbol's first trade fetch goes
    shortlist: int = 10  # trades for the top N of the latest ranking
    trade_page: int = 1000  # trades per request (Binance aggTrades and Bybit serve 1000)
    trade_pages: int = 5  # requests per symbol and round at most (catching up is bounded)
    gap_attempts: int = 2  # fetches that return nothing before a gap is called unfillable
    tail_grace_minutes: int = 5  # no bar for this long after the last one: a (tail) gap
    symbols: tuple[str, ...] | None = None  # None = every active instrument


@dataclass
class LiveCollectReport:
    """What one round fetched and wrote (rows the store did not have before)."""

    symbols: int = 0
    tickers: int = 0
    candles: int = 0
    derived: int = 0
    funding: int = 0
    open_interest: int = 0
    trades: int = 0
    gaps_found: int = 0
    gaps_filled: int = 0
    gaps_unfillable: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows written to the market store this round."""
        return (
            self.tickers
            + self.candles
            + self.derived
            + self.funding
            + self.open_interest
            + self.trades
        )


def _stagger(symbol: str, span_ms: int) -> int:
    """A fixed whole-minute offset in ``[0, span_ms)`` per symbol (spreads the symbols'
    periodic requests over the rounds; stable across processes, unlike ``hash``)."""
    return zlib.crc32(symbol.encode()) % max(1, span_ms // MINUTE_MS) * MINUTE_MS


def series_to_candles(key: SeriesKey, series: CandleSeries) -> list[Candle]:
    """Domain candles of a series (derived bars: no quote volume or trade count)."""
    return [
        Candle(
            exchange=key.exchange,
            market_type=key.market_type,
            symbol=key.symbol,
            timeframe=series.timeframe,
            ts_ms=int(series.ts_ms[i]),
            open=float(series.open[i]),
            high=float(series.high[i]),
            low=float(series.low[i]),
            close=float(series.close[i]),
            volume=float(series.volume[i]),
            taker_buy_volume=None
            if np.isnan(series.taker_buy_volume[i])
            else float(series.taker_buy_volume[i]),
        )
        for i in range(len(series))
    ]


class CollectLiveMarketData:
    """The live collector (see the module docstring). One failing symbol does not stop
    the round; its error is in the report."""

    def __init__(
        self,
        exchange: Exchange,
        store: MarketStore,
        state: StateStore,
        clock: Clock,
        config: LiveCollectConfig | None = None,
    ) -> None:
        self._exchange = exchange
        self._history = exchange if isinstance(exchange, MarketHistory) else None
        self._store = store
        self._state = state
        self._clock = clock
        self._cfg = config or LiveCollectConfig()
        self._instruments: list[Instrument] | None = None
        self._gaps = GapLedger(state, exchange.exchange_id, clock, self._cfg.gap_attempts)

    # ------------------------------------------------------------------ universe
    def universe(self) -> list[Instrument]:
        """Active instruments (loaded once per instance), filtered by ``symbols``."""
        if self._instruments is None:
            only = set(self._cfg.symbols) if self._cfg.symbols else None
            self._instruments = sorted(
                (
                    m
                    for m in self._exchange.load_markets()
                    if m.active and (only is None or m.symbol in only)
                ),
                key=lambda m: m.symbol,
            )
        return self._instruments

    def _key(self, inst: Instrument) -> SeriesKey:
        return SeriesKey(inst.exchange, inst.market_type, inst.symbol)

    # ----------------------------------------------------------------------- run
    def run(self) -> LiveCollectReport:
        """One round over the universe."""
        cfg, report = self._cfg, LiveCollectReport()
        now = self._clock.now_ms()
        end = now - now % MINUTE_MS  # bars opening before this have closed
        window = end - cfg.backfill_minutes * MINUTE_MS
        universe = self.universe()
        report.symbols = len(universe)
        wanted = None if cfg.symbols is None else [m.symbol for m in universe]
        report.tickers = self._store.write_tickers(self._exchange.fetch_tickers(wanted))
        keys = [self._key(m) for m in universe]
        stored = self._store.candles_many(keys, "1m", window, end)
        known = self._gaps.known()
        # one query each for every symbol's stored open interest and funding
        oi_stored = self._store.open_interest_many(keys, window, now)
        funding_stored = self._store.funding_many(keys, window - 2 * DAY_MS, now)
        shortlist = self._shortlist(universe)
        candles: list[Candle] = []
        rates: list[FundingRate] = []
        interest: list[OpenInterest] = []
        trades: list[Trade] = []
        for inst, key in zip(universe, keys, strict=True):
            try:
                candles += self._bars(
                    inst.symbol, stored[key].ts_ms, window, end, known.get(inst.symbol, {}), report
                )
                current = inst.symbol in shortlist  # the rest: the 5m history only
                interest += self._open_interest(key, oi_stored[key], window, now, current)
                rates += self._funding(key, funding_stored[key], window, now)
                if inst.symbol in shortlist:
                    trades += self._trades(key, now)
            except Exception as exc:  # one symbol's failure must not stop the round
                report.failed[inst.symbol] = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "collect failed for %s: %s",
                    inst.symbol,
                    exc,
                    extra=labels(stage="collect", symbol=inst.symbol),
                )
        report.candles = self._store.write_candles(candles) if candles else 0
        report.derived = self._derive(keys, candles, end)
        report.funding = self._store.write_funding(rates) if rates else 0
        report.open_interest = self._store.write_open_interest(interest) if interest else 0
        report.trades = self._store.write_trades(trades) if trades else 0
        log.info(
            "collected %d rows for %d symbols (%d gaps found, %d filled, %d unfillable)",
            report.rows,
            report.symbols,
            report.gaps_found,
            report.gaps_filled,
            report.gaps_unfillable,
            extra=labels(stage="collect"),
        )
        return report

    # ------------------------------------------------------------------- 1m bars
    def _fetch_range(self, symbol: str, start: int, stop: int) -> list[Candle]:
        """Closed 1m bars in ``[start, stop)``, paged (each page sized to what is missing,
        so a short range costs the venue's lightest request weight)."""
        out: list[Candle] = []
        since = start
        while since < stop:
            want = min(self._cfg.page, (stop - since) // MINUTE_MS)
            page = self._exchange.fetch_ohlcv(symbol, "1m", since, limit=want)
            out += [c for c in page if since <= c.ts_ms < stop]
            if len(page) < want or not page:
                break
            since = max(page[-1].ts_ms + MINUTE_MS, since + MINUTE_MS)
        return out

    def _bars(
        self,
        symbol: str,
        ts_ms: np.ndarray,
        window: int,
        end: int,
        known: dict[int, MarketGap],
        report: LiveCollectReport,
    ) -> list[Candle]:
        """Holes inside the stored window and the tail after the last bar: fetched, and
        what the venue did not serve recorded as gaps."""
        unfillable = [(g.start_ms, g.end_ms) for g in known.values() if g.status == "unfillable"]
        if len(ts_ms) == 0:
            wanted = [(window, end)]  # first round for this symbol: the whole window
        else:
            first = int(ts_ms[0])
            inner = holes(ts_ms, first, int(ts_ms[-1]) + MINUTE_MS)
            tail = [(int(ts_ms[-1]) + MINUTE_MS, end)] if ts_ms[-1] + MINUTE_MS < end else []
            wanted = inner + tail
        wanted = subtract(wanted, unfillable)
        got: list[Candle] = []
        for a, b in wanted:
            got += self._fetch_range(symbol, a, b)
        # what is still missing between the first and the last bar we now have
        have = np.unique(np.r_[ts_ms, [c.ts_ms for c in got]].astype(np.int64))
        missing: list[tuple[int, int]] = []
        if len(have):
            missing = subtract(holes(have, int(have[0]), int(have[-1]) + MINUTE_MS), unfillable)
        # after the last bar: the venue may publish a closed bar a little late, so only a
        # tail older than the grace is a gap (it stays open while it is the tail)
        tail_from = int(have[-1]) + MINUTE_MS if len(have) else window
        grace = self._cfg.tail_grace_minutes * MINUTE_MS
        stale = (tail_from, end) if end - tail_from >= grace else None
        checked = (int(have[0]), int(have[-1])) if len(have) else (end, end)
        counts = self._gaps.record(symbol, missing, stale, known, checked)
        report.gaps_found += counts.found
        report.gaps_filled += counts.filled
        report.gaps_unfillable += counts.unfillable
        return got

    # ------------------------------------------------------------- derived bars
    def _derive(self, keys: list[SeriesKey], new: list[Candle], end: int) -> int:
        """5m/15m/1h bars of every bucket that got a new 1m bar, from the stored 1m bars
        (complete buckets only: a bucket with a missing minute has no derived bar)."""
        if not new or not self._cfg.derive:
            return 0
        coarsest = max(TIMEFRAME_MS[tf] for tf in self._cfg.derive)
        first: dict[str, int] = {}
        for c in new:
            first[c.symbol] = min(first.get(c.symbol, c.ts_ms), c.ts_ms)
        touched = [k for k in keys if k.symbol in first]
        start = min(first.values())
        start -= start % coarsest
        series = self._store.candles_many(touched, "1m", start, end)
        out: list[Candle] = []
        for key in touched:
            lo = first[key.symbol] - first[key.symbol] % coarsest
            s = series[key]
            s = s.rows(int(np.searchsorted(s.ts_ms, lo)), len(s))
            for tf in self._cfg.derive:
                out += series_to_candles(key, s.resample(tf))
        return self._store.write_candles(out) if out else 0

    # ------------------------------------------------- open interest, funding
    def _open_interest(
        self, key: SeriesKey, stored: list[OpenInterest], window: int, now: int, current: bool
    ) -> list[OpenInterest]:
        """The history since the last stored point (at most one page a round), plus the
        value now for ``current`` symbols (the shortlist) or when there is no history."""
        out: list[OpenInterest] = []
        if current or self._history is None:
            point = self._exchange.fetch_open_interest(key.symbol)
            if point is not None:
                out.append(point)
        if self._history is None:
            return out
        step = TIMEFRAME_MS[self._cfg.oi_timeframe]
        last = max((p.ts_ms for p in stored if p.ts_ms % step == 0), default=None)
        since = window if last is None else last + step
        # due one step after the point (published late), plus a per-symbol stagger: all
        # symbols share the 5m boundaries and must not all ask in the same round
        if since + step + _stagger(key.symbol, step) <= now:
            out += self._history.fetch_open_interest_history(
                key.symbol, since, self._cfg.oi_timeframe
            )
        return out

    def _funding(
        self, key: SeriesKey, stored_rates: list[FundingRate], window: int, now: int
    ) -> list[FundingRate]:
        """Settled funding rates since the last stored one, asked for only once the next
        settlement is due (the last interval seen, 8 h while only one is known), so
        the check needs no memory between rounds; without a history endpoint, the
        current rate."""
        if self._history is None:
            rate = self._exchange.fetch_funding_rate(key.symbol)
            return [] if rate is None else [rate]
        stored = sorted(f.ts_ms for f in stored_rates)
        if stored:
            # one known rate: assume the common 8 h; a shorter interval shows up in that
            # fetch (every rate since the last) and is used from then on
            interval = stored[-1] - stored[-2] if len(stored) > 1 else 8 * HOUR_MS
            due = stored[-1] + max(interval, HOUR_MS) + _stagger(key.symbol, 10 * MINUTE_MS)
            if now < due:  # settlements are simultaneous: staggered like open interest
                return []
        since = window - 8 * HOUR_MS if not stored else stored[-1] + 1
        return self._history.fetch_funding_history(key.symbol, since)

    # -------------------------------------------------------------------- trades
    def _shortlist(self, universe: list[Instrument]) -> set[str]:
        """The top ``shortlist`` symbols of the latest ranking (none before the first)."""
        if not self._cfg.shortlist:
            return set()
        docs = self._state.query(
            Collections.RANKINGS, order_by="as_of_ms", descending=True, limit=1
        )
        names = {m.symbol for m in universe}
        ranked = docs[0].get("ranked", []) if docs else []
        return {str(r["symbol"]) for r in ranked[: self._cfg.shortlist] if r["symbol"] in names}

    def _trades(self, key: SeriesKey, now: int) -> list[Trade]:
        """Public trades since the last stored one, page by page up to ``trade_pages``
        (a busy symbol trades more than a page a minute; the rest waits a round)."""
        start = now - self._cfg.trades_minutes * MINUTE_MS
        stored = self._store.trades(key, start, now)
        since = start if not stored else stored[-1].ts_ms
        out: list[Trade] = []
        for _ in range(self._cfg.trade_pages):
            # from the last stamp itself: trades sharing it dedupe on their id
            page = self._exchange.fetch_trades(key.symbol, since, self._cfg.trade_page)
            out += page
            if len(page) < self._cfg.trade_page or page[-1].ts_ms <= since:
                break
            since = page[-1].ts_ms
        return out
