"""Collector: pull market data from the exchange into the market store, incrementally."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_trader.domain.market import (
    MINUTE_MS,
    TIMEFRAME_MS,
    Candle,
    FundingRate,
    Instrument,
    OpenInterest,
)
from prometheus_trader.ports import Clock, Exchange, MarketStore, SeriesKey
from prometheus_trader.usecases.names import labels

log = logging.getLogger(__name__)


@dataclass
class CollectReport:
    """What one collector run added."""

    symbols: int = 0
    candles: int = 0
    funding: int = 0
    open_interest: int = 0
    tickers: int = 0
    failed: dict[str, str] = field(default_factory=dict)


class CollectMarketData:
    """Every minute: tickers, 1m bars since the last stored bar, funding, open interest.

    Idempotent: re-running a minute writes no duplicate rows (the store dedupes on key and
    the fetch starts after the last stored bar). One failing symbol does not stop the rest.
    """

    def __init__(
        self,
        exchange: Exchange,
        store: MarketStore,
        clock: Clock,
        *,
        backfill_minutes: int = 24 * 60,
        symbols: list[str] | None = None,
        timeframe: str = "1m",
    ) -> None:
        """``timeframe``: the bars collected (1m; a replay of a store holding only coarser
        candles collects those)."""
        self._exchange = exchange
        self._store = store
        self._clock = clock
        self._backfill_ms = backfill_minutes * MINUTE_MS
        self._only = set(symbols) if symbols else None
        self._timeframe = timeframe
        self._bar_ms = TIMEFRAME_MS[timeframe]
        self._instruments: list[Instrument] | None = None
        # newest funding/OI stamp already written per symbol: re-writing the same value
        # every minute is correct (the store dedupes) but wasteful
        self._last_funding_ms: dict[str, int] = {}
        self._last_oi_ms: dict[str, int] = {}

    def universe(self) -> list[Instrument]:
        """Active instruments of the configured exchange (loaded once per instance)."""
        if self._instruments is None:
            markets = self._exchange.load_markets()
            self._instruments = sorted(
                (m for m in markets if m.active and (self._only is None or m.symbol in self._only)),
                key=lambda m: m.symbol,
            )
        return self._instruments

    def run(self) -> CollectReport:
        """Collect one round for the whole universe."""
        report = CollectReport()
        now = self._clock.now_ms()
        universe = self.universe()
        report.symbols = len(universe)
        report.tickers = self._store.write_tickers(
            self._exchange.fetch_tickers([m.symbol for m in universe])
        )
        candles: list[Candle] = []
        rates: list[FundingRate] = []
        interest: list[OpenInterest] = []
        for inst in universe:
            key = SeriesKey(inst.exchange, inst.market_type, inst.symbol)
            try:
                tf, bar_ms = self._timeframe, self._bar_ms
                last = self._store.last_candle_ms(key, tf)
                since = now - self._backfill_ms if last is None else last + bar_ms
                while True:
                    bars = self._exchange.fetch_ohlcv(inst.symbol, tf, since, limit=1000)
                    candles.extend(bars)
                    if len(bars) < 1000:
                        break
                    since = bars[-1].ts_ms + bar_ms
                rate = self._exchange.fetch_funding_rate(inst.symbol)
                if rate is not None and rate.ts_ms > self._last_funding_ms.get(inst.symbol, -1):
                    rates.append(rate)
                    self._last_funding_ms[inst.symbol] = rate.ts_ms
                oi = self._exchange.fetch_open_interest(inst.symbol)
                if oi is not None and oi.ts_ms > self._last_oi_ms.get(inst.symbol, -1):
                    interest.append(oi)
                    self._last_oi_ms[inst.symbol] = oi.ts_ms
            except Exception as exc:  # one symbol's failure must not stop the round
                report.failed[inst.symbol] = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "collect failed for %s: %s",
                    inst.symbol,
                    exc,
                    extra=labels(stage="collect", symbol=inst.symbol),
                )
        # one write per kind and round: the store's per-call cost dominates small writes
        report.candles = self._store.write_candles(candles) if candles else 0
        report.funding = self._store.write_funding(rates) if rates else 0
        report.open_interest = self._store.write_open_interest(interest) if interest else 0
        log.debug(
            "collected %d candles for %d symbols",
            report.candles,
            report.symbols,
            extra=labels(stage="collect"),
        )
        return report
