"""Batched executor: one ``executions`` message for a bucket of users (docs/execution.md).

The common case of a fan-out (a new decision, a market entry that fills whole, every
protective order accepted) is done for the whole bucket with a few store and exchange
calls: the users, their records, open positions and stats read at once; every decision
recorded with one ``create_many`` before any side effect; the entries placed with one
``create_orders``, then the protective legs with another; positions, events and final
records written per collection. Every other case (a recorded but unfinished execution,
close-on-opposite, a scaled or resting entry, a partial fill, a refused order, a racing
attempt) is handed to ``ExecuteSignalForUser`` for that user, so one code path owns each
rare case. The values written are those of the per-user path, field for field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import TypeAdapter, ValidationError

from prometheus_trader.domain.events import Event, EventType, Severity
from prometheus_trader.domain.ids import client_order_id, execution_id, stable_id
from prometheus_trader.domain.planner import JournalEdge, plan_for_user
from prometheus_trader.domain.risk import RiskContext, evaluate_risk
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.trading import (
    Balance,
    DecisionOutcome,
    Execution,
    ExecutionPhase,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    RiskDecision,
)
from prometheus_trader.domain.users import TradingMode, User
from prometheus_trader.ports import BusMessage, Document, Filter, OrderRejected
from prometheus_trader.usecases.audit import audit_batch, executor_line
from prometheus_trader.usecases.dispatch import ExecutionBatchRequest, ExecutionRequest
from prometheus_trader.usecases.execute import (
    _FINAL_FIELDS,
    ExecuteSignalForUser,
    position_payload,
)
from prometheus_trader.usecases.execution_steps import opened_position
from prometheus_trader.usecases.names import Collections, Topics, labels
from prometheus_trader.usecases.portfolio import edge_from_journal
from prometheus_trader.usecases.scaled import is_scaled
from prometheus_trader.usecases.stats import (
    account_fields,
    account_fields_from_stats,
    observe_user,
    publish_breaker_events,
    user_stats_id,
)

log = logging.getLogger(__name__)
_TIME = TypeAdapter(datetime)  # a time as the records' pydantic models write it
_IN_VALUES = 30  # values per ``in`` filter (Firestore's limit)


@dataclass
class _Item:
    """One user of the batch on the fast path."""

    user: User
    exec_id: str
    decision: RiskDecision | None = None
    record: Document | None = None
    entry: Order | None = None
    stop: Order | None = None
    take_profits: list[Order] = field(default_factory=list)
    position: Position | None = None
    final: dict[str, DecisionOutcome | list[str] | str | datetime | None] = field(
        default_factory=dict
    )


@dataclass
class BatchReport:
    """What one batch did: users completed on the fast path, handed to the per-user
    path, already completed (a redelivery), or missing."""

    fast: list[str] = field(default_factory=list)
    per_user: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class ExecuteSignalBatch(ExecuteSignalForUser):
    """Handles ``executions`` messages: a bucket of users (``ExecutionBatchRequest``) or
    one user (``ExecutionRequest``, the per-user path)."""

    def handle_message(self, message: BusMessage) -> Execution | BatchReport:
        """The bus handler for both message kinds (a bucket's, or one user's)."""
        if "user_ids" in message.data:
            return self.handle_batch(message)
        return self.handle(message)

    # ------------------------------------------------------------------ the batch
    def handle_batch(self, message: BusMessage) -> BatchReport:
        """Decide (once) and execute for every user of the batch.

        Raises (the whole batch is redelivered; completed users are then skipped) only on
        transient trouble, after every other user of the batch had its turn.
        """
        request = ExecutionBatchRequest.model_validate(message.data)
        report = BatchReport()
        user_ids = sorted(dict.fromkeys(request.user_ids))
        signal = self._signal(request.signal_id)
        if signal is None:
            raise LookupError(f"execution batch: signal {request.signal_id} missing")
        exec_ids = {u: execution_id(signal.id, u) for u in user_ids}
        records = self._state.get_many(Collections.EXECUTIONS, list(exec_ids.values()))
        slow: list[str] = []
        todo: list[str] = []
        for user_id in user_ids:
            record = records.get(exec_ids[user_id])
            if record is None:
                todo.append(user_id)
            elif record.get("completed_at") is not None:
                report.already_done.append(user_id)
            else:  # recorded, not finished: a crashed or racing attempt; resume it
                slow.append(user_id)
        users = self._state.get_many(Collections.USERS, todo)
        items: list[_Item] = []
        for user_id in todo:
            doc = users.get(user_id)
            if doc is None:
                report.missing.append(user_id)
                log.error(
                    "user missing: not executed",
                    extra=labels(stage="execute", user=user_id, signal=signal.id),
                )
                continue
            try:
                user = User.model_validate(doc)
            except ValidationError:
                # one broken document must not hold up the bucket: the per-user path
                # raises for this user alone, after the others had their turn
                slow.append(user_id)
                continue
            items.append(_Item(user, exec_ids[user_id]))
        items, more_slow = self._decide_all(signal, items)
        slow.extend(more_slow)
        items, more_slow = self._record_decisions(signal, items)
        slow.extend(more_slow)
        items, more_slow = self._act_all(signal, items)
        slow.extend(more_slow)
        more_slow = self._complete_all(signal, items)
        slow.extend(more_slow)
        report.fast = [i.user.user_id for i in items if i.user.user_id not in more_slow]
        report.per_user = sorted(slow)
        trouble: BaseException | None = None
        for user_id in report.per_user:
            try:
                super().handle(_one_user(message, signal.id, user_id))
            except Exception as exc:  # the others still run; the batch is redelivered
                log.warning(
                    "execution failed in a batch (redelivered): %s",
                    exc,
                    extra=labels(stage="execute", user=user_id, signal=signal.id),
                )
                trouble = trouble or exc
        log.info(
            "batch: %d decided on the fast path, %d per user, %d already done",
            len(report.fast),
            len(report.per_user),
            len(report.already_done),
            extra=labels(stage="execute", signal=signal.id, symbol=signal.symbol),
        )
        if trouble is not None:
            raise trouble
        return report

    # ------------------------------------------------------------------ decide
    def _decide_all(
        self, signal: OpportunitySignal, items: list[_Item]
    ) -> tuple[list[_Item], list[str]]:
        """The gate's decision for each user (the per-user path's inputs, read at once)."""
        if not items:
            return [], []
        open_positions, unreadable = self._open_positions_of([i.user.user_id for i in items])
        slow: list[str] = []
        kept: list[_Item] = []
        accounts_seen: set[str] = set()
        for item in items:
            user = item.user
            held = open_positions.get(user.user_id, [])
            if user.user_id in unreadable:
                slow.append(user.user_id)  # a broken position: per user, where it fails alone
            elif user.close_on_opposite_signal and any(
                p.symbol == signal.symbol and p.direction is not signal.direction for p in held
            ):
                slow.append(user.user_id)  # closes a position first: the per-user path
            elif user.exchange_account in accounts_seen:
                # an account shared with an earlier user of the batch: its balance after
                # that user's orders counts, so it goes after them, per user
                slow.append(user.user_id)
            else:
                accounts_seen.add(user.exchange_account)
                kept.append(item)
        if not kept:
            return [], slow
        balances = self._balances([i.user.exchange_account for i in kept])
        instrument = self._instrument(signal.symbol)
        now = self._clock.now()
        equities = {i.user.user_id: balances[i.user.exchange_account].equity for i in kept}
        accounts = self._observe_all([i.user for i in kept], now, equities)
        edges = self._edges([i.user for i in kept])
        data = self._data_freshness(signal)  # the same for every user of the batch
        decided: list[_Item] = []
        for item in kept:
            user = item.user
            balance = balances[user.exchange_account]
            try:
                plan = plan_for_user(
                    signal, user, instrument, balance.equity, edge=edges.get(user.user_id)
                )
                context = RiskContext(
                    now=now,
                    equity=balance.equity,
                    free_margin=balance.free,
                    open_positions=open_positions.get(user.user_id, []),
                    **accounts[user.user_id],
                    **data,
                )
                item.decision = evaluate_risk(signal, plan, user, context, instrument)
            except Exception:  # nothing recorded yet: the per-user path decides (or fails) alone
                log.exception(
                    "decision failed in a batch: handed to the per-user path",
                    extra=labels(stage="execute", user=user.user_id, signal=signal.id),
                )
                slow.append(user.user_id)
                continue
            decided.append(item)
        return decided, slow

    def _open_positions_of(
        self, user_ids: Sequence[str]
    ) -> tuple[dict[str, list[Position]], set[str]]:
        """The users' open positions, and the users with a position that does not parse."""
        held: dict[str, list[Position]] = {}
        unreadable: set[str] = set()
        for start in range(0, len(user_ids), _IN_VALUES):
            part = list(user_ids[start : start + _IN_VALUES])
            docs = self._state.query(
                Collections.POSITIONS,
                [Filter("user_id", "in", part), Filter("status", "==", "open")],
            )
            for doc in docs:  # sorted by id, as the per-user query returns them
                try:
                    position = Position.model_validate(doc)
                except ValidationError:
                    # a broken position: its user goes per user (and fails there alone)
                    unreadable.add(str(doc.get("user_id")))
                    continue
                held.setdefault(doc["user_id"], []).append(position)
        return held, unreadable

    def _balances(self, accounts: Sequence[str]) -> dict[str, Balance]:
        return dict(self._exchange.fetch_balances(list(dict.fromkeys(accounts))))

    def _observe_all(
        self, users: list[User], now: datetime, equities: Mapping[str, float]
    ) -> dict[str, dict[str, object]]:
        """``risk_account_fields`` for every user: one read of their stats, one
        ``create_many`` for users without stats; a change goes through ``observe_user``
        (its transaction re-reads the document: the evaluator writes it too)."""
        refs = {u.user_id: user_stats_id(u.user_id) for u in users}
        docs = self._state.get_many(Collections.STATS, list(refs.values()))
        readings = {
            u.user_id: account_fields(docs.get(refs[u.user_id]), u, now, equities[u.user_id])
            for u in users
        }
        fresh: dict[str, Document] = {}
        for user in users:
            new_doc = readings[user.user_id].new_doc
            if refs[user.user_id] not in docs and new_doc is not None:
                fresh[refs[user.user_id]] = new_doc
        created = self._state.create_many(Collections.STATS, fresh)
        fields: dict[str, dict[str, object]] = {}
        for user in users:
            reading = readings[user.user_id]
            ref = refs[user.user_id]
            if ref not in created and reading.new_doc is not None:
                # changed, or created meanwhile by another writer: as the per-user path
                equity = equities[user.user_id]
                stats, transitions = observe_user(self._state, user, now, equity)
                reading = reading._replace(
                    fields=account_fields_from_stats(stats, user, now, equity),
                    transitions=transitions,
                )
            publish_breaker_events(self._bus, self._state, user.user_id, reading.transitions)
            fields[user.user_id] = reading.fields
        return fields

    def _edges(self, users: list[User]) -> dict[str, JournalEdge]:
        """The Kelly users' journal edges (``user_edge``), their journals read at once."""
        kelly = [u.user_id for u in users if u.kelly_fraction is not None]
        journals: dict[str, list[Document]] = {u: [] for u in kelly}
        for start in range(0, len(kelly), _IN_VALUES):
            part = kelly[start : start + _IN_VALUES]
            for doc in self._state.query(Collections.JOURNAL, [Filter("user_id", "in", part)]):
                journals[doc["user_id"]].append(doc)
        return {u: edge_from_journal(docs) for u, docs in journals.items()}

    def _record_decisions(
        self, signal: OpportunitySignal, items: list[_Item]
    ) -> tuple[list[_Item], list[str]]:
        """Every decision recorded (create-if-absent) before any side effect; a user
        whose record another attempt created first resumes that one per user."""
        created_at = _TIME.dump_python(self._clock.now(), mode="json")
        docs: dict[str, Document] = {}
        for item in items:
            assert item.decision is not None
            item.record = docs[item.exec_id] = decided_record(
                item.exec_id, signal, item.user, item.decision, created_at
            )
        created = self._state.create_many(Collections.EXECUTIONS, docs)
        kept = [i for i in items if i.exec_id in created]
        return kept, [i.user.user_id for i in items if i.exec_id not in created]

    # --------------------------------------------------------------------- act
    def _act_all(
        self, signal: OpportunitySignal, items: list[_Item]
    ) -> tuple[list[_Item], list[str]]:
        now = self._clock.now()
        events: list[Event] = []
        trading: list[_Item] = []
        slow: list[str] = []
        for item in items:
            decision, user = item.decision, item.user
            assert decision is not None
            if not decision.approved or decision.plan is None:
                events.append(
                    _event(
                        EventType.RISK_BREACH,
                        item.exec_id,
                        now,
                        user.user_id,
                        {
                            "signal_id": signal.id,
                            "symbol": signal.symbol,
                            "reasons": [r.value for r in decision.reasons],
                        },
                    )
                )
                item.final = _final(DecisionOutcome.REJECTED, [])
            elif user.mode is TradingMode.ADVISORY:
                events.append(
                    _event(
                        EventType.SIGNAL_PUBLISHED,
                        item.exec_id,
                        now,
                        user.user_id,
                        {"advice": decision.plan.model_dump(mode="json")},
                    )
                )
                item.final = _final(DecisionOutcome.ADVISED, [])
            elif is_scaled(decision.plan):
                slow.append(user.user_id)  # resting legs: the per-user path
            else:
                trading.append(item)
        self._publish(events)
        done = [i for i in items if i.final]
        opened, more_slow = self._enter_all(signal, trading)
        return [*done, *opened], [*slow, *more_slow]

    def _enter_all(
        self, signal: OpportunitySignal, items: list[_Item]
    ) -> tuple[list[_Item], list[str]]:
        """Entries, then protective legs, then positions; anything uncommon per user."""
        if not items:
            return [], []
        slow: list[str] = []
        # the batch's audit lines, written as one object once every order is placed
        audit: list[dict[str, object]] = []
        entries: list[tuple[str, OrderRequest]] = []
        for item in items:
            plan = item.decision.plan  # type: ignore[union-attr]
            assert plan is not None
            leg = next(o for o in plan.orders if o.leg == "entry")
            entries.append(
                (
                    item.user.exchange_account,
                    OrderRequest(
                        client_order_id=client_order_id(signal.id, item.user.user_id, "entry"),
                        symbol=signal.symbol,
                        side=leg.side,
                        type=leg.type,
                        amount=leg.amount,
                        price=leg.price,
                        leverage=plan.leverage,
                    ),
                )
            )
        placed = self._create_orders(entries)
        now_ms = self._clock.now_ms()  # each line's time, as the per-user path's
        filled: list[_Item] = []
        for item, (_, request), entry in zip(items, entries, placed, strict=True):
            if isinstance(entry, OrderRejected):
                slow.append(item.user.user_id)  # refused: the per-user path records it
                continue
            audit.append(
                executor_line(
                    "create_order", item.user.user_id, signal.id, entry, request.amount, now_ms
                )
            )
            whole = (
                entry.status is not OrderStatus.OPEN
                and entry.average is not None
                and entry.filled >= request.amount
            )
            if whole:
                item.entry = entry
                filled.append(item)
            else:  # resting, partial or unfilled: settled per user (same order back)
                slow.append(item.user.user_id)
        # in rounds of the plan's leg order: a user's later legs are placed only after its
        # earlier ones were accepted, as the per-user path stops at the first refusal
        refused: set[str] = set()
        rounds: list[list[tuple[_Item, str, tuple[str, OrderRequest]]]] = []
        for item in filled:
            plan = item.decision.plan  # type: ignore[union-attr]
            assert plan is not None and item.entry is not None
            legs = [leg for leg in plan.orders if leg.leg != "entry"]
            for n, leg in enumerate(legs):
                request = OrderRequest(
                    client_order_id=client_order_id(signal.id, item.user.user_id, leg.leg),
                    symbol=signal.symbol,
                    side=leg.side,
                    type=leg.type,
                    amount=min(leg.amount, item.entry.filled),
                    price=leg.price,
                    stop_price=leg.stop_price,
                    reduce_only=True,
                )
                if n == len(rounds):
                    rounds.append([])
                rounds[n].append((item, leg.type.value, (item.user.exchange_account, request)))
        for legs_of_round in rounds:
            todo = [x for x in legs_of_round if x[0].user.user_id not in refused]
            placed_legs = self._create_orders([request for _, _, request in todo])
            now_ms = self._clock.now_ms()
            for (item, kind, (_, request)), order in zip(todo, placed_legs, strict=True):
                if isinstance(order, OrderRejected):
                    refused.add(item.user.user_id)
                    continue
                audit.append(
                    executor_line(
                        "create_order", item.user.user_id, signal.id, order, request.amount, now_ms
                    )
                )
                if kind == OrderType.STOP_MARKET.value:
                    item.stop = order
                else:
                    item.take_profits.append(order)
        positioned: list[_Item] = []
        for item in filled:
            if item.user.user_id in refused or item.stop is None:
                # the per-user path re-places the same orders (same client ids), meets the
                # refusal again and flattens
                slow.append(item.user.user_id)
                continue
            item.position = self._position(signal, item)
            positioned.append(item)
        self._audit_batch(signal, audit)  # before any user can complete
        return self._store_positions(signal, positioned, slow)

    def _position(self, signal: OpportunitySignal, item: _Item) -> Position:
        plan = item.decision.plan  # type: ignore[union-attr]
        assert plan is not None and item.entry is not None and item.stop is not None
        return opened_position(
            item.exec_id,
            signal,
            item.user,
            plan,
            item.entry,
            item.stop.id,
            [o.id for o in item.take_profits],
            self._clock.now(),
        )

    def _store_positions(
        self, signal: OpportunitySignal, items: list[_Item], slow: list[str]
    ) -> tuple[list[_Item], list[str]]:
        """Positions created-if-absent, then the records re-read: a racer that chose to
        flatten (its phase) wins over a position we just created (deleted again)."""
        if not items:
            return [], slow
        docs = {i.exec_id: i.position.model_dump(mode="json") for i in items}  # type: ignore[union-attr]
        created = self._state.create_many(Collections.POSITIONS, docs)
        current = self._state.get_many(Collections.EXECUTIONS, [i.exec_id for i in items])
        now = self._clock.now()
        events: list[Event] = []
        kept: list[_Item] = []
        for item in items:
            record = current.get(item.exec_id) or {}
            if (
                item.exec_id not in created
                or record.get("phase") != ExecutionPhase.DECIDED.value
                or record.get("completed_at") is not None
            ):
                if item.exec_id in created and record.get("phase") == "flattening":
                    self._state.delete(Collections.POSITIONS, item.exec_id)
                slow.append(item.user.user_id)  # a racing attempt: the per-user path
                continue
            item.record = record
            position, plan = item.position, item.decision.plan  # type: ignore[union-attr]
            assert position is not None and plan is not None and item.entry is not None
            payload = position_payload(signal, plan, position)
            uid = item.user.user_id
            events.append(_event(EventType.TRADE_EXECUTED, item.entry.id, now, uid, payload))
            events.append(_event(EventType.POSITION_OPENED, position.id, now, uid, payload))
            order_ids = [item.entry.id, position.stop_order_id or ""]
            item.final = _final(
                DecisionOutcome.ACCEPTED,
                [*order_ids, *position.take_profit_order_ids],
                position.id,
            )
            kept.append(item)
        self._publish(events)
        return kept, slow

    # ------------------------------------------------------------------ audit
    def _audit_batch(self, signal: OpportunitySignal, records: list[dict[str, object]]) -> None:
        """The batch's ``create_order`` lines in one object (``audit_batch``), written
        after the last order round and before any position, event or final record: a
        user is completed only after its lines are stored, and a user of an attempt that
        died before this write is resumed per user on the redelivery, which places the
        same orders again (the venue returns them) and audits each to the user's own
        object. As per user, a line may so be written twice (at least once)."""
        audit_batch(self._blobs, self._clock.now(), signal.id, records)

    def _create_orders(
        self, requests: list[tuple[str, OrderRequest]]
    ) -> list[Order | OrderRejected]:
        return list(self._exchange.create_orders(requests)) if requests else []

    def _publish(self, events: list[Event]) -> None:
        """Store the events (one ``create_many``), then publish each, as ``publish_event``."""
        if not events:
            return
        docs = {e.id: e.model_dump(mode="json") for e in events}
        self._state.create_many(Collections.EVENTS, docs)
        for event in events:
            attributes = {"type": event.type.value}
            if event.user_id:
                attributes["user_id"] = event.user_id
            self._bus.publish(
                Topics.EVENTS,
                docs[event.id],
                dedupe_key=event.id,
                ordering_key=event.user_id or "",
                attributes=attributes,
            )

    # ---------------------------------------------------------------- complete
    def _complete_all(self, signal: OpportunitySignal, items: list[_Item]) -> list[str]:
        """The final records (one ``set_many``), each over the record as stored."""
        now = self._clock.now()
        docs: dict[str, Document] = {}
        for item in items:
            final = {**item.final, "completed_at": now}
            assert item.record is not None
            docs[item.exec_id] = {**item.record, **_FINAL_FIELDS.dump_python(final, mode="json")}
        self._state.set_many(Collections.EXECUTIONS, docs)
        return []


def decided_record(
    exec_id: str, signal: OpportunitySignal, user: User, decision: RiskDecision, created_at: str
) -> Document:
    """The per-user path's new record, ``Execution(..., phase=DECIDED)`` dumped as JSON,
    built directly: only the decision goes through pydantic (the record's own validation
    and dump cost a third more; ``test_execute_batch_records`` compares the two).
    ``created_at``: the time as pydantic writes it."""
    return {
        "id": exec_id,
        "signal_id": signal.id,
        "user_id": user.user_id,
        "symbol": signal.symbol,
        "outcome": None,
        "reasons": [check.code.value for check in decision.checks if not check.passed],
        "decision": decision.model_dump(mode="json"),
        "order_ids": [],
        "position_id": None,
        "error": None,
        "phase": ExecutionPhase.DECIDED.value,
        "exchange_account": user.exchange_account,
        "created_at": created_at,
        "completed_at": None,
    }


def _final(
    outcome: DecisionOutcome, order_ids: list[str], position_id: str | None = None
) -> dict[str, DecisionOutcome | list[str] | str | datetime | None]:
    return {"outcome": outcome, "order_ids": order_ids, "position_id": position_id, "error": None}


def _event(
    event_type: EventType, key: str, now: datetime, user_id: str, payload: dict[str, object]
) -> Event:
    """The event ``publish_event`` would make (same deterministic id)."""
    return Event(
        id=stable_id("event", event_type, key),
        type=event_type,
        created_at=now,
        user_id=user_id,
        severity=Severity.INFO,
        payload=payload,
    )


def _one_user(message: BusMessage, signal_id: str, user_id: str) -> BusMessage:
    """The per-user message for one user of a batch (same delivery attempt)."""
    request = ExecutionRequest(signal_id=signal_id, user_id=user_id)
    return BusMessage(
        topic=message.topic,
        message_id=f"{message.message_id}/{user_id}",
        data=request.model_dump(mode="json"),
        attributes={**message.attributes, "dedupe_key": execution_id(signal_id, user_id)},
        ordering_key=message.ordering_key,
        delivery_attempt=message.delivery_attempt,
    )


__all__ = ["BatchReport", "ExecuteSignalBatch", "decided_record"]
