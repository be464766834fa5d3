"""Executor: for one (signal, user): plan, risk gate, execute, save the position."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.domain.ids import client_order_id, execution_id
from prometheus_trader.domain.market import MINUTE_MS, TIMEFRAME_MS, Instrument
from prometheus_trader.domain.planner import plan_for_user
from prometheus_trader.domain.risk import RiskContext, evaluate_risk
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.trading import (
    DecisionOutcome,
    Execution,
    ExecutionPhase,
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
    Document,
    Exchange,
    Filter,
    MarketStore,
    OrderRejected,
    SeriesKey,
    StateStore,
    StateTransaction,
)
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.events import publish_event
from prometheus_trader.usecases.execution_steps import (
    EntryPending,
    ExecutionSteps,
    ExecutorConfig,
    Outcome,
    accepted,
    opened_position,
)
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.portfolio import close_opposite, user_edge
from prometheus_trader.usecases.scaled import is_scaled, place_scaled_entries
from prometheus_trader.usecases.stats import risk_account_fields

log = logging.getLogger(__name__)
# the JSON of a record's final fields (encoded like Execution.model_dump(mode="json"))
_FINAL_FIELDS = TypeAdapter(dict[str, DecisionOutcome | list[str] | str | datetime | None])
_SIGNAL_CACHE = 64  # parsed signals kept per executor (a fan-out reads one per user)


class ExecuteSignalForUser(ExecutionSteps):
    """Handles one ``executions`` message; every attempt ends in one recorded state.

    Decided once: the first attempt records the gate's decision (the execution record,
    created-if-absent with the decision and phase ``decided``) before any side effect; a
    redelivered or racing attempt resumes that decision and never re-runs the gate (it
    would see its own position). Client order ids are deterministic from (signal, user,
    leg) so the exchange returns the first order on a repeat, and the position document
    is created-if-absent with the execution id. The
    failure paths (docs/execution.md) end ``failed`` or ``rejected`` with an alert.
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
        self._signals: dict[str, OpportunitySignal] = {}

    # ------------------------------------------------------------------ entry point
    def handle(self, message: BusMessage) -> Execution:
        """Decide (once) and (maybe) execute; returns the execution record.

        Raises (so the message is redelivered) only on transient trouble: the exchange
        unreachable, or a resting entry whose time is not up (``EntryPending``).
        """
        request = ExecutionRequest.model_validate(message.data)
        exec_id = execution_id(request.signal_id, request.user_id)
        stored = self._state.get(Collections.EXECUTIONS, exec_id)
        record: Execution | None = None
        if stored is not None:
            record = Execution.model_validate(stored)
            if record.completed_at is not None:
                log.info(
                    "duplicate delivery ignored (execution already completed)",
                    extra=labels(stage="execute", user=request.user_id, signal=request.signal_id),
                )
                return record
            # recorded but not completed: a crashed or concurrent attempt; resume it
        signal = self._signal(request.signal_id)
        user_doc = self._state.get(Collections.USERS, request.user_id)
        if signal is None or user_doc is None:
            raise LookupError(
                f"execution {exec_id}: signal or user missing "
                f"(signal={signal is not None}, user={user_doc is not None})"
            )
        user = User.model_validate(user_doc)
        record = self._decided(exec_id, record, signal, user)
        if record.exchange_account not in (None, user.exchange_account):
            # the user switched paper <-> live since the decision: this execution's orders
            # (placed, or to place) stay on the account it was decided for
            user = user.model_copy(update={"exchange_account": record.exchange_account})
        decision = record.decision
        assert decision is not None
        try:
            result = self._act(signal, user, decision, record, message.delivery_attempt)
        except OrderRejected as exc:
            # the exchange's "no" is final (retrying cannot change it): record, don't retry
            result = Outcome(DecisionOutcome.REJECTED, [], None, str(exc))
            self._alert(
                f"rejected-{exec_id}",
                user,
                Severity.WARNING,
                {"signal_id": signal.id, "symbol": signal.symbol, "error": str(exc)},
            )
        return self._complete(record, signal, result)

    def _signal(self, signal_id: str) -> OpportunitySignal | None:
        """The signal (parsed once per executor: a fan-out reads it for every user; a
        signal's trading fields never change once published)."""
        signal = self._signals.get(signal_id)
        if signal is None:
            doc = self._state.get(Collections.SIGNALS, signal_id)
            if doc is None:
                return None
            signal = OpportunitySignal.model_validate(doc)
            if len(self._signals) >= _SIGNAL_CACHE:
                self._signals.pop(next(iter(self._signals)))
            self._signals[signal_id] = signal
        return signal

    def _decided(
        self, exec_id: str, record: Execution | None, signal: OpportunitySignal, user: User
    ) -> Execution:
        """The record carrying the decision that counts: the recorded one, else ours.

        Ours is recorded before any side effect, by creating the execution record with
        the decision in it (create-if-absent, no transaction: racing attempts must not
        contend on one document); an attempt that loses the create adopts the winner's.
        """
        if record is not None and record.decision is not None:
            log.info(
                "resuming the recorded decision (phase %s)",
                record.phase.value if record.phase else "-",
                extra=labels(stage="execute", user=user.user_id, signal=signal.id),
            )
            return record
        if record is None:
            decision = self._decide(signal, user)
            mine = Execution(
                id=exec_id,
                signal_id=signal.id,
                user_id=user.user_id,
                symbol=signal.symbol,
                reasons=decision.reasons,
                decision=decision,
                phase=ExecutionPhase.DECIDED,
                exchange_account=user.exchange_account,
                created_at=self._clock.now(),
            )
            if self._state.create(Collections.EXECUTIONS, exec_id, mine.model_dump(mode="json")):
                return mine
            stored = self._state.get(Collections.EXECUTIONS, exec_id)
            assert stored is not None  # created by the attempt that won
            record = Execution.model_validate(stored)
            if record.decision is not None:
                log.info(
                    "resuming a racing attempt's decision",
                    extra=labels(stage="execute", user=user.user_id, signal=signal.id),
                )
                return record
        # a record without a decision (written before decisions were recorded with it)
        return self._decided_legacy(record, signal, user)

    def _decided_legacy(
        self, record: Execution, signal: OpportunitySignal, user: User
    ) -> Execution:
        stored = self._state.get(Collections.EXECUTION_DECISIONS, record.id)
        if stored is None:
            decision = self._decide(signal, user)
            doc = {"execution_id": record.id, "decision": decision.model_dump(mode="json")}
            if not self._state.create(Collections.EXECUTION_DECISIONS, record.id, doc):
                stored = self._state.get(Collections.EXECUTION_DECISIONS, record.id)
                assert stored is not None  # created by the attempt that won
        decision = decision if stored is None else RiskDecision.model_validate(stored["decision"])
        changes = {
            "symbol": signal.symbol,
            "decision": decision.model_dump(mode="json"),
            "reasons": [r.value for r in decision.reasons],
            "phase": ExecutionPhase.DECIDED.value,
        }
        self._state.update(Collections.EXECUTIONS, record.id, changes)
        return record.model_copy(
            update={
                "symbol": signal.symbol,
                "decision": decision,
                "reasons": decision.reasons,
                "phase": ExecutionPhase.DECIDED,
            }
        )

    def _complete(self, record: Execution, signal: OpportunitySignal, result: Outcome) -> Execution:
        """Write the final record (a racing attempt that finished first is kept)."""
        decision = record.decision
        assert decision is not None
        current = self._state.get(Collections.EXECUTIONS, record.id)
        assert current is not None  # recorded before acting
        if current.get("completed_at") is not None:
            return Execution.model_validate(current)
        phase = current.get("phase")  # a flattening attempt recorded its phase there
        final = {
            "outcome": result.outcome,
            "order_ids": result.order_ids,
            "position_id": result.position_id,
            "error": result.error,
            "completed_at": self._clock.now(),
        }
        done = record.model_copy(
            update={**final, "phase": ExecutionPhase(phase) if phase else None}
        )
        # the stored record already holds the decision (as JSON): only the final fields
        # are encoded, not the whole decision again
        doc = {**current, **_FINAL_FIELDS.dump_python(final, mode="json")}
        self._state.set(Collections.EXECUTIONS, record.id, doc)
        log.info(
            "decision %s%s%s",
            done.outcome.value if done.outcome else "-",
            f" ({', '.join(r.value for r in done.reasons)})" if done.reasons else "",
            f" (exchange: {done.error})" if done.error else "",
            extra=labels(
                stage="execute", user=done.user_id, signal=signal.id, symbol=signal.symbol
            ),
        )
        return done

    # --------------------------------------------------------------------- decide
    def _decide(self, signal: OpportunitySignal, user: User) -> RiskDecision:
        instrument = self._instrument(signal.symbol)
        open_positions = self._open_positions(user)
        # an opposite signal closes the open position first (the user's setting)
        if user.close_on_opposite_signal and any(
            p.symbol == signal.symbol and p.direction is not signal.direction
            for p in open_positions
        ):
            close_opposite(
                self._state, self._exchange, self._bus, self._blobs, self._clock, user, signal
            )
            open_positions = self._open_positions(user)
        balance = self._exchange.fetch_balance(user.exchange_account)
        # the user's order style, and fractional Kelly from their own journal
        plan = plan_for_user(
            signal, user, instrument, balance.equity, edge=user_edge(self._state, user)
        )
        context = self._risk_context(user, signal, balance.equity, balance.free, open_positions)
        return evaluate_risk(signal, plan, user, context, instrument)

    def _open_positions(self, user: User) -> list[Position]:
        return [
            Position.model_validate(d)
            for d in self._state.query(
                Collections.POSITIONS,
                [Filter("user_id", "==", user.user_id), Filter("status", "==", "open")],
            )
        ]

    def _risk_context(
        self,
        user: User,
        signal: OpportunitySignal,
        equity: float,
        free: float,
        open_positions: list[Position],
    ) -> RiskContext:
        return RiskContext(
            now=self._clock.now(),
            equity=equity,
            free_margin=free,
            open_positions=open_positions,
            # the true equity peak, breaker cool-downs, the drawdown ladder (events published)
            **risk_account_fields(self._state, self._bus, user, self._clock.now(), equity),
            **self._data_freshness(signal),
        )

    def _data_freshness(self, signal: OpportunitySignal) -> dict[str, Any]:
        """The ``RiskContext`` fields on the signal's market data: collected at all, how
        old the newest bar is, and the age the gate allows (one bar's span more than the
        setting for coarse bars)."""
        key = SeriesKey(signal.exchange, signal.market_type, signal.symbol)
        bar_ms = TIMEFRAME_MS[self._config.bar_timeframe]
        last = self._market.last_candle_ms(key, self._config.bar_timeframe)
        age_s = float("inf") if last is None else (self._clock.now_ms() - (last + bar_ms)) / 1000
        return {
            "data_quality_ok": last is not None,
            "data_age_s": max(0.0, min(age_s, 1e9)),
            "max_data_age_s": self._config.max_data_age_minutes * 60 + (bar_ms - MINUTE_MS) / 1000,
        }

    # ------------------------------------------------------------------------ act
    def _act(
        self,
        signal: OpportunitySignal,
        user: User,
        decision: RiskDecision,
        record: Execution,
        attempt: int,
    ) -> Outcome:
        now = self._clock.now()
        if not decision.approved or decision.plan is None:
            publish_event(
                self._bus,
                self._state,
                EventType.RISK_BREACH,
                key=record.id,
                now=now,
                user_id=user.user_id,
                payload={
                    "signal_id": signal.id,
                    "symbol": signal.symbol,
                    "reasons": [r.value for r in decision.reasons],
                },
            )
            return Outcome(DecisionOutcome.REJECTED, [])
        if user.mode is TradingMode.ADVISORY:
            publish_event(
                self._bus,
                self._state,
                EventType.SIGNAL_PUBLISHED,
                key=record.id,
                now=now,
                user_id=user.user_id,
                payload={"advice": decision.plan.model_dump(mode="json")},
            )
            return Outcome(DecisionOutcome.ADVISED, [])
        if is_scaled(decision.plan):  # the legs rest; the monitor opens the position on a fill
            ids = place_scaled_entries(
                self._state,
                self._exchange,
                self._blobs,
                self._clock,
                signal,
                user,
                decision.plan,
                record.id,
            )
            return Outcome(DecisionOutcome.ACCEPTED, ids)
        return self._open_position(signal, user, decision.plan, record, attempt)

    def _open_position(
        self,
        signal: OpportunitySignal,
        user: User,
        plan: TradePlan,
        record: Execution,
        attempt: int,
    ) -> Outcome:
        exec_id = record.id
        existing = self._state.get(Collections.POSITIONS, exec_id)
        if existing is not None:
            # stored by an earlier attempt that may have died before its events: publish
            # them again (deterministic ids: stored once, consumers dedupe on the id)
            position = Position.model_validate(existing)
            self._position_events(signal, user, plan, position)
            return accepted(position)
        entry_leg = next(o for o in plan.orders if o.leg == "entry")
        # on a repeat this returns the first attempt's order (same client order id)
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
        if record.phase is ExecutionPhase.FLATTENING:
            # an earlier attempt lost its protective orders: only flattening may follow
            return self._flatten(signal, user, plan, entry, record.error or "protective failed")
        entry = self._settle_entry(signal, user, entry, attempt)
        if entry.filled <= 0 or entry.average is None:
            error = f"entry order {entry.id} not filled ({entry.status.value}); cancelled"
            self._alert(
                f"unfilled-{entry.id}",
                user,
                Severity.WARNING,
                {"signal_id": signal.id, "symbol": signal.symbol, "reason": error},
            )
            return Outcome(DecisionOutcome.FAILED, [entry.id], None, error)
        # protective legs go in right after the fill, sized to what filled; a failure
        # flattens at once, so no position ever lives without its exchange-side stop.
        instrument = self._instrument(signal.symbol)
        partial = entry.filled < entry_leg.amount
        stop_id: str | None = None
        tp_ids: list[str] = []
        try:
            for leg in plan.orders:
                if leg.leg == "entry":
                    continue
                amount = min(leg.amount, entry.filled)
                if partial and leg.type is not OrderType.STOP_MARKET:
                    amount = instrument.round_amount(leg.amount * entry.filled / entry_leg.amount)
                    if amount < max(instrument.min_amount, 1e-12):
                        continue  # too small to place: the stop and the exits cover it
                elif partial:
                    amount = entry.filled
                order = self._place(
                    user,
                    OrderRequest(
                        client_order_id=client_order_id(signal.id, user.user_id, leg.leg),
                        symbol=signal.symbol,
                        side=leg.side,
                        type=leg.type,
                        amount=amount,
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
        except Exception as exc:
            error = f"protective order failed: {exc}"

            # recorded before flattening: a repeat must flatten too, never open a position.
            # One decision between racers: flatten, or keep the position a racing attempt
            # stored after placing every protective order (same client ids: same orders).
            def flattening(tx: StateTransaction) -> Document | None:
                stored = tx.get(Collections.POSITIONS, exec_id)
                if stored is None:
                    tx.update(
                        Collections.EXECUTIONS,
                        exec_id,
                        {"phase": ExecutionPhase.FLATTENING.value, "error": error},
                    )
                return stored

            stored = self._state.transaction(flattening)
            if stored is not None:
                return accepted(Position.model_validate(stored))
            return self._flatten(signal, user, plan, entry, error)
        position = opened_position(
            exec_id, signal, user, plan, entry, stop_id, tp_ids, self._clock.now()
        )
        document = position.model_dump(mode="json")

        # create-if-absent, then check: a racer whose stop was refused may have decided
        # to flatten (its transaction reads this position: one of the two sees the other)
        created = self._state.create(Collections.POSITIONS, exec_id, document)
        current = self._state.get(Collections.EXECUTIONS, exec_id) or {}
        if current.get("phase") == ExecutionPhase.FLATTENING.value:
            if created:
                self._state.delete(Collections.POSITIONS, exec_id)
            error = str(current.get("error") or "protective order failed")
            return self._flatten(signal, user, plan, entry, error)
        if created:
            self._position_events(signal, user, plan, position)
        else:  # a racing attempt stored it first: report that one
            position = Position.model_validate(self._state.get(Collections.POSITIONS, exec_id))
        return accepted(position)

    def _position_events(
        self, signal: OpportunitySignal, user: User, plan: TradePlan, position: Position
    ) -> None:
        """``trade_executed`` and ``position_opened`` of a stored position."""
        payload = position_payload(signal, plan, position)
        now = self._clock.now()
        for event_type, key in (
            (EventType.TRADE_EXECUTED, position.entry_order_id),
            (EventType.POSITION_OPENED, position.id),
        ):
            publish_event(
                self._bus,
                self._state,
                event_type,
                key=key,
                now=now,
                user_id=user.user_id,
                payload=payload,
            )

    def _instrument(self, symbol: str) -> Instrument:
        if symbol not in self._instruments:
            self._instruments = {m.symbol: m for m in self._exchange.load_markets()}
        try:
            return self._instruments[symbol]
        except KeyError:
            raise LookupError(f"unknown instrument {symbol}") from None


def position_payload(
    signal: OpportunitySignal, plan: TradePlan, position: Position
) -> dict[str, object]:
    """The payload of a new position's two events."""
    return {
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


__all__ = ["EntryPending", "ExecuteSignalForUser", "ExecutorConfig", "position_payload"]
