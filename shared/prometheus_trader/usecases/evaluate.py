"""Evaluator: on ``position_closed``, write the journal entry and update statistics."""

from __future__ import annotations

import logging

from prometheus_trader.domain.breakers import AccountState, record_trade
from prometheus_trader.domain.evaluation import evaluate_trade
from prometheus_trader.domain.events import Event, EventType
from prometheus_trader.domain.journal import JournalEntry
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.trading import Execution, Position
from prometheus_trader.ports import AlreadyExists, BusMessage, Clock, StateStore, StateTransaction
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.stats import UserStats, user_stats_id

log = logging.getLogger(__name__)


class EvaluateClosedPosition:
    """Journal + statistics, exactly once per position (one transaction keyed by it)."""

    def __init__(self, state: StateStore, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def handle(self, message: BusMessage) -> JournalEntry | None:
        """Handle one event; everything but ``position_closed`` is ignored."""
        event = Event.model_validate(message.data)
        if event.type is not EventType.POSITION_CLOSED:
            return None
        position_id = str(event.payload["position_id"])
        position = Position.model_validate(self._require(Collections.POSITIONS, position_id))
        signal = OpportunitySignal.model_validate(
            self._require(Collections.SIGNALS, position.signal_id)
        )
        execution = Execution.model_validate(self._require(Collections.EXECUTIONS, position_id))
        plan = execution.decision.plan if execution.decision else None
        equity_at_entry = plan.equity if plan else position.notional
        entry = evaluate_trade(position, signal.analysts, signal.strategy, equity_at_entry)
        try:
            self._state.transaction(lambda tx: self._record(tx, entry))
        except AlreadyExists:
            log.info(
                "journal entry exists; duplicate delivery ignored",
                extra=labels(stage="evaluate", user=position.user_id, signal=position.signal_id),
            )
            return None
        log.info(
            "journal: %s %s %.3f%% (%s, rating %d)",
            entry.symbol,
            entry.exit_reason.value,
            entry.pnl_pct,
            entry.category.value,
            entry.rating,
            extra=labels(stage="evaluate", user=entry.user_id, signal=entry.signal_id),
        )
        return entry

    def _require(self, collection: str, doc_id: str) -> dict[str, object]:
        doc = self._state.get(collection, doc_id)
        if doc is None:
            raise LookupError(f"{collection}/{doc_id} not found")
        return doc

    def _record(self, tx: StateTransaction, entry: JournalEntry) -> None:
        """The journal entry (the per-trade fact, written once) and the user's own running
        stats. Nothing shared across users is written here: symbol, strategy and analyst
        aggregates are computed from journal entries when read (``usecases.stats``), so
        evaluators closing trades of many users never contend on one document."""
        user_ref = user_stats_id(entry.user_id)
        user_doc = tx.get(Collections.STATS, user_ref)  # reads before writes (Firestore)
        tx.create(Collections.JOURNAL, entry.position_id, entry.model_dump(mode="json"))

        won = entry.pnl_pct > 0
        stats = UserStats.model_validate(user_doc) if user_doc else UserStats(user_id=entry.user_id)
        # breaker numbers (streak, last loss, realized today) move in one pure rule
        account = record_trade(stats, entry.closed_at, entry.equity_pnl_pct)
        stats = stats.model_copy(
            update={
                **account.model_dump(include=set(AccountState.model_fields)),
                "trades": stats.trades + 1,
                "wins": stats.wins + int(won),
                "losses": stats.losses + int(not won),
            }
        )
        tx.set(Collections.STATS, user_ref, stats.model_dump(mode="json"))
