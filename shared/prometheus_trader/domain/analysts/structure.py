"""Market-structure analyst: supply/demand zones, fair-value gaps, break of structure."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_trader.domain.analysts.base import AnalysisContext, abstain, view, vote
from prometheus_trader.domain.signals import AnalystView

STRUCTURE = "structure"


@dataclass(frozen=True)
class MarketStructureAnalyst:
    """Votes: break of structure ±1, at a demand (+) / supply (-) zone ±1, in an FVG ±0.5."""

    name: str = STRUCTURE
    zone_weight: float = 1.0
    bos_weight: float = 1.0
    fvg_weight: float = 0.5

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """Structure at the current price."""
        f = ctx.features
        score = 0.0
        reasons: list[str] = []
        if f.break_of_structure:
            score += self.bos_weight * f.break_of_structure
            side = (
                "above the last swing high"
                if f.break_of_structure > 0
                else "below the last swing low"
            )
            reasons.append(f"break of structure: price {f.last_price:g} {side}")
        if f.at_demand_zone:
            score += self.zone_weight
            reasons.append(
                f"at a demand zone ({f.demand_distance_pct:.2f}% away, {f.demand_touches} touches)"
            )
        if f.at_supply_zone:
            score -= self.zone_weight
            reasons.append(
                f"at a supply zone ({f.supply_distance_pct:.2f}% away, {f.supply_touches} touches)"
            )
        if f.in_bullish_fvg:
            score += self.fvg_weight
            reasons.append("in an unfilled bullish fair-value gap")
        if f.in_bearish_fvg:
            score -= self.fvg_weight
            reasons.append("in an unfilled bearish fair-value gap")
        metrics = {
            "structure_score": score,
            "break_of_structure": float(f.break_of_structure),
            "demand_distance_pct": f.demand_distance_pct,
            "supply_distance_pct": f.supply_distance_pct,
        }
        if not reasons:
            return abstain(
                self.name, "no zone, fair-value gap or break of structure at price", metrics
            )
        direction = vote(score)
        if direction is None:
            return abstain(self.name, "conflicting structure: " + "; ".join(reasons), metrics)
        max_score = self.bos_weight + self.zone_weight + self.fvg_weight
        return view(self.name, direction, abs(score) / max_score, reasons, metrics)
