"""The backtest event loop: the pipeline's semantics, the live domain code, no I/O per event.

Each simulated minute does what the embedded pipeline does at that minute, in the same
order, but calls the domain directly and keeps every document in memory:

1. collect: the bars closed by now become visible; funding and open interest are
   "collected" exactly as the collector does (the newest point as of now, kept when new);
2. rank (every ``rank_interval_minutes`` until ``trade_until``): features per symbol over
   the ranker's window, read by index from arrays loaded once (no look-ahead: only bars
   closed by now, only funding/OI stamped by now), the SPEC ranking with the symbol win
   rates of the trades closed so far, the eight analysts, the synthesizer, signals;
3. dispatch + execute per user: ``plan_trade``, ``evaluate_risk`` with the same risk
   context the executor builds, paper orders on the same ``ReplayExchange`` (fees,
   slippage, latency and resting stop / take-profit orders);
4. exits: the exit monitor's cycle every ``monitor_interval_seconds`` while a position is
   open, on the same trade stream (``poll_trades``) and the same ``evaluate_exit``; a
   minute with no open position costs nothing.

The pipeline is the reference: ``tests/integration/test_backtest_equivalence.py`` checks
that both produce the same ledger (decisions, orders, fills, positions).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

import numpy as np

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.app.backtest.data import MemoryMarketData, slice_series
from prometheus_trader.domain.analysts import AnalysisContext, Analyst, default_panel
from prometheus_trader.domain.evaluation import evaluate_trade
from prometheus_trader.domain.exits import ExitConfig, TradeWindow, evaluate_exit
from prometheus_trader.domain.features import SymbolFeatures, compute_features
from prometheus_trader.domain.ids import client_order_id, execution_id
from prometheus_trader.domain.journal import JournalEntry
from prometheus_trader.domain.market import (
    MINUTE_MS,
    CandleSeries,
    FundingRate,
    Instrument,
    OpenInterest,
    Side,
)
from prometheus_trader.domain.planner import plan_trade
from prometheus_trader.domain.ranking import rank_symbols
from prometheus_trader.domain.risk import RiskContext, evaluate_risk
from prometheus_trader.domain.signals import Direction, OpportunitySignal
from prometheus_trader.domain.synthesizer import SignalParams, SynthesisPolicy, build_signal
from prometheus_trader.domain.trading import (
    DecisionOutcome,
    Execution,
    ExitReason,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
    RiskDecision,
    TradePlan,
)
from prometheus_trader.domain.users import TradingMode, User
from prometheus_trader.ports import OrderRejected, SeriesKey
from prometheus_trader.usecases.stats import UserStats

Progress = Callable[[int, int, str], None]
WINDOW_MS = 15 * MINUTE_MS  # the exit monitor's first look-back
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


P = TypeVar("P", FundingRate, OpenInterest)


@dataclass
class _Sparse(Generic[P]):
    """Funding or open interest as the collector would have stored it so far."""

    stamps: list[int]
    points: Sequence[P]
    lookback_days: int | None  # open interest: the exchange looks back one UTC day
    collected: list[P] = field(default_factory=list)

    def collect(self, now_ms: int) -> None:
        i = bisect.bisect_right(self.stamps, now_ms)
        if not i:
            return
        point = self.points[i - 1]
        if self.lookback_days is not None and point.ts_ms // DAY_MS < now_ms // DAY_MS - 1:
            return
        if not self.collected or point.ts_ms > self.collected[-1].ts_ms:
            self.collected.append(point)

    def between(self, start_ms: int, end_ms: int) -> list[P]:
        stamps = [p.ts_ms for p in self.collected]
        return self.collected[
            bisect.bisect_left(stamps, start_ms) : bisect.bisect_right(stamps, end_ms)
        ]


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
    ) -> None:
        self.data = data
        self.exchange = exchange
        self.clock = clock
        self.users = sorted(users, key=lambda u: u.user_id)
        self._users_by_id = {u.user_id: u for u in self.users}
        self.policy = policy
        self.cfg = config
        self.exit_config = exit_config or ExitConfig()
        self.panel = list(panel) if panel is not None else default_panel()
        self.result = BacktestResult()
        self._keys = data.series_keys()
        self._collect_from = config.start_ms - config.warmup_ms
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
        self._live_until: dict[str, datetime] = {}  # symbol → newest signal's expiry
        self._open: dict[str, Position] = {}
        self._stats: dict[str, UserStats] = {}
        self._symbol_stats: dict[str, tuple[int, int]] = {}
        self._instruments: dict[str, Instrument] = {}
        self._windows: dict[str, TradeWindow] = {}
        self._cursor_ms: int | None = None
        self._signals: dict[str, OpportunitySignal] = {}

    # ================================================================ the loop
    def run(self, progress: Progress | None = None) -> BacktestResult:
        """Replay [start, end): returns the decisions, positions and journal."""
        cfg = self.cfg
        total = (cfg.end_ms - cfg.start_ms) // MINUTE_MS
        t = cfg.start_ms
        step_every = max(1, total // 200)
        while t < cfg.end_ms:
            self.clock.set_ms(t)
            minute = t // MINUTE_MS
            if minute % cfg.collect_interval_minutes == 0:
                self._collect(t)
            if t < cfg.trade_until_ms and minute % cfg.rank_interval_minutes == 0:
                for signal in self._rank(t):
                    self._dispatch(signal)
            self._monitor_minute(t)
            t += MINUTE_MS
            done = (t - cfg.start_ms) // MINUTE_MS
            if progress is not None and (done % step_every == 0 or done == total):
                progress(done, total, "backtest")
        self.clock.set_ms(max(cfg.end_ms, self.clock.now_ms()))
        for position in sorted(self._open.values(), key=lambda p: p.id):
            if not self._closed_on_exchange(position):
                self._close(position, ExitReason.END_OF_DATA, {"end_ms": cfg.end_ms})
        return self.result

    # ================================================================ collect
    def _collect(self, now_ms: int) -> None:
        for sparse in self._funding.values():
            sparse.collect(now_ms)
        for points in self._interest.values():
            points.collect(now_ms)

    def _window(self, key: SeriesKey, start_ms: int, now_ms: int) -> CandleSeries:
        """The collected 1m bars of ``key`` with ``start <= ts`` closed by now."""
        series = self.data.series[key]
        lo = int(np.searchsorted(series.ts_ms, max(start_ms, self._collect_from), side="left"))
        hi = int(np.searchsorted(series.ts_ms, now_ms - MINUTE_MS, side="right"))
        return slice_series(series, lo, max(lo, hi))

    def _last_collected_ms(self, key: SeriesKey, now_ms: int) -> int | None:
        window = self._window(key, self._collect_from, now_ms)
        return int(window.ts_ms[-1]) if len(window) else None

    # ================================================================ rank
    def _rank(self, now_ms: int) -> list[OpportunitySignal]:
        cfg = self.cfg
        now = self.clock.now()
        start = now_ms - int(cfg.window_hours * 60) * MINUTE_MS
        keys = [k for k in self._keys if self._last_collected_ms(k, now_ms) is not None]
        series = {k.symbol: self._window(k, start, now_ms) for k in keys}
        btc = series.get(cfg.btc_symbol)
        day_ago = now_ms - 24 * 60 * MINUTE_MS
        features: dict[str, SymbolFeatures] = {}
        for key in keys:
            funding = self._funding.get(key)
            interest = self._interest.get(key)
            features[key.symbol] = compute_features(
                series[key.symbol],
                btc_1m=None if key.symbol == cfg.btc_symbol else btc,
                funding=[] if funding is None else funding.between(day_ago, now_ms),
                open_interest=[]
                if interest is None
                else interest.between(now_ms - 60 * MINUTE_MS, now_ms),
                now_ms=now_ms,
            )
        rates = {s: wins / trades for s, (trades, wins) in self._symbol_stats.items() if trades}
        ranking = rank_symbols(features, rates, top_n=cfg.top_n)
        self.result.rankings += 1
        active = {s for s, until in self._live_until.items() if until > now}
        scores = {r.symbol: r.score for r in ranking.ranked}
        candidates = [r.symbol for r in ranking.ranked] + [
            s for s in ranking.top_movers if s not in scores
        ]
        signals: list[OpportunitySignal] = []
        for symbol in candidates:
            if symbol in active:
                continue
            ctx = AnalysisContext(
                symbol=symbol,
                features=features[symbol],
                series_1m=series[symbol],
                btc_1m=btc if symbol != cfg.btc_symbol else None,
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
                market_type=next(k.market_type for k in keys if k.symbol == symbol),
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
            self._live_until[symbol] = max(
                signal.expires_at, self._live_until.get(symbol, signal.expires_at)
            )
            self.result.signals.append(signal)
            self._signals[signal.id] = signal
            signals.append(signal)
        return signals

    # ================================================================ dispatch + execute
    def _dispatch(self, signal: OpportunitySignal) -> None:
        now = self.clock.now()
        if signal.is_expired(now):
            return
        for user in self.users:
            if not user.active or user.paused or not user.watch_all:
                continue
            self._execute(signal, user)

    def _execute(self, signal: OpportunitySignal, user: User) -> None:
        exec_id = execution_id(signal.id, user.user_id)
        if exec_id in self.result.executions:
            return
        now = self.clock.now()
        decision = self._decide(signal, user)
        error: str | None = None
        try:
            outcome, order_ids, position_id = self._act(signal, user, decision, exec_id)
        except OrderRejected as exc:
            outcome, order_ids, position_id, error = DecisionOutcome.REJECTED, [], None, str(exc)
        self.result.executions[exec_id] = Execution(
            id=exec_id,
            signal_id=signal.id,
            user_id=user.user_id,
            symbol=signal.symbol,
            outcome=outcome,
            reasons=decision.reasons,
            decision=decision,
            order_ids=order_ids,
            position_id=position_id,
            error=error,
            created_at=now,
            completed_at=self.clock.now(),
        )

    def _instrument(self, symbol: str) -> Instrument:
        if symbol not in self._instruments:
            self._instruments = {m.symbol: m for m in self.exchange.load_markets()}
        return self._instruments[symbol]

    def _decide(self, signal: OpportunitySignal, user: User) -> RiskDecision:
        instrument = self._instrument(signal.symbol)
        balance = self.exchange.fetch_balance(user.exchange_account)
        plan = plan_trade(signal, user, instrument, balance.equity)
        now = self.clock.now()
        stats = self._stats.get(user.user_id) or UserStats(user_id=user.user_id)
        stats = stats.rolled_to(now, balance.equity)
        now_ms = self.clock.now_ms()
        key = SeriesKey(signal.exchange, signal.market_type, signal.symbol)
        last = self._last_collected_ms(key, now_ms) if key in self.data.series else None
        age_s = float("inf") if last is None else (now_ms - (last + MINUTE_MS)) / 1000
        context = RiskContext(
            now=now,
            equity=balance.equity,
            free_margin=balance.free,
            open_positions=sorted(
                (p for p in self._open.values() if p.user_id == user.user_id), key=lambda p: p.id
            ),
            day_start_equity=stats.day_start_equity,
            peak_equity=max(stats.peak_equity, balance.equity),
            realized_pnl_today_pct=stats.realized_pnl_today_pct,
            consecutive_losses=stats.consecutive_losses,
            data_quality_ok=last is not None,
            data_age_s=max(0.0, min(age_s, 1e9)),
            max_data_age_s=self.cfg.max_data_age_minutes * 60,
        )
        return evaluate_risk(signal, plan, user, context, instrument)

    def _act(
        self, signal: OpportunitySignal, user: User, decision: RiskDecision, exec_id: str
    ) -> tuple[DecisionOutcome, list[str], str | None]:
        if not decision.approved or decision.plan is None:
            return DecisionOutcome.REJECTED, [], None
        if user.mode is TradingMode.ADVISORY:
            return DecisionOutcome.ADVISED, [], None
        position = self._open_position(signal, user, decision.plan, exec_id)
        order_ids = [position.entry_order_id, *filter(None, [position.stop_order_id])]
        order_ids += position.take_profit_order_ids
        return DecisionOutcome.ACCEPTED, order_ids, position.id

    def _open_position(
        self, signal: OpportunitySignal, user: User, plan: TradePlan, exec_id: str
    ) -> Position:
        account = user.exchange_account
        entry_leg = next(o for o in plan.orders if o.leg == "entry")
        entry = self.exchange.create_order(
            account,
            OrderRequest(
                client_order_id=client_order_id(signal.id, user.user_id, "entry"),
                symbol=signal.symbol,
                side=entry_leg.side,
                type=entry_leg.type,
                amount=entry_leg.amount,
                price=entry_leg.price,
                leverage=plan.leverage,
            ),
        )
        if entry.filled <= 0 or entry.average is None:
            raise RuntimeError(f"entry order {entry.id} not filled ({entry.status})")
        stop_id: str | None = None
        tp_ids: list[str] = []
        try:
            for leg in plan.orders:
                if leg.leg == "entry":
                    continue
                order = self.exchange.create_order(
                    account,
                    OrderRequest(
                        client_order_id=client_order_id(signal.id, user.user_id, leg.leg),
                        symbol=signal.symbol,
                        side=leg.side,
                        type=leg.type,
                        amount=min(leg.amount, entry.filled),
                        price=leg.price,
                        stop_price=leg.stop_price,
                        reduce_only=True,
                    ),
                )
                if leg.type is OrderType.STOP_MARKET:
                    stop_id = order.id
                else:
                    tp_ids.append(order.id)
            if stop_id is None:
                raise RuntimeError("plan has no stop-loss leg")
        except Exception:
            side = Side.SELL if entry.side is Side.BUY else Side.BUY
            self.exchange.create_order(
                account,
                OrderRequest(
                    client_order_id=client_order_id(signal.id, user.user_id, "flatten"),
                    symbol=signal.symbol,
                    side=side,
                    type=OrderType.MARKET,
                    amount=entry.filled,
                    reduce_only=True,
                ),
            )
            raise
        assert plan.stop_loss is not None  # the gate refuses plans without one
        position = Position(
            id=exec_id,
            user_id=user.user_id,
            signal_id=signal.id,
            exchange=signal.exchange,
            market_type=signal.market_type,
            symbol=signal.symbol,
            direction=signal.direction,
            amount=entry.filled,
            entry_price=entry.average,
            entry_fee=entry.fee,
            leverage=plan.leverage,
            stop_loss=plan.stop_loss,
            take_profits=plan.take_profits,
            trailing_stop_pct=user.limits.trailing_stop_pct,
            best_price=entry.average,
            worst_price=entry.average,
            stop_order_id=stop_id,
            take_profit_order_ids=tp_ids,
            entry_order_id=entry.id,
            opened_at=self.clock.now(),
            opened_ms=entry.updated_ms,
            max_hold_minutes=user.limits.max_hold_minutes,
        )
        self._open[position.id] = position
        self.result.positions[position.id] = position
        return position

    # ================================================================ exits
    def _monitor_minute(self, t: int) -> None:
        """The worker's cycles inside minute ``t`` (stops once nothing is open)."""
        step = t
        while step < t + MINUTE_MS:
            self.clock.set_ms(step)
            positions = sorted(self._open.values(), key=lambda p: p.id)
            closed = 0
            if positions:
                self.result.monitor_cycles += 1
                symbols = sorted({p.symbol for p in positions})
                after = step - WINDOW_MS if self._cursor_ms is None else self._cursor_ms
                for trade in self.exchange.poll_trades(symbols, after):
                    window = self._windows.get(trade.symbol)
                    if window is None:
                        window = self._windows[trade.symbol] = TradeWindow(trade.symbol)
                    window.add([trade])
                for window in self._windows.values():
                    window.prune(step)
                for position in positions:
                    if self._check(position, step, after):
                        closed += 1
            self._cursor_ms = step
            if not positions or closed == len(positions):
                return
            step += self.cfg.monitor_interval_ms

    def _check(self, position: Position, now_ms: int, since_ms: int) -> bool:
        if self._closed_on_exchange(position):
            return True
        user = self._users_by_id.get(position.user_id)
        if user is not None and user.kill_switch:
            self._close(position, ExitReason.KILL_SWITCH, {"kill_switch": "on"})
            return True
        window = self._windows.get(position.symbol)
        if window is None or window.last_price(now_ms) is None:
            return False
        evaluation = evaluate_exit(position, window, now_ms, self.exit_config, since_ms=since_ms)
        if evaluation.exit is not None:
            self._close(position, evaluation.exit.reason, evaluation.exit.detail)
            return True
        changes: dict[str, object] = {}
        if evaluation.best_price != position.best_price:
            changes["best_price"] = evaluation.best_price
        if evaluation.worst_price != position.worst_price:
            changes["worst_price"] = evaluation.worst_price
        if evaluation.trail_stop != position.trail_stop:
            changes["trail_stop"] = evaluation.trail_stop
        if changes:
            updated = position.model_copy(update=changes)
            self._open[position.id] = updated
            self.result.positions[position.id] = updated
        return False

    def _account(self, user_id: str) -> str:
        user = self._users_by_id.get(user_id)
        return user.exchange_account if user else user_id

    def _closed_on_exchange(self, position: Position) -> bool:
        account = self._account(position.user_id)
        for order_id, reason in [
            *([(position.stop_order_id, ExitReason.STOP_LOSS)] if position.stop_order_id else []),
            *((tp, ExitReason.TAKE_PROFIT) for tp in position.take_profit_order_ids),
        ]:
            order = self.exchange.fetch_order(account, order_id)
            if order.status is OrderStatus.FILLED and order.average is not None:
                self._cancel_protective(position, keep=order.id)
                self._record_close(
                    position, order, reason, {"trigger": order.stop_price or 0.0, "by": "exchange"}
                )
                return True
        return False

    def _cancel_protective(self, position: Position, keep: str | None = None) -> None:
        account = self._account(position.user_id)
        for order_id in [position.stop_order_id, *position.take_profit_order_ids]:
            if order_id and order_id != keep:
                order = self.exchange.fetch_order(account, order_id)
                if order.status is OrderStatus.OPEN:
                    self.exchange.cancel_order(account, order_id)

    def _close(
        self, position: Position, reason: ExitReason, detail: dict[str, float | str]
    ) -> None:
        self._cancel_protective(position)
        if self._closed_on_exchange(position):
            return
        side = Side.SELL if position.direction is Direction.LONG else Side.BUY
        order = self.exchange.create_order(
            self._account(position.user_id),
            OrderRequest(
                client_order_id=client_order_id(position.signal_id, position.user_id, "exit"),
                symbol=position.symbol,
                side=side,
                type=OrderType.MARKET,
                amount=position.amount,
                reduce_only=True,
            ),
        )
        self._record_close(position, order, reason, detail)

    def _record_close(
        self, position: Position, order: Order, reason: ExitReason, detail: dict[str, float | str]
    ) -> None:
        if order.average is None:
            raise RuntimeError(f"exit order {order.id} has no fill price ({order.status})")
        exit_price = order.average
        gross = (exit_price - position.entry_price) * position.amount * position.direction.sign
        pnl = gross - position.entry_fee - order.fee
        sign = position.direction.sign
        closed = position.model_copy(
            update={
                "status": PositionStatus.CLOSED,
                "closed_at": self.clock.now(),
                "closed_ms": order.updated_ms,
                "exit_price": exit_price,
                "exit_fee": order.fee,
                "exit_order_id": order.id,
                "exit_reason": reason,
                "exit_detail": detail,
                "realized_pnl": pnl,
                "pnl_pct": pnl / position.notional * 100,
                "best_price": exit_price
                if sign * (exit_price - position.best_price) > 0
                else position.best_price,
                "worst_price": exit_price
                if sign * (exit_price - position.worst_price) < 0
                else position.worst_price,
            }
        )
        self._open.pop(position.id, None)
        self.result.positions[position.id] = closed
        self._evaluate(closed)

    def _evaluate(self, position: Position) -> None:
        """The evaluator: journal entry, user and symbol statistics."""
        signal = self._signals[position.signal_id]
        execution = self.result.executions.get(position.id)
        plan = execution.decision.plan if execution and execution.decision else None
        equity_at_entry = plan.equity if plan else position.notional
        entry = evaluate_trade(position, signal.analysts, signal.strategy, equity_at_entry)
        self.result.journal.append(entry)
        won = entry.pnl_pct > 0
        stats = self._stats.get(entry.user_id) or UserStats(user_id=entry.user_id)
        stats = stats.rolled_to(entry.closed_at, stats.day_start_equity or 0.0)
        self._stats[entry.user_id] = stats.model_copy(
            update={
                "trades": stats.trades + 1,
                "wins": stats.wins + int(won),
                "losses": stats.losses + int(not won),
                "consecutive_losses": 0 if won else stats.consecutive_losses + 1,
                "realized_pnl_today_pct": stats.realized_pnl_today_pct + entry.equity_pnl_pct,
            }
        )
        trades, wins = self._symbol_stats.get(entry.symbol, (0, 0))
        self._symbol_stats[entry.symbol] = (trades + 1, wins + int(won))


def utc(ms: int) -> datetime:
    """A ms timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


__all__ = ["BacktestEngine", "BacktestResult", "EngineConfig", "utc"]
