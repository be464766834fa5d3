"""The closes one exit-monitor cycle decides, run concurrently across exchange accounts.

The monitor decides on its own thread, in order, with its in-memory state (windows,
tracking, hold bands) exactly as a sequential cycle does; a close it decides is only
collected here (``DeferredCloses``). After the decisions, ``ClosePool.run`` runs the
collected closes' I/O (exit order, cancels, the closed position, events, audit): each
account's closes in decision order on one thread (a user's balance and orders depend on
them), different accounts on up to ``concurrency`` threads. The monitor then applies the
results to its in-memory state on the cycle's thread. A close that fails is that close's
outcome; the others proceed.

Threads give I/O concurrency inside one process (each close is several sequential round
trips to Firestore or an exchange); what must hold across processes (a worker killed
mid-close, a second worker) rests on the idempotent client order ids and the stores'
transactions, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_trader.domain.trading import Position


@dataclass(frozen=True)
class PendingClose:
    """One close decided this cycle: ``run`` does its I/O."""

    seq: int  # decision order within the cycle
    position: Position
    reason: str  # what the cycle report says when it succeeds
    run: Callable[[], None]


@dataclass(frozen=True)
class CloseOutcome:
    """What running one ``PendingClose`` did."""

    pending: PendingClose
    error: Exception | None
    closed: tuple[str, ...]  # ids whose closed documents were written (to forget in memory)


@dataclass
class DeferredCloses:
    """The closes one cycle decided, in decision order, grouped so that closes sharing a
    user or an exchange account are in one group (run in order on one thread)."""

    groups: dict[int, list[PendingClose]] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=set)
    count: int = 0
    _group_of: dict[str, int] = field(default_factory=dict)  # "u:<user>"/"a:<account>"

    def add(self, account: str, position: Position, reason: str, run: Callable[[], None]) -> None:
        """Collect one close of ``position`` on ``account`` (run after the decisions)."""
        keys = (f"u:{position.user_id}", f"a:{account}")
        found = sorted({self._group_of[k] for k in keys if k in self._group_of})
        group = found[0] if found else self.count
        closes = self.groups.setdefault(group, [])
        if len(found) > 1:  # the close joins two groups: one group, in decision order
            other = found[1]
            closes.extend(self.groups.pop(other))
            closes.sort(key=lambda p: p.seq)
            for k, g in list(self._group_of.items()):
                if g == other:
                    self._group_of[k] = group
        for k in keys:
            self._group_of[k] = group
        closes.append(PendingClose(self.count, position, reason, run))
        self.accounts.add(account)
        self.count += 1


class ClosePool:
    """Runs a cycle's ``DeferredCloses`` on up to ``concurrency`` threads (1: none)."""

    def __init__(self, concurrency: int = 1) -> None:
        if concurrency < 1:
            raise ValueError("close concurrency must be at least 1")
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None  # made at the first concurrent run

    def collector(self) -> DeferredCloses | None:
        """A collector for one cycle's closes; None: close inline, as decided."""
        return DeferredCloses() if self.concurrency > 1 else None

    def run(
        self, deferred: DeferredCloses, one: Callable[[PendingClose], CloseOutcome]
    ) -> list[CloseOutcome]:
        """Run every collected close through ``one`` (which must not raise); each
        account's in order on one thread. Outcomes come back in decision order."""
        groups = list(deferred.groups.values())

        def run_group(group: list[PendingClose]) -> list[CloseOutcome]:
            return [one(pending) for pending in group]

        if len(groups) <= 1:  # one account: its closes are sequential anyway
            done = [run_group(g) for g in groups]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="exit-close")
            done = [f.result() for f in [self._pool.submit(run_group, g) for g in groups]]
        return sorted((o for group in done for o in group), key=lambda o: o.pending.seq)

    def shutdown(self) -> None:
        """Stop the threads (the worker is shutting down)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


__all__ = ["CloseOutcome", "ClosePool", "DeferredCloses", "PendingClose"]
