"""What the ranker reads from the state store each ranking, kept up to date incrementally.

The live ranker asks the state store, every ranking, for the pending signals
(``live_signal_symbols``) and for the journal of the last 30 days
(``symbol_success_rates``). In a backtest nothing expires them (housekeeping does not
run) and every closed trade stays in the 30 days, so both answers grow with the run: on a
month, hundreds of signal and journal documents decoded at each of ~7,000 rankings. Both
classes give the same answers from what the backtest already knows:

- :class:`LiveSignals`: the signals this engine published are the state's signals (a
  fresh private store; ids are unique per ranking time), and one is live while
  ``expires_at > now``: the dispatcher marks a signal expired only once it is, and
  nothing else changes a signal's status;
- :class:`JournalRates`: reads only the journal entries written since the last ranking
  (on the backtest's ``MemoryStateStore`` a watch of the journal names them; on another
  store, the entries closed since the newest close read: ``closed_at`` never goes back,
  a trade is journaled when it closes, at the simulated now), and tallies the entries
  with ``closed_at >= now - lookback`` compared as text, as
  ``usecases.stats.journal_since`` queries them.

``tests/unit/test_backtest_ranking_state.py`` compares both with the live helpers on a
store; the ledger of ``tests/integration/test_backtest_equivalence.py`` checks the rest.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta
from operator import itemgetter

from prometheus_trader.adapters.embedded.memory_state_store import MemoryStateStore
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.ports import Document, Filter, StateStore, Watch
from prometheus_trader.usecases.names import Collections

__all__ = ["JournalRates", "LiveSignals"]


class LiveSignals:
    """``live_signal_symbols(state, now)`` from the published signals."""

    def __init__(self) -> None:
        self._signals: list[OpportunitySignal] = []
        self._first = 0  # those before it have expired (and stay so: time only moves on)

    def published(self, signal: OpportunitySignal) -> None:
        """A signal was just published."""
        self._signals.append(signal)

    def symbols(self, now: datetime) -> set[str]:
        """Symbols with a published signal that has not expired."""
        signals, i = self._signals, self._first
        while i < len(signals) and signals[i].expires_at <= now:
            i += 1
        self._first = i
        return {s.symbol for s in signals[i:] if s.expires_at > now}


class JournalRates:
    """``symbol_success_rates(state, now, lookback)`` reading only new journal entries."""

    def __init__(self) -> None:
        # (closed_at text, position id, symbol, won), in text order as the query compares
        self._entries: list[tuple[str, str, str, bool]] = []
        self._seen: set[str] = set()
        # the second of the newest close read: a later close (the clock only moves on)
        # has closed_at text >= it, whatever its fraction of a second
        self._mark = ""
        self._kept: tuple[int, int, dict[str, float]] | None = None
        self._watch: tuple[MemoryStateStore, Watch] | None = None

    def rates(self, state: StateStore, now: datetime, lookback: timedelta) -> dict[str, float]:
        """Win rate per symbol over the journal's last ``lookback``."""
        bound = (now - lookback).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        for doc in self._unread(state):
            position = str(doc["position_id"])
            if position in self._seen:
                continue
            self._seen.add(position)
            closed, pnl = str(doc["closed_at"]), doc.get("pnl_pct")
            won = isinstance(pnl, int | float) and pnl > 0
            bisect.insort(self._entries, (closed, position, str(doc["symbol"]), won))
            self._mark = max(self._mark, closed[:19])
        first = bisect.bisect_left(self._entries, bound, key=itemgetter(0))
        kept = self._kept
        if kept is None or kept[0] != first or kept[1] != len(self._entries):
            counts: dict[str, list[int]] = {}
            for _, _, symbol, won in self._entries[first:]:
                bucket = counts.setdefault(symbol, [0, 0])
                bucket[0] += 1
                bucket[1] += int(won)
            rates = {s: w / t if t else 0.0 for s, (t, w) in sorted(counts.items())}
            kept = self._kept = (first, len(self._entries), rates)
        return dict(kept[2])

    def _unread(self, state: StateStore) -> list[Document]:
        """The journal entries written since the last call (and maybe some read before).
        On the backtest's memory store a watch of the journal says which (the first poll:
        all of them); on others, the entries closed since the newest close read."""
        if not isinstance(state, MemoryStateStore):
            return state.query(Collections.JOURNAL, [Filter("closed_at", ">=", self._mark)])
        if self._watch is None or self._watch[0] is not state:
            self._watch = (state, state.watch(Collections.JOURNAL))
        batch = self._watch[1].poll()
        assert batch is not None  # a memory store's watch has its first result at once
        return [c.data for c in batch.changes if c.data is not None]
