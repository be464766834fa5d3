"""Housekeeping: expire signals whose TTL ran out."""

from __future__ import annotations

from datetime import datetime

from prometheus_trader.domain.signals import SignalStatus
from prometheus_trader.ports import Clock, Filter, StateStore
from prometheus_trader.usecases.names import Collections


class ExpireSignals:
    """Marks PENDING signals EXPIRED once ``expires_at`` has passed (idempotent)."""

    def __init__(self, state: StateStore, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def run(self) -> list[str]:
        """Expire what is due; returns the expired signal ids."""
        now = self._clock.now()
        expired = []
        for doc in self._state.query(
            Collections.SIGNALS, [Filter("status", "==", SignalStatus.PENDING.value)]
        ):
            if datetime.fromisoformat(doc["expires_at"]) <= now:
                self._state.update(
                    Collections.SIGNALS, doc["id"], {"status": SignalStatus.EXPIRED.value}
                )
                expired.append(str(doc["id"]))
        return expired
