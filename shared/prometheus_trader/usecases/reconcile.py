"""Reconciliation: the stored positions against the exchange (docs/execution.md).

``ExitMonitor`` runs it at start and on a schedule; the methods live here to keep the
monitor module small. They use the monitor's close helpers (declared below).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.ids import client_order_id, stable_id
from prometheus_trader.domain.market import MarketType, Side
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import (
    ExchangePosition,
    ExitReason,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
)
from prometheus_trader.domain.users import User
from prometheus_trader.ports import (
    Bus,
    Clock,
    Document,
    Exchange,
    ExchangeError,
    Filter,
    StateStore,
)
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import Collections, labels

log = logging.getLogger(__name__)

# An execution never completed after this long will not be redelivered: longer than the
# executions subscription's retry span (5 attempts x (ack deadline <= 540 s + backoff
# <= 600 s) = 95 min by default). Its exchange position is then adopted, not left alone.
ABANDONED_AFTER = timedelta(hours=2)


@dataclass
class ReconcileReport:
    """Differences between the stored positions and the exchange, and what was done."""

    at_ms: int = 0
    checked: int = 0
    accounts: int = 0
    # stored positions an exchange-side stop / take-profit / earlier exit order closed
    closed_while_away: list[str] = field(default_factory=list)
    # stored positions the exchange no longer holds, with no order explaining it: closed
    unknown_on_exchange: list[str] = field(default_factory=list)
    # exchange positions we have no record of: "account symbol" → adopted position id, or ""
    untracked: dict[str, str] = field(default_factory=dict)
    # stored position id → "stored amount != exchange amount"
    quantity_mismatch: dict[str, str] = field(default_factory=dict)
    # resting reduce-only orders on flat symbols (cancelled), other unexplained orders
    orphan_orders_cancelled: list[str] = field(default_factory=list)
    unexplained_orders: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Nothing to report."""
        return not (
            self.closed_while_away
            or self.unknown_on_exchange
            or self.untracked
            or self.quantity_mismatch
            or self.orphan_orders_cancelled
            or self.unexplained_orders
            or self.errors
        )

    def as_document(self) -> dict[str, object]:
        """The stored form (``reconciliations`` collection)."""
        return {**self.__dict__, "clean": self.clean}


class Reconciliation:
    """Mixin of ``ExitMonitor``: ``reconcile()`` and what it needs."""

    _state: StateStore
    _exchange: Exchange
    _bus: Bus
    _clock: Clock
    _worker_id: str
    _config_adopt_stop_pct: float
    _abandoned_after: timedelta
    _users: dict[str, User | None]

    # ----------------------------------------------- provided by ExitMonitor
    def open_positions(self) -> list[Position]:
        raise NotImplementedError

    def _load_users(self, positions: list[Position]) -> None:
        raise NotImplementedError

    def _account(self, of: str | Position) -> str:
        raise NotImplementedError

    def _closed_on_exchange(self, position: Position) -> bool:
        raise NotImplementedError

    def _cancel_protective(self, position: Position, keep: str | None = None) -> None:
        raise NotImplementedError

    def _record_close(
        self,
        position: Position,
        order: Order,
        reason: ExitReason,
        detail: dict[str, float | str],
    ) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ reconcile
    def reconcile(self) -> ReconcileReport:
        """Compare the stored positions with the exchange and repair what is safe to.

        Run at start and on a schedule (docs/execution.md): stored positions the
        exchange no longer holds are closed (by the order that closed them when one is
        found, else at the last price, with an alert); exchange positions we do not know
        are adopted with a stop (unless an execution for them is still in flight);
        quantity mismatches are alerted; reduce-only orders resting on a flat symbol are
        cancelled. One account's or position's failure is recorded and the rest go on.
        The report is logged and stored.
        """
        report = ReconcileReport(at_ms=self._clock.now_ms())
        positions = self.open_positions()
        users = [User.model_validate(d) for d in self._state.query(Collections.USERS)]
        self._load_users(positions)
        for user in users:
            self._users.setdefault(user.user_id, user)
        # each position against the account holding its orders (its own, which may not be
        # its user's current one); every user's current account for untracked positions
        by_account: dict[str, list[Position]] = {}
        for position in positions:
            by_account.setdefault(self._account(position), []).append(position)
        accounts = sorted({u.exchange_account for u in users} | set(by_account))
        report.accounts = len(accounts)
        for account in accounts:
            try:
                self._reconcile_account(account, by_account.get(account, []), users, report)
            except Exception as exc:  # isolate: every other account is still reconciled
                report.errors[account] = f"{type(exc).__name__}: {exc}"
        self._publish_reconciliation(report)
        return report

    def _reconcile_account(
        self,
        account: str,
        positions: list[Position],
        users: list[User],
        report: ReconcileReport,
    ) -> None:
        held = {p.symbol: p for p in self._exchange.fetch_positions(account)}
        owner = _owner(account, users, positions)
        known: dict[str, float] = {}
        for position in positions:
            report.checked += 1
            try:
                on_exchange = held.get(position.symbol)
                if on_exchange is not None and on_exchange.direction is position.direction:
                    known[position.symbol] = known.get(position.symbol, 0.0) + position.amount
                    continue
                if self._closed_on_exchange(position) or self._closed_by_exit_order(position):
                    report.closed_while_away.append(position.id)
                else:
                    self._close_missing(position)
                    report.unknown_on_exchange.append(position.id)
            except Exception as exc:
                report.errors[position.id] = f"{type(exc).__name__}: {exc}"
        for symbol, ex_pos in sorted(held.items()):
            if symbol in known:
                if abs(known[symbol] - ex_pos.amount) > 1e-9 * max(1.0, ex_pos.amount):
                    for p in positions:
                        if p.symbol == symbol:
                            report.quantity_mismatch[p.id] = (
                                f"{known[symbol]:g} != {ex_pos.amount:g}"
                            )
                continue
            label = f"{account} {symbol}"
            if owner is None:
                report.untracked[label] = ""  # alert only: nobody to adopt it for
                continue
            in_flight, untracked = self._untracked(account, owner.user_id, symbol)
            if in_flight:
                report.untracked[label] = ""  # alert only: an executor may still record it
                continue
            if untracked is None:
                continue  # recorded, or flattened, since the snapshot above
            try:
                report.untracked[label] = self._adopt(owner, account, untracked)
            except Exception as exc:
                report.untracked[label] = ""
                report.errors[label] = f"{type(exc).__name__}: {exc}"
        referenced = {
            order_id
            for p in self.open_positions()
            if self._account(p) == account
            for order_id in (p.stop_order_id, *p.take_profit_order_ids)
            if order_id
        }
        still_held = {p.symbol for p in self._exchange.fetch_positions(account)}
        for order in self._exchange.fetch_open_orders(account):
            if order.id in referenced:
                continue
            if order.reduce_only and order.symbol not in still_held:
                self._exchange.cancel_order(account, order.id)
                report.orphan_orders_cancelled.append(order.id)
            elif order.reduce_only or not (
                owner is not None and self._in_flight(owner.user_id, order.symbol)
            ):
                report.unexplained_orders.append(order.id)

    def _untracked(
        self, account: str, user_id: str, symbol: str
    ) -> tuple[bool, ExchangePosition | None]:
        """(an execution may still record it, the held position nobody will record), for
        a symbol the exchange held with no record in the first snapshot.

        Read in this order: the user's executions, the stored open positions, the
        exchange again, the executions again. An executor creates its execution before
        its entry fills and stores its position before completing; whoever closes
        (monitor, opposite signal, a flattening executor) flattens the exchange first. So
        a position held at the second exchange read was opened by an execution the first
        read shows in flight, or (completed) whose record the positions read shows open,
        or that the last read shows as new. The first exchange read is not reused: its
        position may have been flattened and its execution completed since (a flattening
        executor's position was adopted that way), and a re-read alone could pick up a
        position opened and recorded after the positions read.
        """
        before = self._executions(user_id, symbol)
        if self._any_in_flight(before) or self._scaled_pending(user_id, symbol):
            # a pending scaled entry's leg fills on the exchange with its execution
            # already complete: the monitor's next sync records it
            return True, None
        if self._recorded(user_id, symbol):
            return False, None
        held = next(
            (p for p in self._exchange.fetch_positions(account) if p.symbol == symbol), None
        )
        if held is None:
            return False, None
        after = self._executions(user_id, symbol)
        started = {d.get("id") for d in after} - {d.get("id") for d in before}
        if started or self._any_in_flight(after):
            return True, None  # started meanwhile: a later pass decides
        return False, held

    def _in_flight(self, user_id: str, symbol: str) -> bool:
        """An execution of ``user_id`` in ``symbol`` has started, not completed, and may
        still be redelivered (one older than ``abandoned_after`` was dead-lettered)."""
        return self._any_in_flight(self._executions(user_id, symbol))

    def _executions(self, user_id: str, symbol: str) -> list[Document]:
        """The execution records of ``user_id`` in ``symbol`` (read now)."""
        # one equality filter (no composite index); a user's executions are few
        docs = self._state.query(Collections.EXECUTIONS, [Filter("user_id", "==", user_id)])
        return [d for d in docs if d.get("symbol") == symbol]

    def _scaled_pending(self, user_id: str, symbol: str) -> bool:
        """A scaled entry of ``user_id`` in ``symbol`` still has legs that may fill."""
        # the monitor's own query (pending ones are few: they end when the signal expires)
        docs = self._state.query(Collections.SCALED_ENTRIES, [Filter("status", "==", "pending")])
        return any(
            d.get("user_id") == user_id and d.get("plan", {}).get("symbol") == symbol for d in docs
        )

    def _any_in_flight(self, executions: list[Document]) -> bool:
        cutoff = self._clock.now() - self._abandoned_after
        return any(
            d.get("completed_at") is None and _created_after(d.get("created_at"), cutoff)
            for d in executions
        )

    def _recorded(self, user_id: str, symbol: str) -> bool:
        """A stored open position of ``user_id`` in ``symbol`` exists (read now)."""
        docs = self._state.query(
            Collections.POSITIONS,
            [Filter("user_id", "==", user_id), Filter("status", "==", PositionStatus.OPEN.value)],
        )
        return any(d.get("symbol") == symbol for d in docs)

    def _closed_by_exit_order(self, position: Position) -> bool:
        """An exit order placed before a crash closed it: find it by its client order id.

        Re-sending the same client order id returns the existing order; where none
        exists, a reduce-only order on a flat account is refused, which says so.
        """
        request = OrderRequest(
            client_order_id=client_order_id(position.signal_id, position.user_id, "exit"),
            symbol=position.symbol,
            side=Side.SELL if position.direction is Direction.LONG else Side.BUY,
            type=OrderType.MARKET,
            amount=position.amount,
            reduce_only=True,
        )
        try:
            order = self._exchange.create_order(self._account(position), request)
        except ExchangeError:
            return False
        if order.filled <= 0 or order.average is None:
            return False
        self._cancel_protective(position)
        self._record_close(position, order, ExitReason.RECONCILED, {"by": "exit order"})
        return True

    def _close_missing(self, position: Position) -> None:
        """The exchange holds nothing and no order explains it: close the record at the
        last price and alert (someone closed it by hand, or a liquidation)."""
        self._cancel_protective(position)
        tickers = self._exchange.fetch_tickers([position.symbol])
        price = tickers[0].last if tickers else position.entry_price
        side = Side.SELL if position.direction is Direction.LONG else Side.BUY
        now_ms = self._clock.now_ms()
        synthetic = Order(
            id=f"reconciled-{position.id}",
            client_order_id=f"reconciled-{position.id}"[:36],
            account=self._account(position),
            symbol=position.symbol,
            side=side,
            type=OrderType.MARKET,
            amount=position.amount,
            status=OrderStatus.FILLED,
            filled=position.amount,
            average=price,
            created_ms=now_ms,
            updated_ms=now_ms,
        )
        self._record_close(
            position, synthetic, ExitReason.RECONCILED, {"by": "reconcile", "last": price}
        )
        publish_event(
            self._bus,
            self._state,
            EventType.SYSTEM_ERROR,
            key=f"reconcile-missing-{position.id}",
            now=self._clock.now(),
            user_id=position.user_id,
            severity=Severity.CRITICAL,
            payload={
                "position_id": position.id,
                "symbol": position.symbol,
                "reason": "stored position not on the exchange; record closed at last price",
            },
        )

    def _adopt(self, user: User, account: str, held: ExchangePosition) -> str:
        """Record an exchange position we did not know (on ``account``, the user's current
        one or one their positions are on) and protect it with a stop there."""
        position_id = "adopted-" + stable_id(
            account, held.symbol, held.direction.value, held.amount, held.entry_price
        )
        existing = self._state.get(Collections.POSITIONS, position_id)
        if existing is not None and existing.get("status") == PositionStatus.OPEN.value:
            return position_id
        sign = held.direction.sign
        tickers = self._exchange.fetch_tickers([held.symbol])
        last = tickers[0].last if tickers else held.entry_price
        # the stop sits the adopt distance beyond the worse of entry and last price
        base = min(last, held.entry_price) if sign > 0 else max(last, held.entry_price)
        stop_price = base * (1 - sign * self._config_adopt_stop_pct / 100)
        instrument = next(
            (i for i in self._exchange.load_markets() if i.symbol == held.symbol), None
        )
        if instrument is not None:
            stop_price = instrument.round_price(stop_price)
        stop = self._exchange.create_order(
            account,
            OrderRequest(
                client_order_id=client_order_id(position_id, user.user_id, "sl"),
                symbol=held.symbol,
                side=Side.SELL if sign > 0 else Side.BUY,
                type=OrderType.STOP_MARKET,
                amount=held.amount,
                stop_price=stop_price,
                reduce_only=True,
            ),
        )
        now = self._clock.now()
        position = Position(
            id=position_id,
            user_id=user.user_id,
            signal_id=position_id,
            exchange=self._exchange.exchange_id,
            market_type=MarketType.PERP,
            symbol=held.symbol,
            direction=held.direction,
            exchange_account=account,
            amount=held.amount,
            entry_price=held.entry_price,
            stop_loss=stop_price,
            take_profits=[],
            trailing_stop_pct=user.limits.trailing_stop_pct,
            best_price=held.entry_price,
            worst_price=held.entry_price,
            stop_order_id=stop.id,
            entry_order_id="unknown",
            opened_at=now,
            opened_ms=self._clock.now_ms(),
            max_hold_minutes=user.limits.max_hold_minutes,
        )
        self._state.set(Collections.POSITIONS, position_id, position.model_dump(mode="json"))
        publish_event(
            self._bus,
            self._state,
            EventType.SYSTEM_ERROR,
            key=f"adopted-{position_id}",
            now=now,
            user_id=user.user_id,
            severity=Severity.CRITICAL,
            payload={
                "position_id": position_id,
                "symbol": held.symbol,
                "amount": held.amount,
                "stop_loss": stop_price,
                "reason": "exchange position without a record: adopted with a stop",
            },
        )
        return position_id

    def _publish_reconciliation(self, report: ReconcileReport) -> None:
        doc = report.as_document()
        self._state.set(Collections.RECONCILIATIONS, f"{self._worker_id}-{report.at_ms}", doc)
        log.log(
            logging.INFO if report.clean else logging.WARNING,
            "reconciled %d positions in %d accounts: %d closed while away, %d missing on "
            "exchange, %d untracked, %d mismatched, %d orphan orders cancelled, %d errors",
            report.checked,
            report.accounts,
            len(report.closed_while_away),
            len(report.unknown_on_exchange),
            len(report.untracked),
            len(report.quantity_mismatch),
            len(report.orphan_orders_cancelled),
            len(report.errors),
            extra=labels(stage="monitor"),
        )
        if not report.clean:
            publish_event(
                self._bus,
                self._state,
                EventType.SYSTEM_ERROR,
                key=f"reconcile-{self._worker_id}-{report.at_ms}",
                now=self._clock.now(),
                severity=Severity.WARNING,
                payload={"reconciliation": doc},
            )


def _created_after(created_at: object, cutoff: datetime) -> bool:
    """``created_at`` (a datetime or ISO string) is later than ``cutoff``; an unreadable
    stamp counts as recent (alert, never adopt)."""
    if isinstance(created_at, str):
        try:
            created_at = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        except ValueError:
            return True
    if not isinstance(created_at, datetime):
        return True
    return created_at.astimezone(UTC) > cutoff


def _owner(account: str, users: list[User], positions: list[Position]) -> User | None:
    """Whose ``account`` is: the user trading on it now, else the user whose stored open
    ``positions`` are on it (they switched between paper and live since)."""
    by_id = {u.user_id: u for u in users}
    for user in users:
        if user.exchange_account == account:
            return user
    return next((by_id[p.user_id] for p in positions if p.user_id in by_id), None)
