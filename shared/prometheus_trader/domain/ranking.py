"""The SPEC ranking: 50% imbalance + 30% liquidation-cluster size + 20% historical success.

Each component is normalized to 0..1 before weighting, so the score is 0..1:

- imbalance = min(|ln(buy ÷ sell)| / ln 3, 1) on the 5m order-flow ratio (a 3:1 imbalance
  either way scores 1; balanced flow scores 0). 0 when the ratio is unknown.
- cluster = min(largest liquidation cluster ÷ the coin's average cluster, 2) / 2, i.e. the
  SPEC's "% of the typical cluster, capped at 200 %". 0 without open-interest data.
- success = the coin's historical win rate (0..1); 0.5 (no evidence) when it has none.

Symbols whose data quality is not OK are never ranked; they are returned apart with the
reason. Top movers (|1m| > 2 % or |5m| > 5 %) are flagged for immediate re-analysis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from prometheus_trader.domain.features import SymbolFeatures
from prometheus_trader.domain.market import DataQuality

__all__ = [
    "FULL_RATIO",
    "RANKING_FIELDS",
    "ExcludedSymbol",
    "RankInputs",
    "RankedSymbol",
    "Ranking",
    "RankingWeights",
    "rank_inputs",
    "rank_order",
    "rank_order_of",
    "rank_symbols",
]

SUCCESS_PRIOR = 0.5
TOP_MOVER_1M_PCT = 2.0
TOP_MOVER_5M_PCT = 5.0


class RankingWeights(BaseModel):
    """Component weights (SPEC: 0.5 / 0.3 / 0.2) and normalization constants."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    imbalance: float = 0.5
    cluster: float = 0.3
    success: float = 0.2
    imbalance_full_ratio: float = 3.0  # |ln ratio| / ln(this) saturates at 1
    cluster_cap: float = 2.0  # 200 % of the typical cluster


class RankedSymbol(BaseModel):
    """One ranked symbol with every input of its score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    rank: int
    score: float
    imbalance_component: float
    cluster_component: float
    success_component: float
    imbalance_ratio: float | None
    imbalance_estimated: bool
    cluster_ratio: float | None
    success_rate: float | None  # None: no history, the prior was used
    top_mover: bool
    top_mover_reasons: list[str]
    data_quality: DataQuality
    features: dict[str, float]


class ExcludedSymbol(BaseModel):
    """A symbol left out of the ranking, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    data_quality: DataQuality
    reason: str


class Ranking(BaseModel):
    """Result of one ranking round: the top N, the excluded, and every flagged top mover."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ranked: list[RankedSymbol]
    excluded: list[ExcludedSymbol]
    top_movers: list[str]  # all OK symbols flagged, also those outside the top N


def rank_symbols(
    features: Mapping[str, SymbolFeatures],
    success_rates: Mapping[str, float],
    top_n: int = 10,
    weights: RankingWeights | None = None,
) -> Ranking:
    """Score every symbol with OK data; the top ``top_n`` by score desc, then symbol."""
    scored, excluded = _scored(features, success_rates, weights or RankingWeights())
    top_movers = [r.symbol for r in scored if r.top_mover]
    ranked = [r.ranked(i + 1) for i, r in enumerate(scored[:top_n])]
    return Ranking(
        ranked=ranked,
        excluded=[
            ExcludedSymbol(
                symbol=symbol,
                data_quality=f.data_quality,
                reason=f.quality_reason or f"data quality {f.data_quality.value}",
            )
            for symbol, f in excluded
        ],
        top_movers=sorted(top_movers),
    )


RANKING_FIELDS = (
    "data_quality",
    "change_1m_pct",
    "change_5m_pct",
    "imbalance_5m",
    "imbalance_15m",
    "imbalance_estimated",
    "liq_cluster_ratio",
)
"""The only features ``rank_order`` (and the scores of ``rank_symbols``) read."""


FULL_RATIO = RankingWeights().imbalance_full_ratio
"""The full ratio ``RankInputs.imbalance`` is computed with (the default weights')."""


class RankInputs(NamedTuple):
    """What ``rank_order`` reads of one symbol (``RANKING_FIELDS``): whether its data is
    OK, the imbalance ratio scored (5m, else 15m), the cluster ratio, the 1m / 5m moves;
    and two values of those alone: ``imbalance_component(ratio, FULL_RATIO)`` and whether
    the moves make a top mover."""

    ok: bool
    ratio: float | None
    cluster_ratio: float | None
    change_1m_pct: float | None
    change_5m_pct: float | None
    imbalance: float
    mover: bool


def rank_inputs(f: SymbolFeatures) -> RankInputs:
    """The ranking's inputs of one symbol's features."""
    ratio = f.imbalance_5m if f.imbalance_5m is not None else f.imbalance_15m
    return RankInputs(
        f.data_quality is DataQuality.OK,
        ratio,
        f.liq_cluster_ratio,
        f.change_1m_pct,
        f.change_5m_pct,
        imbalance_component(ratio, FULL_RATIO),
        _top_mover(f),
    )


def rank_order(
    features: Mapping[str, SymbolFeatures],
    success_rates: Mapping[str, float],
    top_n: int = 10,
    weights: RankingWeights | None = None,
) -> tuple[list[tuple[str, float]], list[str]]:
    """What ``rank_symbols`` ranks, without building the ranking: its top ``top_n`` as
    (symbol, score) and its top movers. Reads only ``RANKING_FIELDS`` of each symbol's
    features, so a caller may pass features holding just those (the backtest computes
    the rest only for the symbols it then analyses)."""
    inputs = {symbol: rank_inputs(f) for symbol, f in features.items()}
    return rank_order_of(inputs, success_rates, top_n, weights)


def rank_order_of(
    inputs: Mapping[str, RankInputs],
    success_rates: Mapping[str, float],
    top_n: int = 10,
    weights: RankingWeights | None = None,
) -> tuple[list[tuple[str, float]], list[str]]:
    """``rank_order`` from each symbol's :class:`RankInputs` (the backtest reads them
    from arrays computed once per series: ``domain/ranking_grid.py``)."""
    w = weights or RankingWeights()
    # _scored's order and values without building its records (every ranking, every symbol)
    scored: list[tuple[float, str, float, bool]] = []  # (-score, symbol, score, top mover)
    for symbol in sorted(inputs):
        r = inputs[symbol]
        if not r.ok:
            continue
        # = _components(f, rate, w)[5]: the same operations in the same order
        imb = (
            r.imbalance
            if w.imbalance_full_ratio == FULL_RATIO
            else imbalance_component(r.ratio, w.imbalance_full_ratio)
        )
        clu = 0.0 if r.cluster_ratio is None else cluster_component(r.cluster_ratio, w.cluster_cap)
        rate = success_rates.get(symbol)
        suc = (
            min(1.0, max(0.0, rate)) if rate is not None and math.isfinite(rate) else SUCCESS_PRIOR
        )
        score = w.imbalance * imb + w.cluster * clu + w.success * suc
        scored.append((-score, symbol, score, r.mover))
    scored.sort(key=lambda r: (r[0], r[1]))
    ranked = [(symbol, float(score)) for _, symbol, score, _ in scored[:top_n]]
    return ranked, sorted(symbol for _, symbol, _, mover in scored if mover)


def _scored(
    features: Mapping[str, SymbolFeatures], success_rates: Mapping[str, float], w: RankingWeights
) -> tuple[list[_Scored], list[tuple[str, SymbolFeatures]]]:
    """The symbols with OK data scored, by score desc then symbol; the others apart."""
    scored: list[_Scored] = []
    excluded: list[tuple[str, SymbolFeatures]] = []
    for symbol in sorted(features):
        f = features[symbol]
        if f.data_quality is not DataQuality.OK:
            excluded.append((symbol, f))
            continue
        scored.append(_score(symbol, f, success_rates.get(symbol), w))
    scored.sort(key=lambda r: (-r.score, r.symbol))
    return scored, excluded


def imbalance_component(ratio: float | None, full_ratio: float = 3.0) -> float:
    """min(|ln ratio| / ln full_ratio, 1); 0 when unknown."""
    if ratio is None or ratio <= 0 or not math.isfinite(ratio):
        return 0.0
    return min(abs(math.log(ratio)) / math.log(full_ratio), 1.0)


def cluster_component(cluster_ratio: float | None, cap: float = 2.0) -> float:
    """min(cluster ÷ typical, cap) / cap; 0 when unknown."""
    if cluster_ratio is None or not math.isfinite(cluster_ratio) or cluster_ratio <= 0:
        return 0.0
    return min(cluster_ratio, cap) / cap


@dataclass(frozen=True)
class _Scored:
    """A symbol's score before the cut: only the top N become :class:`RankedSymbol`."""

    symbol: str
    score: float
    top_mover: bool
    values: dict[str, Any]
    features: SymbolFeatures

    def ranked(self, rank: int) -> RankedSymbol:
        """The validated ``RankedSymbol`` at ``rank``."""
        return RankedSymbol(**self.values, rank=rank, features=self.features.as_dict())


def _components(
    f: SymbolFeatures, success_rate: float | None, w: RankingWeights
) -> tuple[float | None, float, float, float | None, float, float]:
    """The ratio, imbalance and cluster components, the rate, success component, score."""
    ratio = f.imbalance_5m if f.imbalance_5m is not None else f.imbalance_15m
    imb = imbalance_component(ratio, w.imbalance_full_ratio)
    clu = cluster_component(f.liq_cluster_ratio, w.cluster_cap)
    rate: float | None = None
    if success_rate is not None and math.isfinite(success_rate):
        rate = min(1.0, max(0.0, success_rate))
    suc = SUCCESS_PRIOR if rate is None else rate
    return ratio, imb, clu, rate, suc, w.imbalance * imb + w.cluster * clu + w.success * suc


def _top_mover(f: SymbolFeatures) -> bool:
    """Whether ``_score`` gives the symbol top-mover reasons."""
    return (f.change_1m_pct is not None and abs(f.change_1m_pct) > TOP_MOVER_1M_PCT) or (
        f.change_5m_pct is not None and abs(f.change_5m_pct) > TOP_MOVER_5M_PCT
    )


def _score(
    symbol: str, f: SymbolFeatures, success_rate: float | None, w: RankingWeights
) -> _Scored:
    ratio, imb, clu, rate, suc, score = _components(f, success_rate, w)
    reasons: list[str] = []
    if f.change_1m_pct is not None and abs(f.change_1m_pct) > TOP_MOVER_1M_PCT:
        reasons.append(f"1m change {f.change_1m_pct:+.2f}% beyond ±{TOP_MOVER_1M_PCT:g}%")
    if f.change_5m_pct is not None and abs(f.change_5m_pct) > TOP_MOVER_5M_PCT:
        reasons.append(f"5m change {f.change_5m_pct:+.2f}% beyond ±{TOP_MOVER_5M_PCT:g}%")
    values = {
        "symbol": symbol,
        "score": score,
        "imbalance_component": imb,
        "cluster_component": clu,
        "success_component": suc,
        "imbalance_ratio": ratio,
        "imbalance_estimated": f.imbalance_estimated,
        "cluster_ratio": f.liq_cluster_ratio,
        "success_rate": rate,
        "top_mover": bool(reasons),
        "top_mover_reasons": reasons,
        "data_quality": f.data_quality,
    }
    return _Scored(symbol, score, bool(reasons), values, f)
