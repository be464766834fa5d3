"""Order-flow analyst: the buy/sell imbalance cascade over 1m / 5m / 15m."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_trader.domain.analysts.base import AnalysisContext, abstain, clamp01, view
from prometheus_trader.domain.signals import AnalystView, Direction

ORDER_FLOW = "order_flow"


@dataclass(frozen=True)
class OrderFlowAnalyst:
    """Cascade long: 1m > 5m > 15m and 1m > 2.0; short: 1m < 5m < 15m and 1m < 0.5.

    Without a cascade a clear 5m imbalance (beyond ``lean_ratio``) is a weaker vote.
    Estimated imbalances (no taker volume) are discounted by ``estimate_discount``.
    """

    name: str = ORDER_FLOW
    cascade_long: float = 2.0
    cascade_short: float = 0.5
    lean_ratio: float = 1.25
    estimate_discount: float = 0.75

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """Imbalance cascade on the latest bars."""
        f = ctx.features
        i1, i5, i15 = f.imbalance_1m, f.imbalance_5m, f.imbalance_15m
        if i1 is None or i5 is None or i15 is None:
            return abstain(self.name, "no traded volume in the last 15 minutes", no_data=True)
        source = (
            "estimated from bar close location × volume (no taker-buy volume)"
            if f.imbalance_estimated
            else "taker buy/sell volume"
        )
        numbers = f"buy/sell 1m {i1:.2f}, 5m {i5:.2f}, 15m {i15:.2f} ({source})"
        metrics = {
            "imbalance_1m": i1,
            "imbalance_5m": i5,
            "imbalance_15m": i15,
            "imbalance_estimated": 1.0 if f.imbalance_estimated else 0.0,
        }
        discount = self.estimate_discount if f.imbalance_estimated else 1.0
        if i1 > i5 > i15 and i1 > self.cascade_long:
            strength = 0.6 + 0.4 * clamp01(math.log(i1) / math.log(5))
            reasons = [f"long imbalance cascade: {numbers}"]
            return view(self.name, Direction.LONG, strength * discount, reasons, metrics)
        if i1 < i5 < i15 and i1 < self.cascade_short:
            strength = 0.6 + 0.4 * clamp01(-math.log(i1) / math.log(5))
            reasons = [f"short imbalance cascade: {numbers}"]
            return view(self.name, Direction.SHORT, strength * discount, reasons, metrics)
        lean = math.log(i5)
        if abs(lean) >= math.log(self.lean_ratio):
            direction = Direction.LONG if lean > 0 else Direction.SHORT
            strength = 0.5 * clamp01(abs(lean) / math.log(3))
            reasons = [f"5m flow leans {direction.value}, no cascade: {numbers}"]
            return view(self.name, direction, strength * discount, reasons, metrics)
        return abstain(self.name, f"balanced flow: {numbers}", metrics)
