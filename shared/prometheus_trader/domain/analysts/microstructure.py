"""Microstructure analyst: rejection wicks, close position and volume of the last 5m bar."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_trader.domain.analysts.base import AnalysisContext, abstain, clamp01, view
from prometheus_trader.domain.signals import AnalystView, Direction

MICROSTRUCTURE = "microstructure"


@dataclass(frozen=True)
class MicrostructureAnalyst:
    """Rejection wick (≥ ``wick_min`` of the range) with a close on the far side → vote;
    else a decisive close (top/bottom ``decisive_close``) on a volume spike → vote."""

    name: str = MICROSTRUCTURE
    wick_min: float = 0.4
    close_min: float = 0.6
    decisive_close: float = 0.85
    spike_min: float = 1.5

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """Shape of the last closed 5m bar."""
        f = ctx.features
        pos, upper, lower = f.close_position_5m, f.upper_wick_5m, f.lower_wick_5m
        if pos is None or upper is None or lower is None:
            return abstain(self.name, "no closed 5m bar", no_data=True)
        spike = f.volume_spike
        spike_text = (
            "volume spike unknown" if spike is None else f"volume {spike:.2f}× the 1h average"
        )
        metrics = {
            "close_position_5m": pos,
            "upper_wick_5m": upper,
            "lower_wick_5m": lower,
            "volume_spike": spike,
        }
        boost = 0.0 if spike is None else 0.5 * clamp01((spike - 1) / 2)
        if lower >= self.wick_min and pos >= self.close_min and lower > upper:
            return view(
                self.name,
                Direction.LONG,
                0.5 + boost,
                [f"bullish rejection: lower wick {lower:.0%}, close at {pos:.0%}; {spike_text}"],
                metrics,
            )
        if upper >= self.wick_min and pos <= 1 - self.close_min and upper > lower:
            return view(
                self.name,
                Direction.SHORT,
                0.5 + boost,
                [f"bearish rejection: upper wick {upper:.0%}, close at {pos:.0%}; {spike_text}"],
                metrics,
            )
        if spike is not None and spike >= self.spike_min:
            if pos >= self.decisive_close:
                reason = f"close at {pos:.0%} of range on {spike_text}"
                return view(self.name, Direction.LONG, 0.3 + boost, [reason], metrics)
            if pos <= 1 - self.decisive_close:
                reason = f"close at {pos:.0%} of range on {spike_text}"
                return view(self.name, Direction.SHORT, 0.3 + boost, [reason], metrics)
        return abstain(
            self.name,
            f"no rejection wick or decisive close: close at {pos:.0%}, wicks {upper:.0%} up / "
            f"{lower:.0%} down; {spike_text}",
            metrics,
        )
