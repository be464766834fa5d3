"""The analyst contract: a pure function from an :class:`AnalysisContext` to a view."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_trader.domain.features import SymbolFeatures
from prometheus_trader.domain.market import CandleSeries
from prometheus_trader.domain.signals import AnalystView, Direction
from prometheus_trader.domain.trusted import trusted


@dataclass(frozen=True)
class AnalysisContext:
    """What an analyst may look at: the symbol's features and its (and BTC's) 1m bars.

    Analysts decide from ``features`` (computed with the look-ahead guard); the series
    are there for analysts that need more than the shared features.
    """

    symbol: str
    features: SymbolFeatures
    series_1m: CandleSeries | None = None
    btc_1m: CandleSeries | None = None


class Analyst(Protocol):
    """One independent member of the analyst panel."""

    @property
    def name(self) -> str:
        """Stable name, used in signals, journals and statistics."""
        ...

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """The analyst's view; abstains (direction None) when it has no data or no edge."""
        ...


def clamp01(x: float) -> float:
    """``x`` limited to 0..1 (NaN -> 0)."""
    if not math.isfinite(x):
        return 0.0
    return min(1.0, max(0.0, x))


def view(
    name: str,
    direction: Direction | None,
    strength: float,
    reasons: list[str],
    metrics: Mapping[str, float | None],
) -> AnalystView:
    """An :class:`AnalystView` with strength clamped and unknown metrics left out."""
    # every value is of its field's type and in range (clamp01 gives a float in 0..1),
    # so the validated view is built without validating (every ranking builds 8 per
    # candidate); a new list, as validation would copy it
    return trusted(
        AnalystView,
        {
            "analyst": name,
            "direction": None if direction is None else Direction(direction),
            "strength": 0.0 if direction is None else round(clamp01(strength), 6),
            "reasons": list(reasons),
            "metrics": {
                k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)
            },
        },
    )


NO_DATA = "no_data"


def abstain(
    name: str,
    reason: str,
    metrics: Mapping[str, float | None] | None = None,
    *,
    no_data: bool = False,
) -> AnalystView:
    """A view without an opinion, saying why.

    ``no_data`` marks an abstention for missing input (``metrics["no_data"] == 1``), as
    opposed to one on the merits; a policy may discount such analysts from the panel.
    """
    values = dict(metrics or {})
    if no_data:
        values[NO_DATA] = 1.0
    return view(name, None, 0.0, [reason], values)


def vote(score: float) -> Direction | None:
    """Direction of a signed score (None at exactly zero)."""
    if score > 0:
        return Direction.LONG
    if score < 0:
        return Direction.SHORT
    return None
