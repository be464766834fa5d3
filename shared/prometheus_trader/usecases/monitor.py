"""Exit monitor: every few seconds, per open position, apply the exit rules (SPEC §6)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.exit_bands import hold_band
from prometheus_trader.domain.exits import ExitConfig, evaluate_exit
from prometheus_trader.domain.market import MINUTE_MS
from prometheus_trader.domain.portfolio import DEFAULT_PORTFOLIO, PortfolioConfig
from prometheus_trader.domain.ticks import batches_from_trades, total_ticks
from prometheus_trader.domain.trade_window import TradeWindow
from prometheus_trader.domain.trading import (
    ExitReason,
    OrderStatus,
    Position,
    PositionStatus,
    position_account,  # hacc
)
from prometheus_trader.domain.users import User
from prometheus_trader.ports import (
    BlobStore,
    Bus,
    Clock,
    Exchange,
    Filter,
    StateStore,
    TickSource,
)
from prometheus_trader.usecases.close_pool import (
    CloseOutcome,
    ClosePool,
    DeferredCloses,
    PendingClose,
)
from prometheus_trader.usecases.cycle_window import CycleWindow
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.hold_bands import HoldBands
from prometheus_trader.usecases.live_docs import LiveDocs
from prometheus_trader.usecases.monitor_close import ExitCloses, ExitFailed
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.portfolio import PortfolioGuard
from prometheus_trader.usecases.reconcile import ABANDONED_AFTER, ReconcileReport, Reconciliation
from prometheus_trader.usecases.tracking import (
    PERSIST_EVERY_MS,
    Tracking,
    keep_tracking,
)

log = logging.getLogger(__name__)
WINDOW_MS = 15 * MINUTE_MS


@dataclass
class CycleReport:
    """What one monitor cycle did."""

    positions: int = 0
    trades_seen: int = 0
    closed: dict[str, str] = field(default_factory=dict)
    # position id → what went wrong; the cycle went on with every other position
    failed: dict[str, str] = field(default_factory=dict)


class ExitMonitor(ExitCloses, Reconciliation):
    """The always-on worker's loop body. Keeps 15-minute rolling trade windows in memory."""

    def __init__(
        self,
        state: StateStore,
        exchange: Exchange,
        bus: Bus,
        blobs: BlobStore,
        clock: Clock,
        config: ExitConfig | None = None,
        *,
        worker_id: str = "exit-monitor",
        adopt_stop_pct: float = 2.0,
        portfolio: PortfolioConfig | None = None,
        ticks: TickSource | None = None,
        persist_every_ms: int = PERSIST_EVERY_MS,
        abandoned_after: timedelta = ABANDONED_AFTER,
        close_concurrency: int = 1,
    ) -> None:
        self._state = state
        self._exchange = exchange
        self._bus = bus
        self._blobs = blobs
        self._clock = clock
        self._config = config or ExitConfig()
        self._worker_id = worker_id
        self._config_adopt_stop_pct = adopt_stop_pct
        self._abandoned_after = abandoned_after  # an unfinished execution older: dead-lettered
        self._windows: dict[str, TradeWindow] = {}
        self._ticks = ticks  # the live stream's columns; None: the exchange's poll_trades
        self._cursor_ms: int | None = None
        self._cycles = 0
        # users of the positions being handled, read once per pass (not per check)
        self._users: dict[str, User | None] = {}
        # open positions and users held in memory, fed by the store's change stream: a
        # cycle reads only what changed (re-reading and validating every open position
        # each cycle was a third of it)
        self._open = LiveDocs(
            state,
            clock,
            Collections.POSITIONS,
            [Filter("status", "==", PositionStatus.OPEN.value)],
            Position,
            merge=keep_tracking,
        )
        self._user_docs = LiveDocs(state, clock, Collections.USERS, [], User, id_field="user_id")
        # best/worst/trail tracked in memory every cycle, written when they matter
        self._tracking = Tracking(state, self._open, self._config, persist_every_ms)
        # positions whose rules provably hold until their price band or a deadline is
        # left: skipped (the same decisions as evaluating them; see usecases/hold_bands.py)
        self._bands = HoldBands(self._config)
        self._views: dict[str, CycleWindow] = {}  # symbol -> this cycle's view of its window
        self._views_cycle = -1
        # per exchange account, the ids of its resting orders, read once per cycle: a
        # protective order still resting has not filled, so it needs no fetch_order
        self._resting: dict[str, frozenset[str] | None] = {}
        # per exchange account, the symbols of its open positions (this cycle's): only
        # their resting orders are read (per symbol where the venue weighs that less)
        self._symbols: dict[str, set[str]] | None = None
        # per user, (account, its resting ids) holding every settled position's orders
        self._verified: dict[str, tuple[str, frozenset[str] | None]] = {}
        # portfolio rules (kill switch, daily drawdown ladder, BTC dump) close through here
        self._portfolio = PortfolioGuard(
            state, exchange, bus, blobs, clock, self.close_position, portfolio or DEFAULT_PORTFOLIO
        )
        # the closes a cycle decides run their I/O on this many threads, the closes of one
        # user or exchange account in order on one thread (1: each close inline, as it is
        # decided; see usecases/close_pool.py)
        self._closes = ClosePool(close_concurrency)
        self._deferred: DeferredCloses | None = None  # this cycle's, while deciding
        # on a thread running collected closes: the ids it closed (memory is the cycle's)
        self._local = threading.local()

    # ------------------------------------------------------------------ lifecycle
    def open_positions(self) -> list[Position]:
        """Open positions of every user, in a stable order (held in memory, refreshed
        from the store's change stream; see ``LiveDocs``)."""
        held = set(self._open.refresh())
        self._tracking.keep_only(held)
        self._bands.keep_only(held)
        return self._open.ordered()

    def close(self) -> None:
        """Stop following the store's change stream (the worker is shutting down)."""
        self._open.close()
        self._user_docs.close()
        self._portfolio.close()
        self._closes.shutdown()

    def cycle(self) -> CycleReport:
        """One pass: new trades in, every open position checked, heartbeat out."""
        now_ms = self._clock.now_ms()
        positions = self.open_positions()
        self._load_users(positions)
        self._resting = {}
        self._symbols = None
        self._verified = {}
        report = CycleReport(positions=len(positions))
        try:  # portfolio rules first: a kill switch or the ladder may close positions
            guarded = self._portfolio.run(positions, self._active_users())
        except Exception as exc:  # isolate: the per-position rules must still run
            log.error(
                "portfolio rules failed: %s: %s",
                type(exc).__name__,
                exc,
                extra=labels(stage="monitor"),
            )
            report.failed["portfolio"] = f"{type(exc).__name__}: {exc}"
        else:
            report.closed.update(guarded.closed)
            positions = [p for p in positions if p.id not in guarded.closed]
        if positions:
            symbols = sorted({p.symbol for p in positions})
            after = now_ms - WINDOW_MS if self._cursor_ms is None else self._cursor_ms
            # new trades as per-symbol columns: the stream's own, else the exchange's
            batches = (
                self._ticks.poll_ticks(symbols, after)
                if self._ticks is not None
                else batches_from_trades(self._exchange.poll_trades(symbols, after))
            )
            report.trades_seen = total_ticks(batches)
            for symbol, batch in batches.items():  # one vectorised append per window
                window = self._windows.get(symbol)
                if window is None:
                    window = self._windows[symbol] = TradeWindow(symbol)
                window.add_batch(batch)
            for window in self._windows.values():
                window.prune(now_ms)
            quiet = self._bands.quiet(self._windows.get, now_ms, after)
            # decisions stay on this thread, in order; the closes they decide are
            # collected and run after the loop (concurrently across accounts)
            self._deferred = self._closes.collector()
            try:
                self._decide(positions, quiet, now_ms, after, report)
            finally:
                self._run_deferred(report)
        self._cursor_ms = now_ms
        self._cycles += 1
        self._state.set(
            Collections.HEARTBEATS,
            self._worker_id,
            {
                "worker_id": self._worker_id,
                "at": self._clock.now().isoformat(),
                "at_ms": now_ms,
                "cycles": self._cycles,
                "open_positions": len(positions),
                "failed_positions": len(report.failed),
            },
        )
        return report

    def _decide(
        self,
        positions: list[Position],
        quiet: dict[str, Position],
        now_ms: int,
        after: int,
        report: CycleReport,
    ) -> None:
        """Check every position in order (closes inline, or collected in ``_deferred``)."""
        verified, resting = self._verified, self._resting
        for position in positions:
            try:
                if quiet.get(position.id) is position:
                    # provably holds and changes nothing: what _check would do, unless
                    # a protective order stopped resting or the kill switch is on
                    known = verified.get(position.user_id)
                    if known is not None and resting.get(known[0]) is known[1]:
                        continue  # _untouched's first answer, inlined: 10,000 a cycle
                    if self._untouched(position):
                        continue
                reason = self._check(position, now_ms, after)
            except Exception as exc:  # isolate: every other position still gets checked
                report.failed[position.id] = f"{type(exc).__name__}: {exc}"
                self._alert_failure(position, exc)
                continue
            if reason is not None and self._deferred is None:
                report.closed[position.id] = reason

    def _run_deferred(self, report: CycleReport) -> None:
        """Run the closes this cycle's decisions collected (concurrently across
        accounts), then apply their results to the in-memory state on this thread."""
        deferred, self._deferred = self._deferred, None
        if not deferred:
            return
        for outcome in self._closes.run(deferred, self._run_close):
            for position_id in outcome.closed:
                self._forget(position_id)
            position = outcome.pending.position
            if outcome.error is None:
                report.closed[position.id] = outcome.pending.reason
            else:
                report.failed[position.id] = f"{type(outcome.error).__name__}: {outcome.error}"
        for account in deferred.accounts:  # their orders changed: read them again
            self._resting.pop(account, None)

    def _run_close(self, pending: PendingClose) -> CloseOutcome:
        """One collected close's I/O, on a pool thread (never raises: isolated as the
        sequential cycle isolates it, alerted here)."""
        closed: list[str] = []
        self._local.closed = closed
        error: Exception | None = None
        try:
            pending.run()
        except Exception as exc:
            error = exc
            try:
                self._alert_failure(pending.position, exc)
            except Exception as alert_exc:  # the outcome must still reach the cycle
                log.error("alert failed: %s", type(alert_exc).__name__)
        finally:
            self._local.closed = None
        return CloseOutcome(pending, error, tuple(closed))

    def _exit(self, position: Position, reason: ExitReason, detail: dict[str, float | str]) -> None:
        """Close now, or collect the close when the cycle defers its closes."""
        if self._deferred is None:
            self._close(position, reason, detail)
        else:
            self._deferred.add(
                self._account(position),
                position,
                reason.value,
                lambda: self._close(position, reason, detail),
            )

    def _forget(self, position_id: str) -> None:
        """A close wrote the position's closed document: drop it from memory."""
        self._open.forget(position_id)
        self._tracking.closed(position_id)
        self._bands.drop(position_id)

    def _orders_changed(self, account: str) -> None:
        """The account's orders change: read its resting orders again (on the cycle's
        thread; a pool thread's closes are applied by ``_run_deferred``)."""
        if getattr(self._local, "closed", None) is None:
            self._resting.pop(account, None)

    def idle(self) -> bool:
        """Whether a cycle would only write the heartbeat until the store changes: no open
        position, no scaled entry pending and the portfolio guard settled for every
        active user (time alone moves none of them; the backtest skips such cycles)."""
        if self.open_positions():
            return False
        pending = [Filter("status", "==", "pending")]
        if self._state.query(Collections.SCALED_ENTRIES, pending):
            return False
        self._user_docs.refresh()  # _active_users reads what this brings in
        return self._portfolio.settled(self._active_users())

    def skipped_until(self, ms: int) -> None:
        """The worker skipped its cycles up to ``ms`` because they could find nothing new
        (no trade became visible; see app/monitor_wake.py): the next cycle reads trades and
        price extremes from ``ms``, as it would after a cycle at ``ms``."""
        if self._cursor_ms is not None and ms > self._cursor_ms:
            self._cursor_ms = ms

    def _alert_failure(self, position: Position, exc: Exception) -> None:
        """Log and alert one position's failure (one event per position and error kind)."""
        log.error(
            "position check failed: %s: %s",
            type(exc).__name__,
            exc,
            extra=labels(
                stage="monitor",
                user=position.user_id,
                signal=position.signal_id,
                symbol=position.symbol,
            ),
        )
        publish_event(
            self._bus,
            self._state,
            EventType.SYSTEM_ERROR,
            key=f"monitor-{position.id}-{type(exc).__name__}",
            now=self._clock.now(),
            user_id=position.user_id,
            severity=Severity.CRITICAL,
            payload={
                "position_id": position.id,
                "symbol": position.symbol,
                "error": f"{type(exc).__name__}: {exc}",
                "stop_order_id": position.stop_order_id or "",
            },
        )

    def close_all(self, reason: ExitReason, detail: dict[str, float | str] | None = None) -> int:
        """Close every open position now (kill switch, end of data)."""
        closed = 0
        positions = self.open_positions()
        self._load_users(positions)
        for position in positions:
            try:
                if not self._closed_on_exchange(position):
                    self._close(position, reason, detail or {})
            except Exception as exc:  # isolate: close every other position
                self._alert_failure(position, exc)
                continue
            closed += 1
        return closed

    def close_position(
        self, position: Position, reason: ExitReason, detail: dict[str, float | str]
    ) -> None:
        """Close one position now (portfolio rules, an opposite signal)."""
        self._users.setdefault(position.user_id, self._user(position.user_id))
        if not self._closed_on_exchange(position):
            self._close(position, reason, detail)

    def _user(self, user_id: str) -> User | None:
        doc = self._state.get(Collections.USERS, user_id)
        return User.model_validate(doc) if doc else None

    # -------------------------------------------------------------------- checks
    def _check(self, position: Position, now_ms: int, since_ms: int) -> str | None:
        if self._closed_on_exchange(position, self._resting_ids(position.user_id)):
            return "exchange-side exit"
        user = self._users.get(position.user_id)
        if user is not None and user.kill_switch:
            self._exit(position, ExitReason.KILL_SWITCH, {"kill_switch": "on"})
            return ExitReason.KILL_SWITCH.value
        window = self._view(position.symbol)
        if window is None or window.last_price(now_ms) is None:
            return None
        evaluation = evaluate_exit(position, window, now_ms, self._config, since_ms=since_ms)
        if evaluation.exit is not None:
            self._exit(position, evaluation.exit.reason, evaluation.exit.detail)
            return evaluation.exit.reason.value
        held = self._tracking.track(position, evaluation, now_ms)
        due = self._tracking.write_due_ms(held.id)
        self._bands.settle(held, hold_band(held, self._config, due))
        return None

    def _untouched(self, position: Position) -> bool:
        """Nothing outside the exit rules acts on the position this cycle: its protective
        orders are all resting (so ``_closed_on_exchange`` fetches nothing) and its user's
        kill switch is off."""
        uid = position.user_id
        verified = self._verified.get(uid)
        if verified is not None and self._resting.get(verified[0]) is verified[1]:
            return True  # every settled position of the user: its orders rest (this cycle)
        user = self._users.get(uid)
        if user is not None and user.kill_switch:
            return False
        resting = self._resting_ids(uid)
        if resting is None:
            return False
        if resting.issuperset(self._bands.protective(uid)):
            self._verified[uid] = (self._account(uid), resting)
            return True
        stop = position.stop_order_id
        if stop and stop not in resting:
            return False
        return resting.issuperset(position.take_profit_order_ids)

    def _view(self, symbol: str) -> TradeWindow | None:
        """This cycle's memoised view of the symbol's window (``CycleWindow``)."""
        if self._views_cycle != self._cycles:  # a new cycle: windows changed
            self._views, self._views_cycle = {}, self._cycles
        view = self._views.get(symbol)
        if view is None:
            window = self._windows.get(symbol)
            if window is None:
                return None
            view = self._views[symbol] = CycleWindow(window)
        return view

    def _position_symbols(self) -> dict[str, set[str]]:
        """The symbols of each account's open positions, gathered once per cycle."""
        if self._symbols is None:
            symbols: dict[str, set[str]] = {}
            for position in self._open.ordered():
                symbols.setdefault(self._account(position), set()).add(position.symbol)
            self._symbols = symbols
        return self._symbols

    def _resting_ids(self, user_id: str) -> frozenset[str] | None:
        """Ids of the account's resting orders on its positions' symbols, read once per
        cycle (None: unknown)."""
        account = self._account(user_id)
        if account not in self._resting:
            try:
                orders = self._exchange.fetch_open_orders_on(
                    account, self._position_symbols().get(account, ())
                )
            except Exception as exc:  # fall back to one fetch_order per protective order
                log.warning(
                    "open orders unavailable: %s", type(exc).__name__, extra=labels(stage="monitor")
                )
                self._resting[account] = None
            else:
                self._resting[account] = frozenset(
                    o.id for o in orders if o.status is OrderStatus.OPEN
                )
        return self._resting[account]

    def _load_users(self, positions: list[Position]) -> None:
        everyone = self._user_docs.refresh()  # held in memory, fed by the change stream
        self._users = {u: everyone.get(u) for u in sorted({p.user_id for p in positions})}

    def _active_users(self) -> list[User]:
        """Every active user, from memory (``_load_users`` refreshed them this cycle)."""
        return [u for u in self._user_docs.models().values() if u.active is True]

    # --- hacc: a position's orders live on its own account (domain.trading.position_account)
    def _account(self, of: str | Position) -> str:
        """The account of a position's orders, or a user's current account (by id)."""
        if isinstance(of, Position):
            return position_account(of, self._users.get(of.user_id))
        user = self._users.get(of)
        return user.exchange_account if user else of

    # --- end hacc


__all__ = ["PERSIST_EVERY_MS", "CycleReport", "ExitFailed", "ExitMonitor", "ReconcileReport"]
