"""The backtest event loop: the pipeline's minute loop, the live use-cases, fast ranking.

Each simulated minute does what ``pipeline._replay`` does at that minute, in the same
order:

1. collect: the bars closed by now become visible; funding and open interest are
   "collected" exactly as the collector does (the newest point as of now, kept when new);
2. rank (every ``rank_interval_minutes`` until ``trade_until``): features per symbol over
   the ranker's window, read by index from ``FeatureSeries`` (arrays computed once per
   series; the values ``compute_features`` gives on the window, bit for bit; no
   look-ahead: only bars closed by now, only funding/OI stamped by now), the SPEC
   ranking (``rank_order``: ``rank_symbols``' order from the fields it scores, so the
   full features are computed only for the symbols analysed) with the symbol win rates
   from the journal (= ``symbol_success_rates``, kept incrementally: ranking_state.py),
   the eight analysts, the synthesizer, signals published with the ranker's own
   ``publish_signal``. A candidate whose 15m regime alone makes the synthesizer skip
   (``regime_vetoes``: ranging) is skipped before its full features and analysts: the
   same decision, nothing else computed. What the ranking reads of a series (its
   inputs, regime and veto at each ranking time) is computed for all ranking times at
   once (``domain/ranking_grid.py``, equal to the scalar methods) and read by index;
3. dispatch + execute per user: the live ``DispatchSignal`` and ``ExecuteSignalForUser``
   (decided once, order styles, Kelly, breakers, scaled entries) on the bus, paper orders
   on the same ``ReplayExchange`` whose ledger lives in the in-memory state store;
4. exits: the live ``ExitMonitor`` cycle (portfolio rules first) every
   ``monitor_interval_seconds`` while a position is open, minus the steps that cannot
   decide anything new (the run's schedule, ``app/monitor_wake.py``), then the live
   evaluator.

Only the ranking is the backtest's own (arrays instead of the market store; the same
domain calls as ``usecases/rank.py``). The pipeline is the reference:
``tests/integration/test_backtest_equivalence.py`` checks that both produce the same
ledger (decisions, orders, fills, positions).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import numpy as np

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.app.backtest.data import MemoryMarketData, release_free_memory
from prometheus_trader.app.backtest.live import CollectedCandles, LiveUseCases
from prometheus_trader.app.backtest.ranking_state import JournalRates, LiveSignals
from prometheus_trader.app.monitor_wake import (
    WAKE_COLLECTIONS,
    WakeInputs,
    breaker_cooldowns,
    next_cycle_ms,
    next_wake_ms,
    wake_inputs,
)
from prometheus_trader.domain.analysts import AnalysisContext, Analyst, default_panel
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.feature_series import FeatureSeries
from prometheus_trader.domain.features import SymbolFeatures, compute_features
from prometheus_trader.domain.journal import JournalEntry
from prometheus_trader.domain.market import (
    MINUTE_MS,
    TIMEFRAME_MS,
    CandleSeries,
    FundingRate,
    OpenInterest,
)
from prometheus_trader.domain.ranking import RankInputs, rank_inputs, rank_order_of
from prometheus_trader.domain.ranking_grid import RankingGrid, ranking_grid
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.synthesizer import (
    SignalParams,
    SynthesisPolicy,
    build_signal,
    regime_veto_mask,
    regime_vetoes,
)
from prometheus_trader.domain.trading import Execution, ExitReason, Position
from prometheus_trader.domain.users import User
from prometheus_trader.ports import SeriesKey, StateStore
from prometheus_trader.usecases.housekeeping import ExpireSignals
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.rank import publish_signal

Progress = Callable[[int, int, str], None]
_GRID_CHUNK = 1024  # ranking times whose inputs are computed at once (_grid)
DAY_MS = 24 * 60 * MINUTE_MS


@dataclass(frozen=True)
class EngineConfig:
    """The knobs of one backtest (mirrors the pipeline's settings)."""

    exchange: str
    btc_symbol: str
    start_ms: int
    trade_until_ms: int
    end_ms: int
    warmup_ms: int
    window_hours: float = 24.0
    top_n: int = 10
    signal_ttl_minutes: int = 20
    strategy: str = "consensus"
    signal_params: SignalParams = field(default_factory=SignalParams)
    rank_interval_minutes: int = 5
    collect_interval_minutes: int = 1
    monitor_interval_ms: int = 2_000
    max_data_age_minutes: float = 3.0
    max_delivery_attempts: int = 5
    success_lookback_days: float = 30.0  # RankerConfig's default


P = TypeVar("P", FundingRate, OpenInterest)


@dataclass
class _Sparse(Generic[P]):
    """Funding or open interest as the collector would have stored it so far."""

    stamps: list[int]
    points: Sequence[P]
    lookback_days: int | None  # open interest: the exchange looks back one UTC day
    collected: list[P] = field(default_factory=list)
    collected_ms: list[int] = field(default_factory=list)  # their times (grows all run)
    next_ms: int = -(2**62)  # ``collect`` before this time changes nothing (time only moves on)

    def collect(self, now_ms: int) -> None:
        i = bisect.bisect_right(self.stamps, now_ms)
        # the next call that can collect something: the next point's time (with the same
        # newest point, a later call appends nothing: it is collected or too old already)
        self.next_ms = self.stamps[i] if i < len(self.stamps) else 2**62
        if not i:
            return
        point = self.points[i - 1]
        if self.lookback_days is not None and point.ts_ms // DAY_MS < now_ms // DAY_MS - 1:
            return
        if not self.collected or point.ts_ms > self.collected[-1].ts_ms:
            self.collected.append(point)
            self.collected_ms.append(point.ts_ms)

    def between(self, start_ms: int, end_ms: int) -> list[P]:
        stamps = self.collected_ms
        return self.collected[
            bisect.bisect_left(stamps, start_ms) : bisect.bisect_right(stamps, end_ms)
        ]


@dataclass(eq=False)
class _Slot:
    """What the ranking keeps of one collected series (read without hashing its key)."""

    key: SeriesKey
    funding: _Sparse[FundingRate] | None
    interest: _Sparse[OpenInterest] | None
    series: FeatureSeries | None = None  # 1m bars: the features at any time
    # 1m bars: the inputs at the ranking times of one chunk (see _grid)
    grid: RankingGrid | None = None
    chunk: int = -1
    # regime_vetoes at the chunk's ranking times (None: not a closed form, asked regime
    # by regime)
    vetoes: list[bool] | None = None
    vetoes_known: bool = False
    # regime_vetoes by the window's complete 15m bars (see _vetoed)
    kept: dict[tuple[int, int], bool] = field(default_factory=dict)


@dataclass
class BacktestResult:
    """Everything a backtest decided, in memory."""

    signals: list[OpportunitySignal] = field(default_factory=list)
    executions: dict[str, Execution] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    journal: list[JournalEntry] = field(default_factory=list)
    rankings: int = 0
    monitor_cycles: int = 0


class BacktestEngine:
    """One backtest over ``data`` for ``users`` (see the module docstring)."""

    def __init__(
        self,
        data: MemoryMarketData,
        exchange: ReplayExchange,
        clock: SimulatedClock,
        users: Sequence[User],
        policy: SynthesisPolicy,
        config: EngineConfig,
        *,
        exit_config: ExitConfig | None = None,
        panel: Sequence[Analyst] | None = None,
        state: StateStore | None = None,
    ) -> None:
        self.data = data
        self.exchange = exchange
        self.clock = clock
        self.users = sorted(users, key=lambda u: u.user_id)
        self.policy = policy
        self.cfg = config
        self.panel = list(panel) if panel is not None else default_panel()
        self._exits = exit_config or ExitConfig()
        self.result = BacktestResult()
        self._keys = data.series_keys()
        self._bar_ms = TIMEFRAME_MS[data.timeframe]
        self._collect_from = config.start_ms - config.warmup_ms
        self._features: dict[SeriesKey, FeatureSeries] = {}
        # the ranker's two state reads, answered from what this engine published and
        # the journal entries closed since the last ranking (app/backtest/ranking_state.py)
        self._live_signals = LiveSignals()
        self._journal_rates = JournalRates()
        # the ranking times and each ranking's window start, known before the run: the
        # ranking inputs of every series at all of them are computed at once (_grid)
        minutes = np.arange(config.start_ms, config.trade_until_ms, MINUTE_MS, dtype=np.int64)
        times = minutes[(minutes // MINUTE_MS) % config.rank_interval_minutes == 0]
        self._rank_times = times
        self._rank_since = np.maximum(
            times - int(config.window_hours * 60) * MINUTE_MS, self._collect_from
        )
        self._rank_index = {t: i for i, t in enumerate(times.tolist())}
        self._collected_keys: set[SeriesKey] = set()
        self._slots: list[_Slot] = []  # the collected series, in the order of _keys
        self._funding: dict[SeriesKey, _Sparse[FundingRate]] = {
            k: _Sparse([p.ts_ms for p in pts], pts, None)
            for k in self._keys
            if (pts := data.funding(k, 0, 2**62))
        }
        self._interest: dict[SeriesKey, _Sparse[OpenInterest]] = {
            k: _Sparse([p.ts_ms for p in ois], ois, 1)
            for k in self._keys
            if (ois := data.open_interest(k, 0, 2**62))
        }
        self._sparse: list[_Sparse[FundingRate] | _Sparse[OpenInterest]] = [
            *self._funding.values(),
            *self._interest.values(),
        ]
        self._collect_due = -(2**62)  # the earliest ``next_ms`` of them (see _collect)
        # the live use-cases, over the store the paper exchange keeps its ledger in
        self.live = LiveUseCases.wire(
            state if state is not None else MemoryStateStore(),
            exchange,
            clock,
            CollectedCandles(self._last_collected),
            exit_config=self._exits,
            max_data_age_minutes=config.max_data_age_minutes,
            max_delivery_attempts=config.max_delivery_attempts,
            bar_timeframe=data.timeframe,
        )
        for user in self.users:
            self.live.state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        self._expire = ExpireSignals(self.live.state, clock)
        # the store's write count after an idle monitor cycle (see _monitor_minute)
        self._idle_writes: int | None = None
        self._wake_cache: tuple[tuple[int, ...], WakeInputs] | None = None
        self._cooldown_cache: tuple[tuple[tuple[int, ...], frozenset[str]], list[int]] | None = None

    # ================================================================ the loop
    def run(self, progress: Progress | None = None) -> BacktestResult:
        """Replay [start, end) as ``pipeline._replay`` does; returns what was decided."""
        cfg = self.cfg
        live = self.live
        total = (cfg.end_ms - cfg.start_ms) // MINUTE_MS
        t = cfg.start_ms
        step_every = max(1, total // 200)
        live.monitor.reconcile()
        while t < cfg.end_ms:
            self.clock.set_ms(t)
            minute = t // MINUTE_MS
            if minute % cfg.collect_interval_minutes == 0:
                self._collect(t)
            if t < cfg.trade_until_ms and minute % cfg.rank_interval_minutes == 0:
                # as the pipeline's housekeeping (each minute, before the ranker): no
                # decision reads the status, but the ranker's pending-signal query would
                # otherwise return every signal of the run (293 on the month)
                self._expire.run()
                for signal in self._rank(t):
                    publish_signal(live.state, live.bus, signal)
                live.bus.drain_all()  # dispatch + execute
            self._monitor_minute(t)
            if minute % 60 == 59:  # memory only: nothing read decides differently
                self._forget(t + MINUTE_MS)
            t += MINUTE_MS
            done = (t - cfg.start_ms) // MINUTE_MS
            if progress is not None and (done % step_every == 0 or done == total):
                progress(done, total, "backtest")
        self.clock.set_ms(max(cfg.end_ms, self.clock.now_ms()))
        live.monitor.close_all(ExitReason.END_OF_DATA, {"end_ms": cfg.end_ms})
        live.bus.drain_all()
        self._results()
        return self.result

    def _monitor_minute(self, t: int) -> None:
        """The worker's cycles inside minute ``t`` (stops once nothing is open), minus the
        steps that cannot decide anything new: the run's schedule (app/monitor_wake.py)."""
        monitor = self.live.monitor
        writes = getattr(self.live.state, "writes", None)  # MemoryStateStore's count
        if writes is not None and writes == self._idle_writes:
            # the last cycle found nothing open and nothing pending (``idle``) and no
            # document changed since: this one would only write the heartbeat
            monitor.skipped_until(t)  # its trade cursor, as after a cycle at t
            return
        self._idle_writes = None
        interval = self.cfg.monitor_interval_ms
        step = t
        while step < t + MINUTE_MS:
            self.clock.set_ms(step)
            report = monitor.cycle()
            self.live.bus.drain_all()  # evaluate
            self.result.monitor_cycles += 1
            if report.positions == 0 and not report.failed and monitor.idle():
                self._idle_writes = getattr(self.live.state, "writes", None)
            if report.positions == 0 or report.positions == len(report.closed):
                return
            if report.closed or report.failed:
                step += interval
                continue
            wake = next_wake_ms(
                self.live.state,
                self.exchange,
                self._exits,
                step,
                t + MINUTE_MS,
                self._wake_inputs(),
            )
            step = next_cycle_ms(step, wake, interval, t)
            monitor.skipped_until(step - interval)

    def _wake_inputs(self) -> WakeInputs | None:
        """``wake_inputs`` of the store, read again only after a write to a collection it
        reads (None: the store has no versions; ``next_wake_ms`` reads them). Every cycle
        writes its heartbeat, so the store's total write count never repeated here."""
        version = getattr(self.live.state, "version", None)
        if version is None:
            return None
        key = version(*WAKE_COLLECTIONS)
        if self._wake_cache is None or self._wake_cache[0] != key:
            inputs = wake_inputs(self.live.state, self._exits, self._cooldowns)
            self._wake_cache = (key, inputs)
        return self._wake_cache[1]

    def _cooldowns(self, state: StateStore, user_ids: set[str]) -> list[int]:
        """``breaker_cooldowns``, read again only after a write to the users or stats (a
        tracking write changes the positions, and so the wake inputs, far more often)."""
        version = getattr(state, "version", None)
        if version is None:
            return breaker_cooldowns(state, user_ids)
        key = (version(Collections.USERS, Collections.STATS), frozenset(user_ids))
        if self._cooldown_cache is None or self._cooldown_cache[0] != key:
            self._cooldown_cache = (key, breaker_cooldowns(state, user_ids))
        return list(self._cooldown_cache[1])

    def _forget(self, now_ms: int) -> None:
        """Drop the exchange's cached trade hours that are past, and hand the freed pages
        back to the system (the month's peak RSS followed the caches and the heap's free
        pages, not what the run keeps)."""
        forget = getattr(self.exchange, "forget_before", None)
        if forget is not None:
            forget(now_ms)
        release_free_memory()

    # ================================================================ collect
    def _collect(self, now_ms: int) -> None:
        """Funding and open interest as the collector stores them by ``now_ms``: only the
        series whose next point is due (a point every 5 minutes or 8 hours; the minutes
        between collect nothing)."""
        if now_ms < self._collect_due:
            return
        due = 2**62
        for sparse in self._sparse:
            if now_ms >= sparse.next_ms:
                sparse.collect(now_ms)
            due = min(due, sparse.next_ms)
        self._collect_due = due

    def _window(self, key: SeriesKey, start_ms: int, now_ms: int) -> CandleSeries:
        """The collected bars (1m, or the data's coarser timeframe) of ``key`` with
        ``start <= ts`` closed by now."""
        series = self.data.series[key]
        lo = int(series.ts_ms.searchsorted(max(start_ms, self._collect_from), side="left"))
        hi = int(series.ts_ms.searchsorted(now_ms - self._bar_ms, side="right"))
        return series.rows(lo, max(lo, hi))

    def _last_collected_ms(self, key: SeriesKey, now_ms: int) -> int | None:
        window = self._window(key, self._collect_from, now_ms)
        return int(window.ts_ms[-1]) if len(window) else None

    def _has_collected(self, key: SeriesKey, now_ms: int) -> bool:
        """Whether ``_last_collected_ms(key, now_ms)`` is not None (without the window)."""
        ts = self.data.series[key].ts_ms
        lo = int(ts.searchsorted(self._collect_from, side="left"))
        return int(ts.searchsorted(now_ms - self._bar_ms, side="right")) > lo

    def _last_collected(self, key: SeriesKey) -> int | None:
        if key not in self.data.series:
            return None
        return self._last_collected_ms(key, self.clock.now_ms())

    # ================================================================ rank
    def _feature_series(self, key: SeriesKey) -> FeatureSeries:
        """The series' features at any time (arrays computed on first use)."""
        fs = self._features.get(key)
        if fs is None:
            fs = self._features[key] = FeatureSeries(self.data.series[key])
        return fs

    def _grid(self, slot: _Slot, index: int) -> tuple[RankingGrid, int]:
        """The series' grid holding ranking ``index``, and the index in it: computed for
        ``_GRID_CHUNK`` ranking times at once (memory stays flat in the run's length;
        rankings only move forward, an older chunk would be computed again, equal)."""
        chunk = index // _GRID_CHUNK
        if slot.grid is None or slot.chunk != chunk:
            c0, c1 = chunk * _GRID_CHUNK, (chunk + 1) * _GRID_CHUNK
            slot.grid = ranking_grid(
                self._series(slot), self._rank_times[c0:c1], self._rank_since[c0:c1]
            )
            slot.chunk = chunk
            slot.vetoes, slot.vetoes_known = None, False
        return slot.grid, index - chunk * _GRID_CHUNK

    def _series(self, slot: _Slot) -> FeatureSeries:
        if slot.series is None:
            slot.series = self._feature_series(slot.key)
        return slot.series

    def _collected_slots(self, now_ms: int) -> list[_Slot]:
        """The series collected by now (once collected, always: time only moves on)."""
        collected = self._collected_keys
        if len(collected) < len(self._keys):
            grew = False
            for k in self._keys:
                if k not in collected and self._has_collected(k, now_ms):
                    collected.add(k)
                    grew = True
            if grew:
                kept = {slot.key: slot for slot in self._slots}
                self._slots = [
                    kept.get(k) or _Slot(k, self._funding.get(k), self._interest.get(k))
                    for k in self._keys
                    if k in collected
                ]
        return self._slots

    def _rank(self, now_ms: int) -> list[OpportunitySignal]:
        cfg = self.cfg
        now = self.clock.now()
        start = now_ms - int(cfg.window_hours * 60) * MINUTE_MS
        slots = self._collected_slots(now_ms)
        since = max(start, self._collect_from)
        btc_slot = next((slot for slot in slots if slot.key.symbol == cfg.btc_symbol), None)
        btc_key = None if btc_slot is None else btc_slot.key
        one_minute = self.data.timeframe == "1m"
        btc_series = None if btc_slot is None or not one_minute else self._series(btc_slot)
        day_ago = now_ms - 24 * 60 * MINUTE_MS
        hour_ago = now_ms - 60 * MINUTE_MS
        # the ranking reads a few features of every symbol (ranking.RANKING_FIELDS): on 1m
        # bars those alone, from the grid of every ranking time (or ranking_at), the full
        # features only for the symbols analysed below, each equal to compute_features'
        features: dict[str, SymbolFeatures] = {}
        inputs: dict[str, RankInputs] = {}  # what the ranking reads of each
        # 1m: funding and the hour's open interest, read if analysed
        sparse: dict[str, tuple[_Sparse[FundingRate] | None, list[OpenInterest]]] = {}
        by_symbol: dict[str, _Slot] = {}  # = next(k for k in keys if k.symbol == symbol)
        index = self._rank_index.get(now_ms)  # the ranking's index in the grids
        for slot in slots:
            key = slot.key
            symbol = key.symbol
            by_symbol.setdefault(symbol, slot)
            funding, interest = slot.funding, slot.interest
            interest_hour = [] if interest is None else interest.between(hour_ago, now_ms)
            if not one_minute:  # coarse bars: the window, as the live ranker
                funding_day = [] if funding is None else funding.between(day_ago, now_ms)
                features[symbol] = compute_features(
                    self._window(key, start, now_ms),
                    btc_1m=None
                    if btc_key is None or symbol == cfg.btc_symbol
                    else self._window(btc_key, start, now_ms),
                    funding=funding_day,
                    open_interest=interest_hour,
                    now_ms=now_ms,
                )
                inputs[symbol] = rank_inputs(features[symbol])
                continue
            sparse[symbol] = (funding, interest_hour)
            if index is not None and len(interest_hour) < 2:
                # = rank_inputs(ranking_at(...)): with fewer than two open-interest
                # points the cluster ratio is None, the rest is the grid's
                grid, i = self._grid(slot, index)
                inputs[symbol] = grid.inputs[i]
                continue
            inputs[symbol] = rank_inputs(
                self._series(slot).ranking_at(now_ms, since_ms=since, open_interest=interest_hour)
            )
        lookback = timedelta(days=cfg.success_lookback_days)
        rates = self._journal_rates.rates(self.live.state, now, lookback)  # = symbol_success_rates
        # = rank_symbols(features, rates, top_n): its top N (with scores) and top movers
        ranked, top_movers = rank_order_of(inputs, rates, top_n=cfg.top_n)
        self.result.rankings += 1
        active = self._live_signals.symbols(now)  # = live_signal_symbols(state, now)
        scores = dict(ranked)
        candidates = [symbol for symbol, _ in ranked] + [s for s in top_movers if s not in scores]
        signals: list[OpportunitySignal] = []
        for symbol in candidates:
            if symbol in active:
                continue
            slot = by_symbol[symbol]
            key = slot.key
            if symbol in sparse:
                series = self._series(slot)
                # a regime that rules out a signal whatever the rest: decide() would skip
                if self._vetoed(slot, now_ms, since, index):
                    continue
                # = compute_features(the window, btc_1m=BTC's window, ...), read by index
                if index is not None:
                    grid, i = self._grid(slot, index)
                    if grid.has[i]:  # its imbalances of this window: at() reads them
                        lo, hi = int(grid.lo[i]), int(grid.hi[i])
                        series.keep_imbalances(lo, hi, grid.imbalances(i))
                funding, interest_hour = sparse[symbol]
                funding_day = [] if funding is None else funding.between(day_ago, now_ms)
                features[symbol] = series.at(
                    now_ms,
                    since_ms=since,
                    btc=None if symbol == cfg.btc_symbol else btc_series,
                    funding=funding_day,
                    open_interest=interest_hour,
                )
            ctx = AnalysisContext(
                symbol=symbol,
                features=features[symbol],
                series_1m=self._window(key, start, now_ms),
                btc_1m=None
                if btc_key is None or symbol == cfg.btc_symbol
                else self._window(btc_key, start, now_ms),
            )
            views = [analyst.analyze(ctx) for analyst in self.panel]
            synthesis = self.policy.decide(views, features[symbol])
            if not synthesis.publish or synthesis.direction is None:
                continue
            last_price = features[symbol].last_price
            if last_price is None:
                continue
            signal = build_signal(
                symbol=symbol,
                exchange=cfg.exchange,
                market_type=key.market_type,
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
            if any(s.id == signal.id for s in signals):
                continue
            self.result.signals.append(signal)
            self._live_signals.published(signal)
            signals.append(signal)
        return signals

    def _vetoed(self, slot: _Slot, now_ms: int, since: int, index: int | None) -> bool:
        """``regime_vetoes(policy, panel, the regime at now)``: at a ranking time of the
        grid, ``regime_veto_mask`` of its regime fields (all times at once); otherwise a
        function of the regime fields, which are a function of the window's complete 15m
        bars (``regime_bars``): kept per series and bars for the whole run."""
        series = self._series(slot)
        if index is not None:
            grid, i = self._grid(slot, index)
            if not slot.vetoes_known:
                adx, plus_di, minus_di, hurst, _, mean_reversion = grid.regime
                mask = regime_veto_mask(
                    self.policy, self.panel, adx, plus_di, minus_di, hurst, mean_reversion
                )
                slot.vetoes = None if mask is None else mask.tolist()
                slot.vetoes_known = True
            if slot.vetoes is not None and grid.has[i]:
                return slot.vetoes[i]
        bars = series.regime_bars(now_ms, since_ms=since)
        if bars is None:
            return regime_vetoes(self.policy, self.panel, series.regime_at(now_ms, since_ms=since))
        vetoed = slot.kept.get(bars)
        if vetoed is None:
            regime = series.regime_at(now_ms, since_ms=since)
            vetoed = slot.kept[bars] = regime_vetoes(self.policy, self.panel, regime)
        return vetoed

    # ================================================================ results
    def _results(self) -> None:
        """The decisions, positions and journal, as the live use-cases stored them."""
        state = self.live.state
        result = self.result
        result.executions = {
            d["id"]: Execution.model_validate(d)
            for d in sorted(state.query(Collections.EXECUTIONS), key=lambda d: d["id"])
        }
        result.positions = {
            d["id"]: Position.model_validate(d)
            for d in sorted(state.query(Collections.POSITIONS), key=lambda d: d["id"])
        }
        result.journal = [
            JournalEntry.model_validate(d)
            for d in sorted(state.query(Collections.JOURNAL), key=lambda d: d["position_id"])
        ]


def utc(ms: int) -> datetime:
    """A ms timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


__all__ = ["BacktestEngine", "BacktestResult", "EngineConfig", "utc"]
