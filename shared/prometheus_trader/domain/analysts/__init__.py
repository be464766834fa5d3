"""The analyst panel (SPEC §4): independent, pure analysts, one module each.

A new analyst is a new module with a class that satisfies :class:`Analyst`; add it to
:func:`default_panel` (or build your own panel list) without touching the others.
"""

from __future__ import annotations

from prometheus_trader.domain.analysts.base import NO_DATA, AnalysisContext, Analyst
from prometheus_trader.domain.analysts.correlation import CORRELATION, CorrelationAnalyst
from prometheus_trader.domain.analysts.derivatives import DERIVATIVES, DerivativesAnalyst
from prometheus_trader.domain.analysts.liquidation import LIQUIDATION, LiquidationMapAnalyst
from prometheus_trader.domain.analysts.microstructure import MICROSTRUCTURE, MicrostructureAnalyst
from prometheus_trader.domain.analysts.order_flow import ORDER_FLOW, OrderFlowAnalyst
from prometheus_trader.domain.analysts.sentiment import SENTIMENT, SentimentAnalyst, SentimentSource
from prometheus_trader.domain.analysts.structure import STRUCTURE, MarketStructureAnalyst
from prometheus_trader.domain.analysts.technical import TECHNICAL, TechnicalRegimeAnalyst


def default_panel() -> list[Analyst]:
    """The eight SPEC analysts with default settings, in a fixed order."""
    return [
        TechnicalRegimeAnalyst(),
        MarketStructureAnalyst(),
        OrderFlowAnalyst(),
        MicrostructureAnalyst(),
        DerivativesAnalyst(),
        LiquidationMapAnalyst(),
        CorrelationAnalyst(),
        SentimentAnalyst(),
    ]


__all__ = [
    "CORRELATION",
    "DERIVATIVES",
    "LIQUIDATION",
    "MICROSTRUCTURE",
    "NO_DATA",
    "ORDER_FLOW",
    "SENTIMENT",
    "STRUCTURE",
    "TECHNICAL",
    "AnalysisContext",
    "Analyst",
    "CorrelationAnalyst",
    "DerivativesAnalyst",
    "LiquidationMapAnalyst",
    "MarketStructureAnalyst",
    "MicrostructureAnalyst",
    "OrderFlowAnalyst",
    "SentimentAnalyst",
    "SentimentSource",
    "TechnicalRegimeAnalyst",
    "default_panel",
]
