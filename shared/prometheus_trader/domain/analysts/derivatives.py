"""Derivatives analyst: funding extremes (contrarian), OI change with price, basis."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_trader.domain.analysts.base import AnalysisContext, abstain, clamp01, view, vote
from prometheus_trader.domain.signals import AnalystView

DERIVATIVES = "derivatives"


@dataclass(frozen=True)
class DerivativesAnalyst:
    """Crowded funding or basis → fade the crowd; OI growth → follow the 15m price move.

    Funding is a fraction per interval (0.0003 = 0.03 %); OI change and basis in %.
    """

    name: str = DERIVATIVES
    funding_high: float = 0.0003
    funding_low: float = -0.0002
    oi_change_min_pct: float = 1.0
    basis_extreme_pct: float = 0.1

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """Votes from whichever derivatives data is present."""
        f = ctx.features
        metrics = {
            "funding_rate": f.funding_rate,
            "oi_change_15m_pct": f.oi_change_15m_pct,
            "basis_pct": f.basis_pct,
        }
        if f.funding_rate is None and f.oi_change_15m_pct is None and f.basis_pct is None:
            return abstain(
                self.name, "no funding, open-interest or mark-price data", metrics, no_data=True
            )
        score = 0.0
        reasons: list[str] = []
        notes: list[str] = []
        fr = f.funding_rate
        if fr is not None:
            if fr >= self.funding_high:
                score -= clamp01(fr / (2 * self.funding_high))
                reasons.append(
                    f"funding {fr * 100:.4f}% ≥ {self.funding_high * 100:.3f}%: longs crowded"
                )
            elif fr <= self.funding_low:
                score += clamp01(fr / (2 * self.funding_low))
                reasons.append(
                    f"funding {fr * 100:.4f}% ≤ {self.funding_low * 100:.3f}%: shorts crowded"
                )
            else:
                notes.append(f"funding {fr * 100:.4f}% neutral")
        else:
            notes.append("no funding data")
        oi, move = f.oi_change_15m_pct, f.change_15m_pct
        if oi is not None and move is not None and oi >= self.oi_change_min_pct and move != 0:
            sign = 1.0 if move > 0 else -1.0
            score += sign * clamp01(oi / (3 * self.oi_change_min_pct))
            reasons.append(f"OI +{oi:.2f}% in 15m with price {move:+.2f}%: new positions follow it")
        elif oi is not None:
            notes.append(f"OI {oi:+.2f}% in 15m, no build-up")
        else:
            notes.append("no open-interest data")
        basis = f.basis_pct
        if basis is not None and abs(basis) >= self.basis_extreme_pct:
            score -= clamp01(basis / (2 * self.basis_extreme_pct))
            reasons.append(f"basis {basis:+.3f}%: fade the premium")
        elif basis is not None:
            notes.append(f"basis {basis:+.3f}% neutral")
        direction = vote(score)
        if direction is None:
            return abstain(self.name, "; ".join(reasons + notes), metrics)
        return view(self.name, direction, abs(score), reasons + notes, metrics)
