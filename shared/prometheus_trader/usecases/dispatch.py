"""Dispatcher: fan a signal out to every admitted user: one message per user, or one per
bucket of users (``buckets``: the batched executor, docs/execution.md)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from prometheus_trader.domain.ids import execution_id, stable_id
from prometheus_trader.domain.signals import OpportunitySignal, SignalStatus
from prometheus_trader.domain.users import User
from prometheus_trader.domain.watchlist import WatchlistEntry
from prometheus_trader.ports import Bus, BusMessage, Clock, Filter, StateStore
from prometheus_trader.usecases.names import Collections, Topics, labels

log = logging.getLogger(__name__)


class ExecutionRequest(BaseModel):
    """Message on the ``executions`` topic: run one signal for one user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal_id: str
    user_id: str


class ExecutionBatchRequest(BaseModel):
    """Message on the ``executions`` topic: run one signal for a bucket of users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal_id: str
    user_ids: list[str]


def user_bucket(user_id: str, buckets: int) -> int:
    """The user's bucket: a stable hash of the id (the same on every machine and run),
    so one user's executions share one ordering key and stay serialized."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


@dataclass
class DispatchReport:
    """Who got the signal and who did not (and why)."""

    signal_id: str
    dispatched: list[str] = field(default_factory=list)
    not_admitted: dict[str, str] = field(default_factory=dict)
    expired: bool = False


class DispatchSignal:
    """Handles one ``signals`` message. Idempotent: the per-user messages carry a
    deterministic dedupe key (the execution id), and the executor claims it."""

    def __init__(self, state: StateStore, bus: Bus, clock: Clock, buckets: int = 0) -> None:
        self._state = state
        self._bus = bus
        self._clock = clock
        # 0: one message per user; B > 0: one ExecutionBatchRequest per non-empty bucket
        self._buckets = buckets

    def handle(self, message: BusMessage) -> DispatchReport:
        """Dispatch the signal in ``message``."""
        signal = OpportunitySignal.model_validate(message.data)
        report = DispatchReport(signal_id=signal.id)
        now = self._clock.now()
        if signal.is_expired(now):
            report.expired = True
            self._state.update(
                Collections.SIGNALS, signal.id, {"status": SignalStatus.EXPIRED.value}
            )
            log.info(
                "signal expired before dispatch",
                extra=labels(stage="dispatch", signal=signal.id, symbol=signal.symbol),
            )
            return report
        users = [
            User.model_validate(d)
            for d in self._state.query(Collections.USERS, [Filter("active", "==", True)])
        ]
        for user in sorted(users, key=lambda u: u.user_id):
            why_not = self._why_not_admitted(user, signal)
            if why_not:
                report.not_admitted[user.user_id] = why_not
                continue
            report.dispatched.append(user.user_id)
            if self._buckets > 0:
                continue
            request = ExecutionRequest(signal_id=signal.id, user_id=user.user_id)
            self._bus.publish(
                Topics.EXECUTIONS,
                request.model_dump(mode="json"),
                dedupe_key=execution_id(signal.id, user.user_id),
                ordering_key=user.user_id,
                attributes={"signal_id": signal.id, "user_id": user.user_id},
            )
        if self._buckets > 0:
            self._publish_buckets(signal.id, report.dispatched)
        log.info(
            "signal dispatched to %d users",
            len(report.dispatched),
            extra=labels(stage="dispatch", signal=signal.id, symbol=signal.symbol),
        )
        return report

    def _publish_buckets(self, signal_id: str, user_ids: list[str]) -> None:
        """One batch message per non-empty bucket, in bucket order; the dedupe key is
        (signal, bucket) and the ordering key the bucket."""
        buckets: dict[int, list[str]] = {}
        for user_id in user_ids:
            buckets.setdefault(user_bucket(user_id, self._buckets), []).append(user_id)
        for bucket in sorted(buckets):
            request = ExecutionBatchRequest(signal_id=signal_id, user_ids=buckets[bucket])
            key = f"bucket-{bucket}-of-{self._buckets}"
            self._bus.publish(
                Topics.EXECUTIONS,
                request.model_dump(mode="json"),
                dedupe_key=stable_id("execution-batch", signal_id, key),
                ordering_key=key,
                attributes={"signal_id": signal_id, "bucket": key},
            )

    def _why_not_admitted(self, user: User, signal: OpportunitySignal) -> str:
        if user.paused:
            return "paused"
        if user.watch_all:
            return ""
        entries = [
            WatchlistEntry.model_validate(d)
            for d in self._state.query(
                Collections.WATCHLISTS,
                [Filter("user_id", "==", user.user_id), Filter("symbol", "==", signal.symbol)],
            )
        ]
        if not any(e.is_active(self._clock.now()) for e in entries):
            return "symbol not on the watchlist"
        return ""
