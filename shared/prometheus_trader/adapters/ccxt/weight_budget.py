"""A process-wide request-weight budget per venue, shared by every ccxt client.

ccxt's throttle (``enableRateLimit``) spaces the requests of ONE client; a venue limits
the weight of every request from one IP (Binance USD-M: 2,400 per minute; Bybit: 600
requests per 5 s). With one client per account, many accounts in one process could
together draw 429s / a 418 IP ban for every user. ``install`` wraps a client's
``throttle`` (ccxt calls it once per REST request in ``fetch2`` with the endpoint's
``cost`` from its own table) so that, after the client's own spacing, the request also
takes its weight from the venue's shared ``WeightBudget``.

The budget is a sliding-window log, not a token bucket: a full token bucket plus its
refill admits up to twice the capacity in one window, the log admits at most ``limit``
weight in ANY window of ``window_s`` (what the venue counts). Hand-written (~60 lines)
rather than pyrate-limiter / limits: both would add a dependency and a lock-file change
for a blocking acquire the size of this one, and neither takes ccxt's fractional costs
as weights without rounding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.8  # of the venue's published budget: other traffic and clock skew


class WeightBudget:
    """At most ``limit`` weight in any ``window_s`` seconds, for every thread of the
    process; ``acquire`` blocks until the weight fits."""

    def __init__(
        self,
        limit: float,
        window_s: float,
        *,
        label: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log_after_s: float = 1.0,
    ) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("a weight budget needs a positive limit and window")
        self.limit = float(limit)
        self.window_s = float(window_s)
        self.label = label
        self._clock = clock
        self._sleep = sleep
        self._log_after_s = log_after_s
        self._lock = threading.Lock()
        self._spent: deque[tuple[float, float]] = deque()  # (time taken, weight)
        self._used = 0.0

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.window_s:
            self._used -= self._spent.popleft()[1]

    def try_acquire(self, weight: float) -> float:
        """Take ``weight`` now (returns 0.0) or return how long to wait before retrying."""
        # a single call heavier than the whole budget would otherwise wait forever
        weight = min(max(float(weight), 0.0), self.limit)
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self._used + weight <= self.limit + 1e-9:
                self._spent.append((now, weight))
                self._used += weight
                return 0.0
            need = self._used + weight - self.limit
            freed = 0.0
            for at, w in self._spent:  # the oldest entries leave the window first
                freed += w
                if freed >= need - 1e-9:
                    return max(at + self.window_s - now, 1e-6)
            return self.window_s  # unreachable: the whole log frees >= need

    def acquire(self, weight: float) -> float:
        """Block until ``weight`` fits; returns the seconds waited (logged once when
        over ``log_after_s``)."""
        start = self._clock()
        while (delay := self.try_acquire(weight)) > 0:
            self._sleep(delay)
        waited = self._clock() - start
        if waited >= self._log_after_s:
            log.warning(
                "%s: waited %.2f s for %.1f request weight (process budget %.0f per %.0f s)",
                self.label,
                waited,
                weight,
                self.limit,
                self.window_s,
            )
        return waited


_SHARED: dict[tuple[str, str], WeightBudget] = {}
_SHARED_LOCK = threading.Lock()


def shared_budget(key: tuple[str, str], limit: float, window_s: float) -> WeightBudget:
    """The process's one budget for ``key`` (venue, environment): the first caller's
    limit wins, every later client of that venue shares it."""
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is None:
            found = _SHARED[key] = WeightBudget(limit, window_s, label=" ".join(key))
        return found


def install(client: Any, budget: WeightBudget, weigh: Callable[[float], float]) -> None:
    """Make every REST request of ``client`` take ``weigh(ccxt cost)`` from ``budget``
    after the client's own throttle (so one client alone behaves as before)."""
    own: Callable[..., Any] = client.throttle

    def throttle(cost: Any = None) -> Any:
        result = own(cost)
        budget.acquire(weigh(1.0 if cost is None else float(cost)))
        return result

    client.throttle = throttle
