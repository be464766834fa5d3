"""The exit monitor's close path: exit orders, exchange-side fills, the closed record.

A mixin of ``ExitMonitor`` (usecases/monitor.py), kept apart so the monitor module stays
small; it uses the monitor's state and helpers (declared below).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from prometheus_trader.domain.events import EventType
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.market import Side
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import (
    ExitReason,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    PositionStatus,
)
from prometheus_trader.ports import BlobStore, Bus, Clock, Exchange, ExchangeError, StateStore
from prometheus_trader.usecases.audit import audit_order
from prometheus_trader.usecases.close_pool import DeferredCloses
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.tracking import better, worse

# the monitor's logger: the close path's lines keep the name they were logged under
log = logging.getLogger("prometheus_trader.usecases.monitor")


class ExitFailed(Exception):
    """The exit order could not be placed or did not fill; the stop stays in place."""


class ExitCloses:
    """Mixin of ``ExitMonitor``: closing positions and recording exchange-side closes."""

    _state: StateStore
    _exchange: Exchange
    _bus: Bus
    _blobs: BlobStore
    _clock: Clock
    _deferred: DeferredCloses | None
    _local: threading.local

    if TYPE_CHECKING:  # provided by ExitMonitor (declared for the type checker only)

        def _account(self, of: str | Position) -> str: ...

        def _orders_changed(self, account: str) -> None: ...

        def _forget(self, position_id: str) -> None: ...

    # ------------------------------------------------------- exchange-side fills
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


__all__ = ["ExitCloses", "ExitFailed"]
