"""Ranker: features for every symbol, the SPEC ranking, the analyst panel, signals."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from prometheus_trader.domain.analysts import AnalysisContext, Analyst
from prometheus_trader.domain.features import SymbolFeatures, compute_features
from prometheus_trader.domain.ids import stable_id
from prometheus_trader.domain.market import MINUTE_MS, TIMEFRAME_MS, CandleSeries, MarketType
from prometheus_trader.domain.ranking import rank_symbols
from prometheus_trader.domain.signals import OpportunitySignal, SignalStatus
from prometheus_trader.domain.synthesizer import SignalParams, SynthesisPolicy, build_signal
from prometheus_trader.ports import Bus, Clock, Filter, MarketStore, SeriesKey, StateStore
from prometheus_trader.usecases.names import Collections, Topics, labels
from prometheus_trader.usecases.stats import symbol_success_rates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankerConfig:
    """Ranker knobs (from Settings)."""

    exchange: str
    market_type: MarketType
    btc_symbol: str
    window_hours: float = 24.0
    top_n: int = 10
    signal_ttl_minutes: int = 20
    strategy: str = "consensus"
    signal_params: SignalParams = field(default_factory=SignalParams)
    success_lookback_days: float = 30.0  # the journal window behind "historical success"
    # the bars ranked: 1m, or the coarser candles of a store that holds no 1m (docs/data.md)
    timeframe: str = "1m"


@dataclass
class RankReport:
    """What one ranker run did."""

    ranked: int = 0
    excluded: int = 0
    top_movers: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class RankAndPublishSignals:
    """Runs once, globally: rank the universe, ask the panel about the top N, publish."""

    def __init__(
        self,
        store: MarketStore,
        state: StateStore,
        bus: Bus,
        clock: Clock,
        panel: Sequence[Analyst],
        policy: SynthesisPolicy,
        config: RankerConfig,
    ) -> None:
        self._store = store
        self._state = state
        self._bus = bus
        self._clock = clock
        self._panel = list(panel)
        self._policy = policy
        self._config = config
        self._windows: dict[SeriesKey, CandleSeries] = {}
        self._first_seen: dict[SeriesKey, int] = {}

    def run(self) -> RankReport:
        """One ranking round as of the clock's now."""
        now_ms = self._clock.now_ms()
        now = self._clock.now()
        cfg = self._config
        start = now_ms - int(cfg.window_hours * 60) * MINUTE_MS
        keys = [
            k
            for k in self._store.series_keys()
            if k.exchange == cfg.exchange and k.market_type == cfg.market_type
        ]
        series = {k.symbol: bars for k, bars in self._read_windows(keys, start, now_ms).items()}
        btc = series.get(cfg.btc_symbol)
        day_ago = now_ms - 24 * 60 * MINUTE_MS
        funding = self._store.funding_many(keys, day_ago, now_ms)
        interest = self._store.open_interest_many(keys, now_ms - 60 * MINUTE_MS, now_ms)
        features: dict[str, SymbolFeatures] = {
            key.symbol: compute_features(
                series[key.symbol],
                btc_1m=None if key.symbol == cfg.btc_symbol else btc,
                funding=funding[key],
                open_interest=interest[key],
                now_ms=now_ms,
            )
            for key in keys
        }
        ranking = rank_symbols(features, self._success_rates(now), top_n=cfg.top_n)
        report = RankReport(
            ranked=len(ranking.ranked),
            excluded=len(ranking.excluded),
            top_movers=list(ranking.top_movers),
        )
        run_id = stable_id("ranking", cfg.exchange, cfg.market_type, now_ms)
        self._state.set(
            Collections.RANKINGS,
            run_id,
            {
                "id": run_id,
                "as_of_ms": now_ms,
                "created_at": now.isoformat(),
                "ranked": [r.model_dump(mode="json") for r in ranking.ranked],
                "excluded": [r.model_dump(mode="json") for r in ranking.excluded],
            },
        )
        active = self._symbols_with_live_signals(now)
        scores = {r.symbol: r.score for r in ranking.ranked}
        # the top N, then top movers outside it (SPEC: flagged for immediate re-analysis)
        candidates = [r.symbol for r in ranking.ranked] + [
            s for s in ranking.top_movers if s not in scores
        ]
        for symbol in candidates:
            if symbol in active:
                report.skipped[symbol] = "a live signal for this symbol exists"
                continue
            ctx = AnalysisContext(
                symbol=symbol,
                features=features[symbol],
                series_1m=series[symbol],
                btc_1m=btc if symbol != cfg.btc_symbol else None,
            )
            views = [analyst.analyze(ctx) for analyst in self._panel]
            synthesis = self._policy.decide(views, features[symbol])
            if not synthesis.publish or synthesis.direction is None:
                report.skipped[symbol] = synthesis.skipped_reason or "no direction"
                continue
            last_price = features[symbol].last_price
            if last_price is None:
                report.skipped[symbol] = "no closed bar to price the signal"
                continue
            signal = build_signal(
                symbol=symbol,
                exchange=cfg.exchange,
                market_type=cfg.market_type,
                direction=synthesis.direction,
                last_price=last_price,
                features=features[symbol],
                views=views,
                synthesis=synthesis,
                now=now,
                ttl_minutes=cfg.signal_ttl_minutes,
                strategy=cfg.strategy,
                rank_score=scores.get(symbol, 0.0),
                params=cfg.signal_params,
            )
            self._publish(signal)
            report.published.append(signal.id)
        return report

    def _read_windows(
        self, keys: list[SeriesKey], start_ms: int, now_ms: int
    ) -> dict[SeriesKey, CandleSeries]:
        """The bars of ``keys`` in [start, now), reading only bars newer than the ones
        this instance read last time (a ranking every 5 minutes would otherwise re-read
        24 h of every symbol). The collector only appends after a series' last bar, so the
        bars already read never change; a series that starts earlier than cached (an
        import) or moved backwards is read whole again."""
        cached = self._windows
        tf = self._config.timeframe
        reuse = {
            k: c
            for k in keys
            if (c := cached.get(k)) is not None
            and len(c)
            and (rng := self._store.candle_range(k, tf)) is not None
            and rng[0] == self._first_seen.get(k)
            # the cache covers the window's start, or the series starts inside it
            and (int(c.ts_ms[0]) <= start_ms or int(c.ts_ms[0]) == rng[0])
            and int(c.ts_ms[-1]) <= rng[1]
        }
        whole = [k for k in keys if k not in reuse]
        out = dict(self._store.candles_many(whole, tf, start_ms, now_ms)) if whole else {}
        if reuse:
            since = min(int(c.ts_ms[-1]) for c in reuse.values()) + TIMEFRAME_MS[tf]
            newer = self._store.candles_many(list(reuse), tf, since, now_ms)
            for k, c in reuse.items():
                lo = int(np.searchsorted(c.ts_ms, start_ms, side="left"))
                tail = newer[k]
                tail_lo = int(np.searchsorted(tail.ts_ms, int(c.ts_ms[-1]), side="right"))
                out[k] = _joined(c, lo, tail, tail_lo)
        self._windows = {k: out[k] for k in keys}
        self._first_seen = {
            k: rng[0] for k in keys if (rng := self._store.candle_range(k, tf)) is not None
        }
        return {k: out[k] for k in keys}

    def _publish(self, signal: OpportunitySignal) -> None:
        publish_signal(self._state, self._bus, signal)

    def _symbols_with_live_signals(self, now: datetime) -> set[str]:
        return live_signal_symbols(self._state, now)

    def _success_rates(self, now: datetime) -> Mapping[str, float]:
        """Historical win rate per symbol, from the journal's per-trade facts."""
        lookback = timedelta(days=self._config.success_lookback_days)
        return symbol_success_rates(self._state, now, lookback)


def publish_signal(state: StateStore, bus: Bus, signal: OpportunitySignal) -> None:
    """Store the signal (create-if-absent) and publish it on ``signals`` (the ranker's step;
    the backtest calls it too)."""
    doc = signal.model_dump(mode="json")
    if state.create(Collections.SIGNALS, signal.id, doc):
        log.info(
            "signal published: %s %s conf=%.2f rr=%.2f",
            signal.direction,
            signal.symbol,
            signal.confidence,
            signal.reward_risk,
            extra=labels(stage="rank", signal=signal.id, symbol=signal.symbol),
        )
    # publish even when the document existed: a crash between create and publish
    # must not lose the message; consumers dedupe on the signal id.
    # one ordering key per exchange: the dispatcher sees signals in publish order, so
    # each user's executions are queued in the order the ranker found them
    bus.publish(
        Topics.SIGNALS,
        doc,
        dedupe_key=signal.id,
        ordering_key=signal.exchange,
        attributes={"type": "signal", "symbol": signal.symbol},
    )


def live_signal_symbols(state: StateStore, now: datetime) -> set[str]:
    """Symbols with a pending signal that has not expired (the ranker skips them)."""
    docs = state.query(Collections.SIGNALS, [Filter("status", "==", SignalStatus.PENDING.value)])
    return {d["symbol"] for d in docs if datetime.fromisoformat(d["expires_at"]) > now}


_COLUMNS = ("ts_ms", "open", "high", "low", "close", "volume", "taker_buy_volume")


def _joined(head: CandleSeries, head_lo: int, tail: CandleSeries, tail_lo: int) -> CandleSeries:
    """``head[head_lo:]`` followed by ``tail[tail_lo:]``."""
    return CandleSeries(
        head.symbol,
        head.timeframe,
        *(
            np.concatenate([getattr(head, c)[head_lo:], getattr(tail, c)[tail_lo:]])
            for c in _COLUMNS
        ),
    )


__all__ = [
    "RankAndPublishSignals",
    "RankReport",
    "RankerConfig",
    "SeriesKey",
    "live_signal_symbols",
    "publish_signal",
]
