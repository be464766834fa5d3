"""Best/worst price and trail of open positions: tracked in memory, written when they matter.

The exit monitor updates them every cycle (its decisions use memory, as before) but
writes them only when a decision threshold moves (the trail arms, a profit-lock rung is
reached) or at most every ``persist_every_ms`` per position (0: every change); a close
writes the whole document anyway. A restarted worker reads the stored values (at most
``persist_every_ms`` old) and re-reads 15 minutes of trades in its first cycle, which
contain everything not written yet.
"""

from __future__ import annotations

from prometheus_trader.domain.exits import ExitConfig, ExitEvaluation
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import Position, PositionStatus
from prometheus_trader.ports import StateStore
from prometheus_trader.usecases.live_docs import LiveDocs
from prometheus_trader.usecases.names import Collections

PERSIST_EVERY_MS = 30_000  # best/worst/trail written at most this often per position


class Tracking:
    """Holds tracked fields in ``book`` and writes them to ``state`` when they matter."""

    def __init__(
        self,
        state: StateStore,
        book: LiveDocs[Position],
        config: ExitConfig,
        persist_every_ms: int = PERSIST_EVERY_MS,
    ) -> None:
        self._state = state
        self._book = book
        self._config = config
        self._persist_every_ms = persist_every_ms
        self._saved_ms: dict[str, int] = {}  # position id -> when its tracking was written
        self._unsaved: set[str] = set()  # ids whose tracking in memory is newer than stored

    def track(self, position: Position, evaluation: ExitEvaluation, now_ms: int) -> Position:
        """Hold the new best/worst/trail in memory; write them when they matter. Returns
        the position as now held."""
        pid = position.id
        crossed = False
        if (evaluation.best_price, evaluation.worst_price, evaluation.trail_stop) != (
            position.best_price,
            position.worst_price,
            position.trail_stop,
        ):
            crossed = (evaluation.trail_stop is None) != (position.trail_stop is None) or (
                self._rung(position, evaluation.best_price) != self._rung(position)
            )
            position = evaluation.apply(position)
            self._book.hold(pid, position)
            self._unsaved.add(pid)
            self._saved_ms.setdefault(pid, now_ms)
        if pid not in self._unsaved:
            return position
        if not crossed and now_ms - self._saved_ms[pid] < self._persist_every_ms:
            return position
        fields = {
            "best_price": position.best_price,
            "worst_price": position.worst_price,
            "trail_stop": position.trail_stop,
        }
        self._state.update(Collections.POSITIONS, pid, fields)
        self._book.hold(pid, position, stored=fields)
        self._unsaved.discard(pid)
        self._saved_ms[pid] = now_ms
        return position

    def write_due_ms(self, position_id: str) -> int | None:
        """When the position's unsaved tracking is written at the latest (None: saved)."""
        if position_id not in self._unsaved:
            return None
        return self._saved_ms[position_id] + self._persist_every_ms

    def closed(self, position_id: str) -> None:
        """The position's close wrote its whole document."""
        self._unsaved.discard(position_id)
        self._saved_ms.pop(position_id, None)

    def keep_only(self, held: set[str]) -> None:
        """Forget positions no longer held (cheap: only when many left)."""
        if len(self._saved_ms) > 2 * len(held) + 64:
            self._saved_ms = {i: t for i, t in self._saved_ms.items() if i in held}
            self._unsaved &= held

    def _rung(self, position: Position, best: float | None = None) -> int:
        """How many profit-lock rungs the best price has reached."""
        cfg = self._config
        lev = position.leverage if cfg.profit_lock_on_leveraged_return else 1.0
        gain = position.move_pct(position.best_price if best is None else best) * lev
        return sum(1 for level in cfg.profit_lock_ladder if gain >= level[0])


def keep_tracking(held: Position, stored: Position) -> Position:
    """A changed stored position, with the best/worst/trail tracked in memory kept (the
    store may hold older ones: they are written only when they matter)."""
    if stored.status is not PositionStatus.OPEN or stored.direction is not held.direction:
        return stored
    best = better(stored, held.best_price, stored.best_price)
    worst = worse(stored, held.worst_price, stored.worst_price)
    trail = stored.trail_stop
    if held.trail_stop is not None:
        trail = held.trail_stop if trail is None else better(stored, held.trail_stop, trail)
    if (best, worst, trail) == (stored.best_price, stored.worst_price, stored.trail_stop):
        return stored
    return stored.model_copy(update={"best_price": best, "worst_price": worst, "trail_stop": trail})


def better(position: Position, price: float, current: float) -> float:
    """The better price for the position (higher for a long)."""
    if position.direction is Direction.LONG:
        return max(price, current)
    return min(price, current)


def worse(position: Position, price: float, current: float) -> float:
    """The worse price for the position (lower for a long)."""
    if position.direction is Direction.LONG:
        return min(price, current)
    return max(price, current)


__all__ = ["PERSIST_EVERY_MS", "Tracking", "better", "keep_tracking", "worse"]
