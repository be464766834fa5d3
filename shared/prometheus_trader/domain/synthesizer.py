"""Synthesizer policies (SPEC §4) and opportunity-signal construction.

A policy turns the panel's views (and the symbol's features) into a
:class:`SynthesisResult`: publish or skip, with the reasons either way. Two policies
ship: :class:`ConsensusPolicy` and :class:`HierarchicalPolicy`. :func:`build_signal`
then turns a publish decision into an :class:`OpportunitySignal` with prices in
absolute terms and in % of entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prometheus_trader.domain.analysts import (
    Analyst,
    CorrelationAnalyst,
    DerivativesAnalyst,
    LiquidationMapAnalyst,
    MarketStructureAnalyst,
    MicrostructureAnalyst,
    OrderFlowAnalyst,
    SentimentAnalyst,
    TechnicalRegimeAnalyst,
)
from prometheus_trader.domain.analysts.base import NO_DATA
from prometheus_trader.domain.analysts.technical import TECHNICAL
from prometheus_trader.domain.features import SymbolFeatures
from prometheus_trader.domain.ids import stable_id
from prometheus_trader.domain.market import FloatArray, MarketType
from prometheus_trader.domain.signals import (
    AnalystView,
    Direction,
    OpportunitySignal,
    TakeProfitLevel,
)

__all__ = [
    "ConsensusConfig",
    "ConsensusPolicy",
    "HierarchicalConfig",
    "HierarchicalPolicy",
    "SignalParams",
    "SynthesisPolicy",
    "SynthesisResult",
    "build_signal",
    "policy_from_name",
    "regime_veto_mask",
    "regime_vetoes",
]


class SynthesisResult(BaseModel):
    """A policy's decision: publish (with a direction) or skip (with ``skipped_reason``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str
    publish: bool
    direction: Direction | None
    confidence: float = Field(ge=0.0, le=1.0)
    reasons: list[str] = Field(default_factory=list)
    skipped_reason: str | None = None
    agreeing: int = 0  # analysts voting with the chosen direction
    voting: int = 0  # analysts with an opinion
    score: float | None = None  # hierarchical confluence score


class SynthesisPolicy(Protocol):
    """Turns the panel's views into a publish/skip decision."""

    @property
    def name(self) -> str:
        """Policy name (also used as the signal's strategy)."""
        ...

    def decide(self, views: Sequence[AnalystView], features: SymbolFeatures) -> SynthesisResult:
        """Decide for one symbol."""
        ...


def _skip(
    policy: str,
    reason: str,
    *,
    direction: Direction | None = None,
    confidence: float = 0.0,
    reasons: list[str] | None = None,
    agreeing: int = 0,
    voting: int = 0,
    score: float | None = None,
) -> SynthesisResult:
    return SynthesisResult(
        policy=policy,
        publish=False,
        direction=direction,
        confidence=confidence,
        reasons=reasons or [],
        skipped_reason=reason,
        agreeing=agreeing,
        voting=voting,
        score=score,
    )


# --------------------------------------------------------------------------- consensus


class ConsensusConfig(BaseModel):
    """Consensus knobs (SPEC: 65 % confidence, 5 of 8 analysts, no regime conflict)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_confidence: float = Field(default=0.65, ge=0.0, le=1.0)
    min_agreeing: int = Field(default=5, ge=1)
    weights: dict[str, float] = Field(default_factory=dict)  # per analyst, default 1.0
    regime_analyst: str = TECHNICAL
    ranging_is_conflict: bool = True
    # False (SPEC): ``min_agreeing`` of the whole panel. True: scaled to the analysts that
    # have data, ceil(min_agreeing × with_data ÷ panel_size), at least 2 — for data sets
    # without OI/sentiment where only part of the panel can ever vote.
    scale_to_available: bool = False


class ConsensusPolicy:
    """Publish when enough analysts agree, confidently, and the regime does not object.

    Confidence (0..1) is the weighted share of the majority: with
    ``w_i = weight(analyst_i) × strength_i`` over the analysts that vote (abstentions are
    left out), confidence = Σ w_i of those voting with the majority ÷ Σ w_i of all voters.
    The majority is the direction with the larger Σ w_i (a tie publishes nothing).

    A *major conflict* is the regime analyst saying "ranging" (an abstention with
    ``metrics["trending"] == 0``) or voting against the majority.
    """

    name = "consensus"

    def __init__(self, config: ConsensusConfig | None = None) -> None:
        self.config = config or ConsensusConfig()

    def decide(self, views: Sequence[AnalystView], features: SymbolFeatures) -> SynthesisResult:
        """Weighted vote of the panel."""
        cfg = self.config
        voters = [v for v in views if not v.abstains]
        totals = {Direction.LONG: 0.0, Direction.SHORT: 0.0}
        for v in voters:
            assert v.direction is not None  # voters never abstain
            totals[v.direction] += cfg.weights.get(v.analyst, 1.0) * v.strength
        total = totals[Direction.LONG] + totals[Direction.SHORT]
        if not voters or total <= 0:
            return _skip(self.name, "no analyst has an opinion")
        if totals[Direction.LONG] == totals[Direction.SHORT]:
            return _skip(self.name, "long and short weigh the same", voting=len(voters))
        majority = max(totals, key=lambda d: (totals[d], d.value))
        confidence = totals[majority] / total
        agreeing = [v for v in voters if v.direction is majority]
        required = cfg.min_agreeing
        if cfg.scale_to_available and views:
            with_data = sum(1 for v in views if v.metrics.get(NO_DATA) != 1.0)
            required = max(2, math.ceil(cfg.min_agreeing * with_data / len(views)))
        reasons = [
            f"{len(agreeing)} of {len(views)} analysts {majority.value} "
            f"({len(voters)} voting), weighted confidence {confidence:.2f}"
        ]
        reasons += [f"{v.analyst}: {'; '.join(v.reasons)}" for v in agreeing]
        problems: list[str] = []
        if confidence < cfg.min_confidence:
            problems.append(f"confidence {confidence:.2f} < {cfg.min_confidence:.2f}")
        if len(agreeing) < required:
            problems.append(f"{len(agreeing)} analysts agree, need {required}")
        conflict = self._regime_conflict(views, majority)
        if conflict:
            problems.append(conflict)
        if problems:
            return _skip(
                self.name,
                "; ".join(problems),
                direction=majority,
                confidence=confidence,
                reasons=reasons,
                agreeing=len(agreeing),
                voting=len(voters),
            )
        return SynthesisResult(
            policy=self.name,
            publish=True,
            direction=majority,
            confidence=confidence,
            reasons=reasons,
            agreeing=len(agreeing),
            voting=len(voters),
        )

    def _regime_conflict(self, views: Sequence[AnalystView], majority: Direction) -> str | None:
        for v in views:
            if v.analyst != self.config.regime_analyst:
                continue
            if v.direction is majority.opposite:
                return f"regime analyst votes {v.direction.value}: {'; '.join(v.reasons)}"
            if self.config.ranging_is_conflict and v.abstains and v.metrics.get("trending") == 0.0:
                return f"regime analyst says ranging: {'; '.join(v.reasons)}"
        return None


# ------------------------------------------------------------------------ hierarchical


class ConfluenceWeights(BaseModel):
    """Secondary confluence weights (SPEC); their sum is the maximum score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: float = 1.5
    mean_reversion: float = 1.5
    autocorrelation: float = 1.0
    demand: float = 2.0  # a fresh zone at entry in the trade direction
    supply: float = 0.5  # the opposite zone as a target
    fvg: float = 1.5

    @property
    def total(self) -> float:
        """Maximum reachable score."""
        return (
            self.profile
            + self.mean_reversion
            + self.autocorrelation
            + self.demand
            + self.supply
            + self.fvg
        )


class HierarchicalConfig(BaseModel):
    """Hierarchical (order-flow scalping) knobs; defaults are the SPEC's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    adx_min: float = 25.0
    persistence_min: float = 0.55
    mean_reversion_max: float = 0.6
    cascade_long: float = 2.0
    cascade_short: float = 0.5
    volume_spike_min: float = 1.5
    bounce_close_min: float = 0.6  # last 5m close in the top 40 % of its range (long)
    profile_tolerance_pct: float = 0.1  # "at VAL/VAH" = within this % of it
    weights: ConfluenceWeights = Field(default_factory=ConfluenceWeights)
    min_score: float = 3.0


class HierarchicalPolicy:
    """L1 regime → L2 zone → L3 imbalance cascade → L4 bounce + volume, then confluence.

    Each level short-circuits with its reason. Long shown; short is mirrored.

    - L1: ADX > 25, persistence (Hurst) > 0.55, mean-reversion < 0.6; direction = the
      trend's (+DI vs -DI). Ranging stops here.
    - L2: price at a demand zone or in a bullish fair-value gap.
    - L3: imbalance 1m > 5m > 15m and 1m > 2.0 (short: 1m < 5m < 15m and 1m < 0.5).
    - L4: last 5m bar closed in its top 40 % (a bounce) and volume spike > 1.5×.
    - Confluence: profile (at VAL 1.5, inside the value area below POC 0.75),
      mean reversion (price ≥ 2σ below the 15-min mean 1.5, ≥ 1σ 0.75), autocorrelation
      (|r| > 0.6 or < 0.3: 1.0, else 0.5), demand zone (fresh 2.0, ≤ 2 touches 1.0),
      supply zone above as a target 0.5, bullish FVG 1.5. Trade at score ≥ 3.0.

    The SPEC calls the scale "of 10"; the SPEC weights sum to 8.0, which is the real
    maximum. Confidence = score ÷ maximum score (0..1).
    """

    name = "hierarchical"

    def __init__(self, config: HierarchicalConfig | None = None) -> None:
        self.config = config or HierarchicalConfig()

    def decide(self, views: Sequence[AnalystView], features: SymbolFeatures) -> SynthesisResult:
        """Levels L1..L4, then the confluence score."""
        cfg, f = self.config, features
        # L1 regime
        if f.adx is None or f.hurst is None or f.mean_reversion is None:
            return _skip(self.name, "L1: regime unknown (not enough 15m history)")
        direction = f.trend_direction
        regime = (
            f"ADX {f.adx:.1f}, persistence {f.hurst:.2f}, mean-reversion {f.mean_reversion:.2f}"
        )
        if (
            f.adx <= cfg.adx_min
            or f.hurst <= cfg.persistence_min
            or f.mean_reversion >= cfg.mean_reversion_max
            or direction is None
        ):
            return _skip(self.name, f"L1: ranging ({regime})")
        long = direction is Direction.LONG
        reasons = [f"L1: trending {direction.value} ({regime})"]
        # L2 zone
        if long and not (f.at_demand_zone or f.in_bullish_fvg):
            return _skip(
                self.name,
                f"L2: price not at a demand zone or bullish FVG "
                f"(nearest demand {_pct(f.demand_distance_pct)} away)",
                direction=direction,
                reasons=reasons,
            )
        if not long and not (f.at_supply_zone or f.in_bearish_fvg):
            return _skip(
                self.name,
                f"L2: price not at a supply zone or bearish FVG "
                f"(nearest supply {_pct(f.supply_distance_pct)} away)",
                direction=direction,
                reasons=reasons,
            )
        reasons.append("L2: price at a " + ("demand" if long else "supply") + " zone / FVG")
        # L3 cascade
        i1, i5, i15 = f.imbalance_1m, f.imbalance_5m, f.imbalance_15m
        if i1 is None or i5 is None or i15 is None:
            return _skip(self.name, "L3: no order-flow data", direction=direction, reasons=reasons)
        flow = f"1m {i1:.2f}, 5m {i5:.2f}, 15m {i15:.2f}" + (
            " (estimated)" if f.imbalance_estimated else ""
        )
        cascade = (
            (i1 > i5 > i15 and i1 > cfg.cascade_long)
            if long
            else (i1 < i5 < i15 and i1 < cfg.cascade_short)
        )
        if not cascade:
            return _skip(
                self.name,
                f"L3: no {direction.value} imbalance cascade ({flow})",
                direction=direction,
                reasons=reasons,
            )
        reasons.append(f"L3: {direction.value} imbalance cascade ({flow})")
        # L4 bounce + volume
        pos, spike = f.close_position_5m, f.volume_spike
        bounce = pos is not None and (
            pos >= cfg.bounce_close_min if long else pos <= 1 - cfg.bounce_close_min
        )
        if not bounce or spike is None or spike <= cfg.volume_spike_min:
            return _skip(
                self.name,
                f"L4: no bounce with volume (5m close at {_ratio(pos)} of range, "
                f"volume spike {_num(spike)}× ≤ {cfg.volume_spike_min:g}× or no bounce)",
                direction=direction,
                reasons=reasons,
            )
        reasons.append(f"L4: bounce (close at {_ratio(pos)}) on {spike:.2f}× volume")
        score, parts = self._confluence(f, long)
        reasons += parts
        maximum = cfg.weights.total
        confidence = min(1.0, score / maximum) if maximum > 0 else 0.0
        reasons.append(f"confluence {score:.2f} of {maximum:g} (trade at ≥ {cfg.min_score:g})")
        if score < cfg.min_score:
            return _skip(
                self.name,
                f"confluence {score:.2f} < {cfg.min_score:g}",
                direction=direction,
                confidence=confidence,
                reasons=reasons,
                score=score,
            )
        return SynthesisResult(
            policy=self.name,
            publish=True,
            direction=direction,
            confidence=confidence,
            reasons=reasons,
            score=score,
            agreeing=sum(1 for v in views if v.direction is direction),
            voting=sum(1 for v in views if not v.abstains),
        )

    def _confluence(self, f: SymbolFeatures, long: bool) -> tuple[float, list[str]]:
        w, cfg = self.config.weights, self.config
        score = 0.0
        parts: list[str] = []
        price = f.last_price
        if price and f.poc is not None and f.vah is not None and f.val is not None:
            edge = f.val if long else f.vah
            at_edge = abs(price - edge) / price * 100 <= cfg.profile_tolerance_pct
            inside = f.val < price < f.vah
            good_side = price <= f.poc if long else price >= f.poc
            if at_edge:
                score += w.profile
                parts.append(f"profile: at {'VAL' if long else 'VAH'} {edge:g} (+{w.profile:g})")
            elif inside and good_side:
                score += w.profile / 2
                parts.append(f"profile: inside value area, POC {f.poc:g} (+{w.profile / 2:g})")
        dev = f.deviation_sigma_15m
        if dev is not None:
            stretch = -dev if long else dev
            if stretch >= 2:
                score += w.mean_reversion
                parts.append(
                    f"mean reversion: {dev:+.2f}σ from 15-min mean (+{w.mean_reversion:g})"
                )
            elif stretch >= 1:
                score += w.mean_reversion / 2
                half = w.mean_reversion / 2
                parts.append(f"mean reversion: {dev:+.2f}σ from 15-min mean (+{half:g})")
        r = f.autocorr_15m
        if r is not None:
            gain = w.autocorrelation if abs(r) > 0.6 or abs(r) < 0.3 else w.autocorrelation / 2
            score += gain
            parts.append(f"autocorrelation r={r:+.2f} (+{gain:g})")
        at_zone = f.at_demand_zone if long else f.at_supply_zone
        touches = f.demand_touches if long else f.supply_touches
        if at_zone and touches is not None and touches <= 2:
            gain = w.demand if touches == 0 else w.demand / 2
            score += gain
            kind = "demand" if long else "supply"
            parts.append(f"{kind} zone at entry, {touches} touches (+{gain:g})")
        target = f.supply_distance_pct if long else f.demand_distance_pct
        if target is not None and target > 0:
            score += w.supply
            kind = "supply" if long else "demand"
            parts.append(f"{kind} zone {target:.2f}% away as target (+{w.supply:g})")
        if f.in_bullish_fvg if long else f.in_bearish_fvg:
            score += w.fvg
            parts.append(f"in a {'bullish' if long else 'bearish'} FVG (+{w.fvg:g})")
        return score, parts


# ------------------------------------------------------------------- regime veto

# the panel's analysts whose views name them (``view.analyst == analyst.name``)
_KNOWN_ANALYSTS = (
    TechnicalRegimeAnalyst,
    MarketStructureAnalyst,
    OrderFlowAnalyst,
    MicrostructureAnalyst,
    DerivativesAnalyst,
    LiquidationMapAnalyst,
    CorrelationAnalyst,
    SentimentAnalyst,
)


def regime_vetoes(
    policy: SynthesisPolicy, panel: Sequence[Analyst], regime: SymbolFeatures
) -> bool:
    """True when ``policy.decide(views of panel, features)`` is a skip for EVERY features
    whose 15m regime fields (``feature_series.REGIME_FIELDS``) are ``regime``'s: a caller
    may then leave the other features and analysts uncomputed (the backtest does; the
    decision is the same). False whenever that is not certain: other policies or panels.

    - hierarchical: its level 1 alone (regime unknown or ranging) skips;
    - consensus (``ranging_is_conflict``): the regime analyst saying "ranging" is a major
      conflict, and every branch of ``decide`` then skips (no voter, a tie, or problems).
      Only when the regime analyst is the panel's one ``TechnicalRegimeAnalyst`` (it reads
      the regime fields alone) and every analyst is a domain one (views named by it).
    """
    f = regime
    if type(policy) is HierarchicalPolicy:
        cfg = policy.config
        return (
            f.adx is None
            or f.hurst is None
            or f.mean_reversion is None
            or f.adx <= cfg.adx_min
            or f.hurst <= cfg.persistence_min
            or f.mean_reversion >= cfg.mean_reversion_max
            or f.trend_direction is None
        )
    if type(policy) is ConsensusPolicy and policy.config.ranging_is_conflict:
        if not all(type(a) in _KNOWN_ANALYSTS for a in panel):
            return False
        named = [a for a in panel if a.name == policy.config.regime_analyst]
        if len(named) != 1 or type(named[0]) is not TechnicalRegimeAnalyst:
            return False
        return named[0].ranging(f)  # = its view is an abstention with "trending" 0
    return False


def regime_veto_mask(
    policy: SynthesisPolicy,
    panel: Sequence[Analyst],
    adx: FloatArray,
    plus_di: FloatArray,
    minus_di: FloatArray,
    hurst: FloatArray,
    mean_reversion: FloatArray,
) -> npt.NDArray[np.bool_] | None:
    """``regime_vetoes`` at many regimes at once, each given by its regime fields (equal
    length arrays; NaN: None). None when ``regime_vetoes`` would not decide by the two
    closed forms below (the caller asks it regime by regime); otherwise the very same
    comparisons, element-wise (``tests/unit/test_regime_veto.py`` compares them)."""
    unknown = np.isnan(adx) | np.isnan(hurst) | np.isnan(mean_reversion)
    # trend_direction is None: a DI unknown, or both equal
    no_direction = np.isnan(plus_di) | np.isnan(minus_di) | (plus_di == minus_di)
    if type(policy) is HierarchicalPolicy:
        cfg = policy.config
        return (  # type: ignore[no-any-return]
            unknown
            | (adx <= cfg.adx_min)
            | (hurst <= cfg.persistence_min)
            | (mean_reversion >= cfg.mean_reversion_max)
            | no_direction
        )
    if type(policy) is ConsensusPolicy and policy.config.ranging_is_conflict:
        if not all(type(a) in _KNOWN_ANALYSTS for a in panel):
            return None
        named = [a for a in panel if a.name == policy.config.regime_analyst]
        if len(named) != 1 or type(named[0]) is not TechnicalRegimeAnalyst:
            return None
        a = named[0]
        trending = (
            (adx > a.adx_min)
            & (hurst > a.persistence_min)
            & (mean_reversion < a.mean_reversion_max)
            & ~no_direction
        )
        return ~unknown & ~trending  # type: ignore[no-any-return]
    return None


def _pct(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.2f}%"


def _ratio(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.0%}"


def _num(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.2f}"


def policy_from_name(
    name: str,
    *,
    min_confidence: float = 0.65,
    min_agreeing: int = 5,
    scale_to_available: bool = False,
) -> SynthesisPolicy:
    """The named policy; the keyword knobs apply to consensus only."""
    if name == ConsensusPolicy.name:
        return ConsensusPolicy(
            ConsensusConfig(
                min_confidence=min_confidence,
                min_agreeing=min_agreeing,
                scale_to_available=scale_to_available,
            )
        )
    if name == HierarchicalPolicy.name:
        return HierarchicalPolicy()
    raise ValueError(f"unknown synthesizer policy {name!r} (consensus, hierarchical)")


# ------------------------------------------------------------------------------ signals


class SignalParams(BaseModel):
    """How a decision becomes prices. Distances are in % of the entry price.

    stop = max(``stop_atr_multiple`` × ATR%, ``min_stop_pct``), at most ``max_stop_pct``;
    entry range = entry ± min(``entry_atr_fraction`` × ATR%, stop / 4); take-profit i at
    ``take_profit_r[i]`` × the stop distance, closing ``take_profit_fractions[i]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_atr_fraction: float = Field(default=0.25, ge=0.0)
    stop_atr_multiple: float = Field(default=1.5, gt=0.0)
    min_stop_pct: float = Field(default=0.3, gt=0.0)
    max_stop_pct: float = Field(default=10.0, gt=0.0)
    take_profit_r: tuple[float, ...] = (2.0, 3.0, 4.0)
    take_profit_fractions: tuple[float, ...] = (0.5, 0.3, 0.2)

    @model_validator(mode="after")
    def _check(self) -> SignalParams:
        if not 1 <= len(self.take_profit_r) <= 3:
            raise ValueError("1 to 3 take-profit levels")
        if len(self.take_profit_fractions) != len(self.take_profit_r):
            raise ValueError("one size fraction per take-profit level")
        if abs(sum(self.take_profit_fractions) - 1.0) > 1e-9:
            raise ValueError("take-profit size fractions must sum to 1")
        if any(f <= 0 for f in self.take_profit_fractions):
            raise ValueError("take-profit size fractions must be positive")
        if any(r <= 0 for r in self.take_profit_r) or list(self.take_profit_r) != sorted(
            set(self.take_profit_r)
        ):
            raise ValueError("take-profit R multiples must be positive and increasing")
        if self.min_stop_pct > self.max_stop_pct:
            raise ValueError("min_stop_pct must not exceed max_stop_pct")
        if self.max_stop_pct * self.take_profit_r[-1] >= 100:
            raise ValueError("a short's farthest take-profit would be at or below zero")
        return self

    @property
    def reward_risk(self) -> float:
        """Size-weighted average R multiple of the take-profit levels."""
        return sum(
            r * f for r, f in zip(self.take_profit_r, self.take_profit_fractions, strict=True)
        )


def build_signal(
    *,
    symbol: str,
    exchange: str,
    market_type: MarketType,
    direction: Direction,
    last_price: float,
    features: SymbolFeatures,
    views: Sequence[AnalystView],
    synthesis: SynthesisResult,
    now: datetime,
    ttl_minutes: int,
    strategy: str,
    rank_score: float,
    params: SignalParams | None = None,
) -> OpportunitySignal:
    """An opportunity signal around ``last_price``.

    R:R is the size-weighted average R multiple of the take-profits (2.7 with the
    defaults); the id is ``stable_id`` of (exchange, market, symbol, strategy, created
    time), so a re-run of the same round creates the same id.
    """
    p = params or SignalParams()
    if last_price <= 0:
        raise ValueError("last_price must be positive")
    atr = features.atr_pct
    stop_pct = p.min_stop_pct if atr is None else p.stop_atr_multiple * atr
    stop_pct = min(p.max_stop_pct, max(p.min_stop_pct, stop_pct))
    band_pct = min(p.entry_atr_fraction * (atr or 0.0), stop_pct / 4)
    sign = direction.sign
    entry = last_price
    take_profits = [
        TakeProfitLevel(
            price=entry * (1 + sign * r * stop_pct / 100),
            pct=r * stop_pct,
            size_fraction=fraction,
        )
        for r, fraction in zip(p.take_profit_r, p.take_profit_fractions, strict=True)
    ]
    return OpportunitySignal(
        id=stable_id("signal", exchange, market_type.value, symbol, strategy, now.isoformat()),
        symbol=symbol,
        exchange=exchange,
        market_type=market_type,
        direction=direction,
        entry_price=entry,
        entry_low=entry * (1 - band_pct / 100),
        entry_high=entry * (1 + band_pct / 100),
        stop_loss=entry * (1 - sign * stop_pct / 100),
        stop_loss_pct=stop_pct,
        take_profits=take_profits,
        reward_risk=p.reward_risk,
        confidence=synthesis.confidence,
        created_at=now,
        expires_at=now + timedelta(minutes=ttl_minutes),
        strategy=strategy,
        analysts=list(views),
        rank_score=rank_score,
        features=features.as_dict(),
    )
