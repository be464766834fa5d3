"""Sentiment analyst: an optional external source; without one it always abstains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from prometheus_trader.domain.analysts.base import AnalysisContext, abstain, clamp01, view
from prometheus_trader.domain.signals import AnalystView, Direction

SENTIMENT = "sentiment"


class SentimentSource(Protocol):
    """Sentiment score of a symbol in -1 (bearish) .. +1 (bullish); None if unknown."""

    def sentiment(self, symbol: str) -> float | None:
        """Score as of the analysis (the source must itself avoid look-ahead)."""
        ...


@dataclass(frozen=True)
class SentimentAnalyst:
    """Votes with the source's score when it is beyond ±``min_score``."""

    name: str = SENTIMENT
    source: SentimentSource | None = None
    min_score: float = 0.2

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        """Sentiment vote, or an abstention saying why not."""
        if self.source is None:
            return abstain(self.name, "no sentiment source configured", no_data=True)
        score = self.source.sentiment(ctx.symbol)
        if score is None:
            return abstain(self.name, f"no sentiment for {ctx.symbol}", no_data=True)
        metrics = {"sentiment": score}
        if abs(score) < self.min_score:
            return abstain(self.name, f"neutral sentiment {score:+.2f}", metrics)
        direction = Direction.LONG if score > 0 else Direction.SHORT
        return view(self.name, direction, clamp01(abs(score)), [f"sentiment {score:+.2f}"], metrics)
