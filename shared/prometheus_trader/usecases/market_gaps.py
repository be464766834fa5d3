"""Gaps in a symbol's 1m bars: finding them, and their documents (``market_gaps``).

A gap document changes state (open → filled, split or unfillable; attempts counted), so
gaps live in the state store, not in the append-only market store (docs/collectors.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from prometheus_trader.domain.market import MINUTE_MS
from prometheus_trader.ports import Clock, Filter, StateStore
from prometheus_trader.usecases.names import Collections, labels

log = logging.getLogger(__name__)
Range = tuple[int, int]  # [start_ms, end_ms) of 1m open times
GapStatus = Literal["open", "unfillable", "filled", "split"]


class MarketGap(BaseModel):
    """One missing range of 1m bars (document id: ``<exchange>|<symbol>|1m|<start_ms>``)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    exchange: str
    symbol: str
    timeframe: str = "1m"
    start_ms: int
    end_ms: int  # exclusive
    bars: int
    attempts: int  # fetches that came back without these bars
    status: GapStatus
    tail: bool = False  # after the last bar (stays open while it is the tail)
    first_seen_ms: int
    updated_ms: int


@dataclass
class GapCounts:
    """What one round did to the gaps of one or more symbols."""

    found: int = 0
    filled: int = 0
    unfillable: int = 0


def holes(ts_ms: np.ndarray, lo_ms: int, hi_ms: int) -> list[Range]:
    """Missing minute ranges of sorted 1m open times between ``lo_ms`` and ``hi_ms``
    (exclusive), given that ``lo_ms`` itself is stored."""
    ts = ts_ms[(ts_ms >= lo_ms) & (ts_ms < hi_ms)]
    seq = np.unique(np.r_[np.int64(lo_ms), ts.astype(np.int64), np.int64(hi_ms)])
    at = np.flatnonzero(np.diff(seq) > MINUTE_MS)
    return [(int(seq[i]) + MINUTE_MS, int(seq[i + 1])) for i in at]


def subtract(ranges: list[Range], cut: list[Range]) -> list[Range]:
    """``ranges`` less every range in ``cut`` (all half-open, minute-aligned)."""
    out = ranges
    for c0, c1 in cut:
        nxt: list[Range] = []
        for a, b in out:
            if c1 <= a or c0 >= b:
                nxt.append((a, b))
                continue
            if a < c0:
                nxt.append((a, c0))
            if c1 < b:
                nxt.append((c1, b))
        out = nxt
    return out


class GapLedger:
    """The gap documents of one exchange."""

    def __init__(self, state: StateStore, exchange_id: str, clock: Clock, attempts: int) -> None:
        self._state = state
        self._exchange = exchange_id
        self._clock = clock
        self._attempts = attempts

    def doc_id(self, symbol: str, start_ms: int) -> str:
        return f"{self._exchange}|{symbol}|1m|{start_ms}"

    def known(self) -> dict[str, dict[int, MarketGap]]:
        """Open and unfillable gaps, by symbol and start (two equality queries)."""
        out: dict[str, dict[int, MarketGap]] = {}
        for status in ("open", "unfillable"):
            docs = self._state.query(
                Collections.MARKET_GAPS,
                [Filter("exchange", "==", self._exchange), Filter("status", "==", status)],
            )
            for d in docs:
                gap = MarketGap.model_validate(d)
                out.setdefault(gap.symbol, {})[gap.start_ms] = gap
        return out

    def record(
        self,
        symbol: str,
        missing: list[Range],
        tail: Range | None,
        known: dict[int, MarketGap],
        checked: Range,
    ) -> GapCounts:
        """Still missing: one more attempt each (unfillable after ``attempts``, never at
        the tail). A known open gap inside the ``checked`` span that is no longer missing:
        filled (partly filled: ``split``, its rest recorded under its own start)."""
        now = self._clock.now_ms()
        counts = GapCounts()
        still: set[int] = set()
        ranges = [(a, b, False) for a, b in missing] + ([(*tail, True)] if tail else [])
        for a, b, at_tail in ranges:
            before = [g for g in known.values() if g.start_ms < b and a < g.end_ms]
            attempts = 1 + max((g.attempts for g in before), default=0)
            full = attempts >= self._attempts and not at_tail
            gap = MarketGap(
                id=self.doc_id(symbol, a),
                exchange=self._exchange,
                symbol=symbol,
                start_ms=a,
                end_ms=b,
                bars=(b - a) // MINUTE_MS,
                attempts=attempts,
                status="unfillable" if full else "open",
                tail=at_tail,
                first_seen_ms=min((g.first_seen_ms for g in before), default=now),
                updated_ms=now,
            )
            still.add(a)
            self._state.set(Collections.MARKET_GAPS, gap.id, gap.model_dump(mode="json"))
            counts.found += not before
            if full:
                counts.unfillable += 1
                log.warning(
                    "unfillable gap %s %s: %d bars from %d",
                    self._exchange,
                    symbol,
                    gap.bars,
                    a,
                    extra=labels(stage="collect", symbol=symbol),
                )
        for start, g in known.items():
            inside = checked[0] <= start and g.end_ms <= checked[1]
            if g.status == "open" and start not in still and inside:
                rest = [m for m in missing if m[0] < g.end_ms and start < m[1]]
                self._state.update(
                    Collections.MARKET_GAPS,
                    g.id,
                    {"status": "split" if rest else "filled", "updated_ms": now},
                )
                counts.filled += not rest
        return counts
