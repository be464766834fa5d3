"""Executor: for one (signal, user): plan, risk gate, execute, save the position."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.ids import client_order_id, execution_id
from prometheus_trader.domain.market import MINUTE_MS, Instrument, Side
from prometheus_trader.domain.planner import plan_for_user
from prometheus_trader.domain.risk import RiskContext, evaluate_risk
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.trading import (
    DecisionOutcome,
    Execution,
    Order,
    OrderRequest,
    OrderType,
    Position,
    RiskDecision,
    TradePlan,
)
from prometheus_trader.domain.users import TradingMode, User
from prometheus_trader.ports import (
    BlobStore,
    Bus,
    BusMessage,
    Clock,
    Exchange,
    Filter,
    MarketStore,
    OrderRejected,
    SeriesKey,
    StateStore,
)
from prometheus_trader.usecases.audit import audit_order  # i11: moved (portfolio uses it)
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.portfolio import close_opposite, user_edge
from prometheus_trader.usecases.scaled import is_scaled, place_scaled_entries
from prometheus_trader.usecases.stats import risk_account_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutorConfig:
    """Executor knobs."""

    max_data_age_minutes: float = 3.0


class ExecuteSignalForUser:
    """Handles one ``executions`` message.

    Idempotent under at-least-once delivery and racing executors: the execution record
    is created-if-absent before any side effect, client order ids are deterministic from
    (signal, user, leg) so the exchange returns the first order on a repeat, and the
    position document is created-if-absent with the execution id.
    """

    def __init__(
        self,
        state: StateStore,
        exchange: Exchange,
        market: MarketStore,
        bus: Bus,
        blobs: BlobStore,
        clock: Clock,
        config: ExecutorConfig | None = None,
    ) -> None:
        self._state = state
        self._exchange = exchange
        self._market = market
        self._bus = bus
        self._blobs = blobs
        self._clock = clock
        self._config = config or ExecutorConfig()
        self._instruments: dict[str, Instrument] = {}

    # ------------------------------------------------------------------ entry point
    def handle(self, message: BusMessage) -> Execution:
        """Decide and (maybe) execute; returns the completed execution record."""
        request = ExecutionRequest.model_validate(message.data)
        exec_id = execution_id(request.signal_id, request.user_id)
        now = self._clock.now()
        fresh = Execution(
            id=exec_id,
            signal_id=request.signal_id,
            user_id=request.user_id,
            symbol="",
            created_at=now,
        )
        if not self._state.create(Collections.EXECUTIONS, exec_id, fresh.model_dump(mode="json")):
            existing = Execution.model_validate(self._state.get(Collections.EXECUTIONS, exec_id))
            if existing.completed_at is not None:
                log.info(
                    "duplicate delivery ignored (execution already completed)",
                    extra=labels(stage="execute", user=request.user_id, signal=request.signal_id),
                )
                return existing
            # claimed but not completed: a crashed or concurrent attempt. Continuing is
            # safe: every side effect below is idempotent.
        signal_doc = self._state.get(Collections.SIGNALS, request.signal_id)
        user_doc = self._state.get(Collections.USERS, request.user_id)
        if signal_doc is None or user_doc is None:
            raise LookupError(
                f"execution {exec_id}: signal or user missing "
                f"(signal={signal_doc is not None}, user={user_doc is not None})"
            )
        signal = OpportunitySignal.model_validate(signal_doc)
        user = User.model_validate(user_doc)
        decision = self._decide(signal, user)
        error: str | None = None
        try:
            outcome, order_ids, position_id = self._act(signal, user, decision, exec_id)
        except OrderRejected as exc:
            # the exchange's "no" is final (retrying cannot change it): record, don't retry
            outcome, order_ids, position_id, error = DecisionOutcome.REJECTED, [], None, str(exc)
            publish_event(
                self._bus,
                self._state,
                EventType.SYSTEM_ERROR,
                key=f"rejected-{exec_id}",
                now=self._clock.now(),
                user_id=user.user_id,
                severity=Severity.WARNING,
                payload={"signal_id": signal.id, "symbol": signal.symbol, "error": error},
            )
        done = Execution(
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
            completed_at=self._clock.now(),
        )
        self._state.set(Collections.EXECUTIONS, exec_id, done.model_dump(mode="json"))
        log.info(
            "decision %s%s%s",
            outcome.value,
            f" ({', '.join(r.value for r in decision.reasons)})" if decision.reasons else "",
            f" (exchange: {error})" if error else "",
            extra=labels(
                stage="execute", user=user.user_id, signal=signal.id, symbol=signal.symbol
            ),
        )
        return done

    # --------------------------------------------------------------------- decide
    def _decide(self, signal: OpportunitySignal, user: User) -> RiskDecision:
        instrument = self._instrument(signal.symbol)
        # --- i11 hook: opposite signal closes first (user setting), style/Kelly planning
        if user.close_on_opposite_signal:
            close_opposite(
                self._state, self._exchange, self._bus, self._blobs, self._clock, user, signal
            )
        balance = self._exchange.fetch_balance(user.exchange_account)
        plan = plan_for_user(
            signal, user, instrument, balance.equity, edge=user_edge(self._state, user)
        )
        # --- end i11 hook
        context = self._risk_context(user, signal, balance.equity, balance.free)
        return evaluate_risk(signal, plan, user, context, instrument)

    def _risk_context(
        self, user: User, signal: OpportunitySignal, equity: float, free: float
    ) -> RiskContext:
        now_ms = self._clock.now_ms()
        key = SeriesKey(signal.exchange, signal.market_type, signal.symbol)
        last = self._market.last_candle_ms(key, "1m")
        age_s = float("inf") if last is None else (now_ms - (last + MINUTE_MS)) / 1000
        open_positions = [
            Position.model_validate(d)
            for d in self._state.query(
                Collections.POSITIONS,
                [Filter("user_id", "==", user.user_id), Filter("status", "==", "open")],
            )
        ]
        return RiskContext(
            now=self._clock.now(),
            equity=equity,
            free_margin=free,
            open_positions=open_positions,
            # i11 hook: true peak, breaker cool-downs, drawdown ladder (events published)
            **risk_account_fields(self._state, self._bus, user, self._clock.now(), equity),
            data_quality_ok=last is not None,
            data_age_s=max(0.0, min(age_s, 1e9)),
            max_data_age_s=self._config.max_data_age_minutes * 60,
        )

    # ------------------------------------------------------------------------ act
    def _act(
        self, signal: OpportunitySignal, user: User, decision: RiskDecision, exec_id: str
    ) -> tuple[DecisionOutcome, list[str], str | None]:
        now = self._clock.now()
        if not decision.approved or decision.plan is None:
            publish_event(
                self._bus,
                self._state,
                EventType.RISK_BREACH,
                key=exec_id,
                now=now,
                user_id=user.user_id,
                payload={
                    "signal_id": signal.id,
                    "symbol": signal.symbol,
                    "reasons": [r.value for r in decision.reasons],
                },
            )
            return DecisionOutcome.REJECTED, [], None
        if user.mode is TradingMode.ADVISORY:
            publish_event(
                self._bus,
                self._state,
                EventType.SIGNAL_PUBLISHED,
                key=exec_id,
                now=now,
                user_id=user.user_id,
                payload={"advice": decision.plan.model_dump(mode="json")},
            )
            return DecisionOutcome.ADVISED, [], None
        if is_scaled(decision.plan):  # i11 hook: legs rest; the monitor opens the position
            ids = place_scaled_entries(
                self._state, self._exchange, self._blobs, self._clock, signal, user,
                decision.plan, exec_id,
            )  # fmt: skip
            return DecisionOutcome.ACCEPTED, ids, None
        position = self._open_position(signal, user, decision.plan, exec_id)
        order_ids = [position.entry_order_id, *filter(None, [position.stop_order_id])]
        order_ids += position.take_profit_order_ids
        return DecisionOutcome.ACCEPTED, order_ids, position.id

    def _place(self, user: User, request: OrderRequest, signal_id: str) -> Order:
        order = self._exchange.create_order(user.exchange_account, request)
        audit_order(
            self._blobs,
            self._clock.now(),
            {
                "action": "create_order",
                "user_id": user.user_id,
                "signal_id": signal_id,
                "client_order_id": request.client_order_id,
                "order_id": order.id,
                "symbol": request.symbol,
                "side": request.side.value,
                "type": request.type.value,
                "amount": request.amount,
                "stop_price": request.stop_price,
                "status": order.status.value,
                "filled": order.filled,
                "average": order.average,
                "ts_ms": self._clock.now_ms(),
            },
        )
        return order

    def _open_position(
        self, signal: OpportunitySignal, user: User, plan: TradePlan, exec_id: str
    ) -> Position:
        existing = self._state.get(Collections.POSITIONS, exec_id)
        if existing is not None:
            return Position.model_validate(existing)
        entry_leg = next(o for o in plan.orders if o.leg == "entry")
        entry = self._place(
            user,
            OrderRequest(
                client_order_id=client_order_id(signal.id, user.user_id, "entry"),
                symbol=signal.symbol,
                side=entry_leg.side,
                type=entry_leg.type,
                amount=entry_leg.amount,
                price=entry_leg.price,
                leverage=plan.leverage,
            ),
            signal.id,
        )
        if entry.filled <= 0 or entry.average is None:
            raise RuntimeError(f"entry order {entry.id} not filled ({entry.status})")
        # protective legs go in right after the fill; a failure flattens at once, so no
        # position ever lives without its exchange-side stop.
        stop_id: str | None = None
        tp_ids: list[str] = []
        try:
            for leg in plan.orders:
                if leg.leg == "entry":
                    continue
                order = self._place(
                    user,
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
                    signal.id,
                )
                if leg.type is OrderType.STOP_MARKET:
                    stop_id = order.id
                else:
                    tp_ids.append(order.id)
            if stop_id is None:
                raise RuntimeError("plan has no stop-loss leg")
        except Exception:
            self._flatten_after_failure(signal, user, entry)
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
            opened_at=self._clock.now(),
            opened_ms=entry.updated_ms,
            max_hold_minutes=user.limits.max_hold_minutes,
        )
        if self._state.create(Collections.POSITIONS, position.id, position.model_dump(mode="json")):
            payload = {
                "position_id": position.id,
                "signal_id": signal.id,
                "symbol": signal.symbol,
                "direction": signal.direction.value,
                "amount": position.amount,
                "entry_price": position.entry_price,
                "stop_loss": position.stop_loss,
                "position_pct": plan.position_pct,
                "risk_pct": plan.risk_pct,
            }
            now = self._clock.now()
            publish_event(
                self._bus,
                self._state,
                EventType.TRADE_EXECUTED,
                key=entry.id,
                now=now,
                user_id=user.user_id,
                payload=payload,
            )
            publish_event(
                self._bus,
                self._state,
                EventType.POSITION_OPENED,
                key=position.id,
                now=now,
                user_id=user.user_id,
                payload=payload,
            )
        return position

    def _flatten_after_failure(self, signal: OpportunitySignal, user: User, entry: Order) -> None:
        side = Side.SELL if entry.side is Side.BUY else Side.BUY
        try:
            self._place(
                user,
                OrderRequest(
                    client_order_id=client_order_id(signal.id, user.user_id, "flatten"),
                    symbol=signal.symbol,
                    side=side,
                    type=OrderType.MARKET,
                    amount=entry.filled,
                    reduce_only=True,
                ),
                signal.id,
            )
        finally:
            publish_event(
                self._bus,
                self._state,
                EventType.SYSTEM_ERROR,
                key=f"flatten-{entry.id}",
                now=self._clock.now(),
                user_id=user.user_id,
                severity=Severity.CRITICAL,
                payload={"signal_id": signal.id, "reason": "protective order failed"},
            )

    def _instrument(self, symbol: str) -> Instrument:
        if symbol not in self._instruments:
            self._instruments = {m.symbol: m for m in self._exchange.load_markets()}
        try:
            return self._instruments[symbol]
        except KeyError:
            raise LookupError(f"unknown instrument {symbol}") from None
