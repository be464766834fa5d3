"""Order steps of the executor: placing, auditing, settling the entry, flattening.

A mixin of ``ExecuteSignalForUser`` (kept apart so each module stays small); the failure
paths are documented in docs/execution.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.ids import client_order_id
from prometheus_trader.domain.market import Side
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.trading import (
    DecisionOutcome,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    TradePlan,
)
from prometheus_trader.domain.users import User
from prometheus_trader.ports import BlobStore, Bus, Clock, Exchange, OrderRejected, StateStore
from prometheus_trader.usecases.audit import audit_order, executor_line
from prometheus_trader.usecases.events import publish_event


@dataclass(frozen=True)
class ExecutorConfig:
    """Executor knobs."""

    max_data_age_minutes: float = 3.0
    # the bars the data-age check reads (1m; a coarse-only store's own timeframe, whose
    # newest closed bar is up to one bar older: the allowed age grows by that much)
    bar_timeframe: str = "1m"
    # a resting (limit) entry with nothing filled is cancelled after this long, on this
    # delivery (below the subscription's 5 attempts), or when the signal expires
    entry_timeout_seconds: float = 60.0
    cancel_unfilled_after_attempts: int = 3


class EntryPending(Exception):
    """The entry order rests unfilled and its time is not up: retry the delivery later."""


@dataclass(frozen=True)
class Outcome:
    """What one execution ended as (the fields of the final record)."""

    outcome: DecisionOutcome
    order_ids: list[str]
    position_id: str | None = None
    error: str | None = None


class ExecutionSteps:
    """The executor's order steps (mixin; the executor provides the attributes)."""

    _state: StateStore
    _exchange: Exchange
    _bus: Bus
    _blobs: BlobStore
    _clock: Clock
    _config: ExecutorConfig

    def _alert(self, key: str, user: User, severity: Severity, payload: dict[str, object]) -> None:
        publish_event(
            self._bus,
            self._state,
            EventType.SYSTEM_ERROR,
            key=key,
            now=self._clock.now(),
            user_id=user.user_id,
            severity=severity,
            payload=payload,
        )

    def _place(self, user: User, request: OrderRequest, signal_id: str) -> Order:
        order = self._exchange.create_order(user.exchange_account, request)
        self._audit(user, signal_id, "create_order", order, request)
        return order

    def _audit(
        self,
        user: User,
        signal_id: str,
        action: str,
        order: Order,
        request: OrderRequest | None = None,
    ) -> None:
        audit_order(
            self._blobs,
            self._clock.now(),
            executor_line(
                action,
                user.user_id,
                signal_id,
                order,
                request.amount if request else order.amount,
                self._clock.now_ms(),
            ),
        )

    def _settle_entry(
        self, signal: OpportunitySignal, user: User, entry: Order, attempt: int
    ) -> Order:
        """The entry as it ends: filled, or cancelled once its time is up.

        A resting entry with nothing filled waits (``EntryPending``: the message comes
        back) until ``entry_timeout_seconds``, the signal's expiry or the
        ``cancel_unfilled_after_attempts``-th delivery; a partly filled one is cut at once
        so the filled part gets its stop now.
        """
        if entry.status is not OrderStatus.OPEN:
            return entry
        age_s = (self._clock.now_ms() - entry.created_ms) / 1000
        waiting = (
            entry.filled <= 0
            and age_s < self._config.entry_timeout_seconds
            and attempt < self._config.cancel_unfilled_after_attempts
            and self._clock.now() < signal.expires_at
        )
        if waiting:
            raise EntryPending(f"entry {entry.id} rests unfilled ({age_s:.0f} s)")
        cancelled = self._exchange.cancel_order(user.exchange_account, entry.id)
        self._audit(user, signal.id, "cancel_unfilled_entry", cancelled)
        return cancelled

    def _flatten(
        self, signal: OpportunitySignal, user: User, plan: TradePlan, entry: Order, error: str
    ) -> Outcome:
        """Cancel what rests of this execution and close what filled; record ``failed``.

        Idempotent (same client order ids), so a repeat after a crash completes it.
        """
        account = user.exchange_account
        self._alert(
            f"flatten-{entry.id}",
            user,
            Severity.CRITICAL,
            {"signal_id": signal.id, "symbol": signal.symbol, "reason": error},
        )
        ours = {client_order_id(signal.id, user.user_id, leg.leg) for leg in plan.orders}
        for order in self._exchange.fetch_open_orders(account, signal.symbol):
            if order.client_order_id in ours:
                self._audit(
                    user, signal.id, "cancel", self._exchange.cancel_order(account, order.id)
                )
        order_ids = [entry.id]
        filled = entry.filled
        if entry.status is OrderStatus.OPEN:
            filled = self._exchange.fetch_order(account, entry.id).filled
        if filled > 0:
            side = Side.SELL if entry.side is Side.BUY else Side.BUY
            request = OrderRequest(
                client_order_id=client_order_id(signal.id, user.user_id, "flatten"),
                symbol=signal.symbol,
                side=side,
                type=OrderType.MARKET,
                amount=filled,
                reduce_only=True,
            )
            try:
                order_ids.append(self._place(user, request, signal.id).id)
            except OrderRejected:
                # nothing to reduce is fine (a stop already closed it); a position is not
                held = [
                    p for p in self._exchange.fetch_positions(account) if p.symbol == signal.symbol
                ]
                if held:
                    raise
        return Outcome(DecisionOutcome.FAILED, order_ids, None, error)


def accepted(position: Position) -> Outcome:
    order_ids = [position.entry_order_id, *filter(None, [position.stop_order_id])]
    return Outcome(
        DecisionOutcome.ACCEPTED, [*order_ids, *position.take_profit_order_ids], position.id
    )


def opened_position(
    exec_id: str,
    signal: OpportunitySignal,
    user: User,
    plan: TradePlan,
    entry: Order,
    stop_order_id: str,
    take_profit_order_ids: list[str],
    now: datetime,
) -> Position:
    """The position an execution opened: its filled entry, resting stop and take-profits,
    on the user's current account (where the executor sent the orders)."""
    assert plan.stop_loss is not None and entry.average is not None  # the gate, the fill
    return Position(
        id=exec_id,
        user_id=user.user_id,
        signal_id=signal.id,
        exchange=signal.exchange,
        market_type=signal.market_type,
        symbol=signal.symbol,
        direction=signal.direction,
        exchange_account=user.exchange_account,
        amount=entry.filled,
        entry_price=entry.average,
        entry_fee=entry.fee,
        leverage=plan.leverage,
        stop_loss=plan.stop_loss,
        take_profits=plan.take_profits,
        trailing_stop_pct=user.limits.trailing_stop_pct,
        best_price=entry.average,
        worst_price=entry.average,
        stop_order_id=stop_order_id,
        take_profit_order_ids=take_profit_order_ids,
        entry_order_id=entry.id,
        opened_at=now,
        opened_ms=entry.updated_ms,
        max_hold_minutes=user.limits.max_hold_minutes,
    )
