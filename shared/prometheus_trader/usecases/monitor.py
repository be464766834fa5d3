"""Exit monitor: every few seconds, per open position, apply the exit rules (SPEC §6)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.exit_bands import hold_band
from prometheus_trader.domain.exits import ExitConfig, TradeWindow, evaluate_exit
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.market import MINUTE_MS, Side
from prometheus_trader.domain.portfolio import DEFAULT_PORTFOLIO, PortfolioConfig
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.ticks import batches_from_trades, total_ticks
from prometheus_trader.domain.trading import (
    ExitReason,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
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
    ExchangeError,
    Filter,
    StateStore,
    TickSource,
)
from prometheus_trader.usecases.audit import audit_order
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
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.portfolio import PortfolioGuard
from prometheus_trader.usecases.reconcile import ABANDONED_AFTER, ReconcileReport, Reconciliation
from prometheus_trader.usecases.tracking import (
    PERSIST_EVERY_MS,
    Tracking,
    better,
    keep_tracking,
    worse,
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


class ExitFailed(Exception):
    """The exit order could not be placed or did not fill; the stop stays in place."""


class ExitMonitor(Reconciliation):
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

    def _resting_ids(self, user_id: str) -> frozenset[str] | None:
        """Ids of the account's resting orders, read once per cycle (None: unknown)."""
        account = self._account(user_id)
        if account not in self._resting:
            try:
                orders = self._exchange.fetch_open_orders(account)
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

    def _closed_on_exchange(
        self, position: Position, resting: frozenset[str] | None = None
    ) -> bool:
        """If a protective order filled on the exchange, record the close and say so.

        ``resting``: ids known to be resting (open) this cycle; those are not fetched.
        """
        account = self._account(position)
        for order_id, reason in [
            *([(position.stop_order_id, ExitReason.STOP_LOSS)] if position.stop_order_id else []),
            *((tp, ExitReason.TAKE_PROFIT) for tp in position.take_profit_order_ids),
        ]:
            if resting is not None and order_id in resting:
                continue  # still resting: not filled
            order = self._exchange.fetch_order(account, order_id)
            if order.status is OrderStatus.FILLED and order.average is not None:
                self._settle_fill(position, order, reason)
                return True
        return False

    def _settle_fill(self, position: Position, order: Order, reason: ExitReason) -> None:
        """Record a close the exchange made (now, or collected with the cycle's closes)."""

        def settle() -> None:
            self._audit(position, "exchange_fill", order, reason)
            self._cancel_protective(position, keep=order.id)
            self._record_close(
                position, order, reason, {"trigger": order.stop_price or 0.0, "by": "exchange"}
            )

        if self._deferred is None:
            settle()
        else:
            self._deferred.add(self._account(position), position, "exchange-side exit", settle)

    # --------------------------------------------------------------------- close
    def _close(
        self, position: Position, reason: ExitReason, detail: dict[str, float | str]
    ) -> None:
        """Exit with a reduce-only market order, then cancel the protective orders.

        The exit goes in first, so the position is never without its stop: if the exit
        fails (rate limit, outage, no fill) the stop stays and ``ExitFailed`` is raised
        (the cycle alerts and goes on); the same client order id makes the next try
        return this order instead of placing a second one.
        """
        account = self._account(position)
        self._orders_changed(account)  # orders change from here on: read them again
        side = Side.SELL if position.direction is Direction.LONG else Side.BUY
        request = OrderRequest(
            client_order_id=client_order_id(position.signal_id, position.user_id, "exit"),
            symbol=position.symbol,
            side=side,
            type=OrderType.MARKET,
            amount=position.amount,
            reduce_only=True,
        )
        try:
            order = self._exchange.create_order(account, request)
        except ExchangeError as exc:
            if self._closed_on_exchange(position):  # a stop filled first: nothing to reduce
                return
            raise ExitFailed(
                f"exit order for {position.id} failed ({reason.value}): {exc}"
            ) from exc
        audit_order(
            self._blobs,
            self._clock.now(),
            {
                "action": "close_position",
                "user_id": position.user_id,
                "position_id": position.id,
                "client_order_id": request.client_order_id,
                "order_id": order.id,
                "reason": reason.value,
                "status": order.status.value,
                "average": order.average,
                "ts_ms": self._clock.now_ms(),
            },
        )
        if order.filled <= 0 or order.average is None:
            if self._closed_on_exchange(position):
                return
            raise ExitFailed(f"exit order {order.id} not filled ({order.status.value})")
        if order.filled < position.amount * (1 - 1e-6):
            # a partial fill: exit what the exchange still holds before touching the stop
            for attempt in range(2, 5):
                left = self._held(account, position.symbol)
                if left <= 0:
                    break
                self._exchange.create_order(
                    account,
                    request.model_copy(
                        update={
                            "client_order_id": client_order_id(
                                position.signal_id, position.user_id, f"exit{attempt}"
                            ),
                            "amount": left,
                        }
                    ),
                )
            left = self._held(account, position.symbol)
            if left > 0:
                raise ExitFailed(f"exit of {position.id} left {left:g} open; the stop stays")
        self._cancel_protective(position)
        self._record_close(position, order, reason, detail)

    def _held(self, account: str, symbol: str) -> float:
        """What the exchange holds of ``symbol`` for ``account`` (one position per symbol)."""
        return sum(p.amount for p in self._exchange.fetch_positions(account) if p.symbol == symbol)

    def _cancel_protective(self, position: Position, keep: str | None = None) -> None:
        account = self._account(position)
        self._orders_changed(account)
        ids = [position.stop_order_id, *position.take_profit_order_ids]
        for order_id in ids:
            if order_id and order_id != keep:
                order = self._exchange.fetch_order(account, order_id)
                if order.status is OrderStatus.OPEN:
                    cancelled = self._exchange.cancel_order(account, order_id)
                    self._audit(position, "cancel_order", cancelled, None)
                elif order.status is OrderStatus.CANCELED:
                    # the exchange cancelled a reduce-only order once the position was
                    # flat: the audit log still records that the order is gone
                    self._audit(position, "exchange_cancel", order, None)

    def _record_close(
        self,
        position: Position,
        order: Order,
        reason: ExitReason,
        detail: dict[str, float | str],
    ) -> None:
        if order.average is None:
            raise RuntimeError(f"exit order {order.id} has no fill price ({order.status})")
        exit_price = order.average
        gross = (exit_price - position.entry_price) * position.amount * position.direction.sign
        pnl = gross - position.entry_fee - order.fee
        closed = position.model_copy(
            update={
                "status": PositionStatus.CLOSED,
                "closed_at": self._clock.now(),
                "closed_ms": order.updated_ms,
                "exit_price": exit_price,
                "exit_fee": order.fee,
                "exit_order_id": order.id,
                "exit_reason": reason,
                "exit_detail": detail,
                "realized_pnl": pnl,
                "pnl_pct": pnl / position.notional * 100,
                "best_price": better(position, exit_price, position.best_price),
                "worst_price": worse(position, exit_price, position.worst_price),
            }
        )
        self._state.set(Collections.POSITIONS, position.id, closed.model_dump(mode="json"))
        done: list[str] | None = getattr(self._local, "closed", None)
        if done is None:
            self._forget(position.id)
        else:  # a pool thread: the cycle's thread forgets it (``_run_deferred``)
            done.append(position.id)
        publish_event(
            self._bus,
            self._state,
            EventType.POSITION_CLOSED,
            key=position.id,
            now=self._clock.now(),
            user_id=position.user_id,
            payload={
                "position_id": position.id,
                "symbol": position.symbol,
                "reason": reason.value,
                "exit_price": exit_price,
                "pnl_pct": closed.pnl_pct,
                "detail": detail,
            },
        )
        log.info(
            "position closed: %s %.3f%%",
            reason.value,
            closed.pnl_pct or 0.0,
            extra=labels(
                stage="monitor",
                user=position.user_id,
                signal=position.signal_id,
                symbol=position.symbol,
            ),
        )

    def _audit(
        self, position: Position, action: str, order: Order, reason: ExitReason | None
    ) -> None:
        """One audit line for an order action the monitor saw or took."""
        audit_order(
            self._blobs,
            self._clock.now(),
            {
                "action": action,
                "user_id": position.user_id,
                "position_id": position.id,
                "client_order_id": order.client_order_id,
                "order_id": order.id,
                "symbol": order.symbol,
                "type": order.type.value,
                "reason": reason.value if reason else None,
                "status": order.status.value,
                "filled": order.filled,
                "average": order.average,
                "stop_price": order.stop_price,
                "ts_ms": self._clock.now_ms(),
            },
        )

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
