"""Correlation analyst: a coin tightly correlated with BTC follows BTC's recent move."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_trader.domain.analysts.base import AnalysisContext, abstain, clamp01, view
from prometheus_trader.domain.signals import AnalystView, Direction

CORRELATION = "correlation"


@dataclass(frozen=True)
class CorrelationAnalyst:
    """Correlation ≥ ``min_correlation`` and BTC moved ≥ ``min_btc_move_pct`` in 15m → follow."""

    name: str = CORRELATION
    min_correlation: float = 0.6
    min_btc_move_pct: float = 0.15
    full_move_pct: float = 1.0

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """Follow BTC when correlated."""
        f = ctx.features
        corr, move = f.btc_correlation, f.btc_change_15m_pct
        if corr is None or move is None:
            return abstain(
                self.name, "no BTC correlation (BTC itself or too little overlap)", no_data=True
            )
        metrics = {"btc_correlation": corr, "btc_change_15m_pct": move}
        if corr < self.min_correlation:
            return abstain(
                self.name,
                f"24h correlation with BTC {corr:.2f} < {self.min_correlation:g}",
                metrics,
            )
        if abs(move) < self.min_btc_move_pct:
            return abstain(
                self.name, f"BTC flat: {move:+.2f}% in 15m (correlation {corr:.2f})", metrics
            )
        direction = Direction.LONG if move > 0 else Direction.SHORT
        strength = corr * clamp01(abs(move) / self.full_move_pct)
        reason = f"correlation with BTC {corr:.2f}, BTC {move:+.2f}% in 15m"
        return view(self.name, direction, strength, [reason], metrics)
