"""Liquidation-map analyst: price is drawn to the larger pool of pending liquidations."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_trader.domain.analysts.base import AnalysisContext, abstain, clamp01, view
from prometheus_trader.domain.signals import AnalystView, Direction

LIQUIDATION = "liquidation"


@dataclass(frozen=True)
class LiquidationMapAnalyst:
    """More estimated short liquidations above than long below (by ``min_ratio``) → long."""

    name: str = LIQUIDATION
    min_ratio: float = 1.25

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """Side with the larger liquidation pool."""
        f = ctx.features
        ratio = f.liq_imbalance
        if ratio is None or ratio <= 0:
            return abstain(
                self.name, "no open-interest data: liquidation clusters unknown", no_data=True
            )
        metrics = {
            "liq_imbalance": ratio,
            "liq_long_notional": f.liq_long_notional,
            "liq_short_notional": f.liq_short_notional,
            "liq_cluster_price": f.liq_cluster_price,
            "liq_cluster_ratio": f.liq_cluster_ratio,
        }
        text = (
            f"estimated pending liquidations: shorts above {f.liq_short_notional or 0:,.0f}, "
            f"longs below {f.liq_long_notional or 0:,.0f} (ratio {ratio:.2f}); largest cluster "
            f"at {f.liq_cluster_price or 0:g}"
        )
        lean = math.log(ratio)
        if abs(lean) < math.log(self.min_ratio):
            return abstain(self.name, f"balanced liquidation map: {text}", metrics)
        direction = Direction.LONG if lean > 0 else Direction.SHORT
        return view(self.name, direction, clamp01(abs(lean) / math.log(4)), [text], metrics)
