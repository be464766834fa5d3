"""Per-key request limit over fixed one-minute windows, counted in the state store.

The count lives in a document per (key, minute) updated in a transaction, so every
function instance sees the same count (an in-memory counter would let N instances allow
N times the limit). A window's document carries ``expires_at`` (ISO time, two windows on):
housekeeping may delete windows past it; nothing reads them after their minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_trader.ports import Clock, StateStore, StateTransaction
from prometheus_trader.usecases.names import Collections

WINDOW_S = 60


@dataclass(frozen=True)
class RateDecision:
    """Whether one request may go ahead, and the numbers for the response headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int


class RateLimiter:
    """At most ``per_minute`` requests per key per UTC minute."""

    def __init__(self, state: StateStore, clock: Clock, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        self._state = state
        self._clock = clock
        self._limit = per_minute

    def hit(self, key: str) -> RateDecision:
        """Count one request for ``key``."""
        now_ms = self._clock.now_ms()
        window = now_ms // (WINDOW_S * 1000)
        doc_id = f"{key}-{window}"
        reset_s = WINDOW_S - (now_ms // 1000) % WINDOW_S
        expires = datetime.fromtimestamp((window + 2) * WINDOW_S, tz=UTC)

        def count(tx: StateTransaction) -> int:
            doc = tx.get(Collections.RATE_LIMITS, doc_id)
            used = int(doc["count"]) if doc else 0
            if used >= self._limit:
                return used + 1  # refused: not written, so refusals cost no write
            tx.set(
                Collections.RATE_LIMITS,
                doc_id,
                {
                    "key": key,
                    "window": window,
                    "count": used + 1,
                    "expires_at": expires.isoformat(),
                },
            )
            return used + 1

        used = self._state.transaction(count)
        return RateDecision(
            allowed=used <= self._limit,
            limit=self._limit,
            remaining=max(0, self._limit - used),
            reset_s=reset_s,
        )


__all__ = ["WINDOW_S", "RateDecision", "RateLimiter"]
