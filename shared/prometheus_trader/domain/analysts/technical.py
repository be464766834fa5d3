"""Technical / regime analyst: trade only with a trending 15m regime."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_trader.domain.analysts.base import AnalysisContext, abstain, clamp01, view
from prometheus_trader.domain.features import SymbolFeatures
from prometheus_trader.domain.signals import AnalystView

TECHNICAL = "technical"


@dataclass(frozen=True)
class TechnicalRegimeAnalyst:
    """Trending (ADX, persistence, low mean-reversion) → vote with +DI/-DI; ranging → abstain.

    A ranging verdict is an abstention with ``metrics["trending"] == 0``, which the
    consensus policy treats as a major conflict.
    """

    name: str = TECHNICAL
    adx_min: float = 25.0
    persistence_min: float = 0.55
    mean_reversion_max: float = 0.6

    def ranging(self, f: SymbolFeatures) -> bool:
        """Whether ``analyze`` says "ranging" (an abstention with ``trending`` 0) on
        features ``f``, without building the view (``synthesizer.regime_vetoes``)."""
        if f.adx is None or f.hurst is None or f.mean_reversion is None:
            return False  # no data: an abstention, not a ranging verdict
        return not self._trending(f)

    def _trending(self, f: SymbolFeatures) -> bool:
        """ADX, persistence and mean-reversion beyond their bounds, and a DI direction."""
        assert f.adx is not None and f.hurst is not None and f.mean_reversion is not None
        return (
            f.adx > self.adx_min
            and f.hurst > self.persistence_min
            and f.mean_reversion < self.mean_reversion_max
            and f.trend_direction is not None
        )

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """Regime on 15m bars."""
        f = ctx.features
        if f.adx is None or f.hurst is None or f.mean_reversion is None:
            return abstain(
                self.name,
                "not enough 15m history for ADX, Hurst, mean-reversion",
                no_data=True,
            )
        direction = f.trend_direction
        metrics = {
            "adx": f.adx,
            "plus_di": f.plus_di,
            "minus_di": f.minus_di,
            "hurst": f.hurst,
            "mean_reversion": f.mean_reversion,
        }
        numbers = (
            f"ADX {f.adx:.1f} (trend > {self.adx_min:g}), persistence {f.hurst:.2f} "
            f"(> {self.persistence_min:g}), mean-reversion {f.mean_reversion:.2f} "
            f"(< {self.mean_reversion_max:g})"
        )
        if not self._trending(f) or direction is None:
            return abstain(self.name, f"ranging: {numbers}", {**metrics, "trending": 0.0})
        strength = 0.4 + 0.6 * clamp01((f.adx - self.adx_min) / 25)
        return view(
            self.name,
            direction,
            strength,
            [
                f"trending {direction.value}: {numbers}",
                f"+DI {f.plus_di:.1f} vs -DI {f.minus_di:.1f}",
            ],
            {**metrics, "trending": 1.0},
        )
