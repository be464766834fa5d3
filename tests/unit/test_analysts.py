"""The analyst panel: each analyst votes on its evidence and abstains without its data."""

from __future__ import annotations

import pytest
from _analysis_fixtures import features, now_after, random_walk, series

from prometheus_trader.domain.analysts import (
    NO_DATA,
    AnalysisContext,
    CorrelationAnalyst,
    DerivativesAnalyst,
    LiquidationMapAnalyst,
    MarketStructureAnalyst,
    MicrostructureAnalyst,
    OrderFlowAnalyst,
    SentimentAnalyst,
    TechnicalRegimeAnalyst,
    default_panel,
)
from prometheus_trader.domain.features import SymbolFeatures, compute_features
from prometheus_trader.domain.market import CandleSeries
from prometheus_trader.domain.signals import Direction

pytestmark = pytest.mark.unit


def ctx(f: SymbolFeatures) -> AnalysisContext:
    return AnalysisContext(symbol=f.symbol, features=f)


def test_default_panel_has_the_eight_spec_analysts() -> None:
    names = [a.name for a in default_panel()]
    assert names == [
        "technical",
        "structure",
        "order_flow",
        "microstructure",
        "derivatives",
        "liquidation",
        "correlation",
        "sentiment",
    ]


def test_every_analyst_abstains_without_data() -> None:
    empty = compute_features(
        CandleSeries.empty("X/USDT:USDT", "1m"),
        btc_1m=None,
        funding=[],
        open_interest=[],
        now_ms=0,
    )
    for analyst in default_panel():
        v = analyst.analyze(ctx(empty))
        assert v.abstains, analyst.name
        assert v.strength == 0.0
        assert v.reasons, analyst.name
        assert v.analyst == analyst.name


def test_on_real_looking_data_without_oi_the_data_gaps_are_abstentions() -> None:
    s = series(random_walk(1440, seed=1))
    btc = series(random_walk(1440, seed=2), symbol="BTC/USDT:USDT")
    f = compute_features(s, btc_1m=btc, funding=[], open_interest=[], now_ms=now_after(s))
    views = {a.name: a.analyze(AnalysisContext(s.symbol, f, s, btc)) for a in default_panel()}
    for name in ("liquidation", "derivatives", "sentiment"):
        assert views[name].abstains
        assert views[name].metrics.get(NO_DATA) == 1.0
    assert "no open-interest data" in views["liquidation"].reasons[0]
    assert views["sentiment"].reasons == ["no sentiment source configured"]
    # order flow uses the estimate and says so whenever it speaks
    flow = views["order_flow"]
    assert flow.metrics["imbalance_estimated"] == 1.0
    assert "estimated" in flow.reasons[0]


def test_technical_votes_with_the_trend_and_abstains_when_ranging() -> None:
    trending = features(adx=40.0, plus_di=35.0, minus_di=10.0, hurst=0.7, mean_reversion=0.3)
    v = TechnicalRegimeAnalyst().analyze(ctx(trending))
    assert v.direction is Direction.LONG and v.strength > 0.4
    assert v.metrics["trending"] == 1.0
    down = trending.model_copy(update={"plus_di": 10.0, "minus_di": 35.0})
    assert TechnicalRegimeAnalyst().analyze(ctx(down)).direction is Direction.SHORT
    ranging = trending.model_copy(update={"adx": 18.0})
    r = TechnicalRegimeAnalyst().analyze(ctx(ranging))
    assert r.abstains and r.metrics["trending"] == 0.0 and "ranging" in r.reasons[0]
    assert "18.0" in r.reasons[0]
    choppy = trending.model_copy(update={"mean_reversion": 0.7})
    assert TechnicalRegimeAnalyst().analyze(ctx(choppy)).abstains


def test_order_flow_cascade_long_short_and_balanced() -> None:
    analyst = OrderFlowAnalyst()
    long = analyst.analyze(ctx(features(imbalance_1m=3.0, imbalance_5m=2.0, imbalance_15m=1.2)))
    assert long.direction is Direction.LONG and long.strength >= 0.6
    assert "cascade" in long.reasons[0] and "taker" in long.reasons[0]
    short = analyst.analyze(ctx(features(imbalance_1m=0.3, imbalance_5m=0.6, imbalance_15m=0.9)))
    assert short.direction is Direction.SHORT and "cascade" in short.reasons[0]
    # not a cascade (1m below 2.0), 5m leans long: a weaker vote
    lean = analyst.analyze(ctx(features(imbalance_1m=1.5, imbalance_5m=1.6, imbalance_15m=1.0)))
    assert lean.direction is Direction.LONG and lean.strength < long.strength
    flat = analyst.analyze(ctx(features(imbalance_1m=1.0, imbalance_5m=1.05, imbalance_15m=1.0)))
    assert flat.abstains
    estimated = analyst.analyze(
        ctx(
            features(
                imbalance_1m=3.0, imbalance_5m=2.0, imbalance_15m=1.2, imbalance_estimated=True
            )
        )
    )
    assert estimated.direction is Direction.LONG
    assert estimated.strength < long.strength
    assert "estimated" in estimated.reasons[0]


def test_structure_combines_zone_fvg_and_break_of_structure() -> None:
    analyst = MarketStructureAnalyst()
    bull = features(
        at_demand_zone=True,
        demand_distance_pct=0.0,
        demand_touches=0,
        break_of_structure=1,
        in_bullish_fvg=True,
    )
    v = analyst.analyze(ctx(bull))
    assert v.direction is Direction.LONG and v.strength == pytest.approx(1.0)
    bear = features(at_supply_zone=True, supply_distance_pct=0.05, supply_touches=1)
    assert analyst.analyze(ctx(bear)).direction is Direction.SHORT
    assert analyst.analyze(ctx(features())).abstains
    conflict = features(
        at_demand_zone=True,
        demand_distance_pct=0.0,
        demand_touches=0,
        at_supply_zone=True,
        supply_distance_pct=0.0,
        supply_touches=0,
    )
    assert analyst.analyze(ctx(conflict)).abstains


def test_microstructure_rejection_wicks() -> None:
    analyst = MicrostructureAnalyst()
    hammer = features(close_position_5m=0.8, lower_wick_5m=0.6, upper_wick_5m=0.1, volume_spike=2.0)
    v = analyst.analyze(ctx(hammer))
    assert v.direction is Direction.LONG and "rejection" in v.reasons[0]
    star = features(close_position_5m=0.2, lower_wick_5m=0.1, upper_wick_5m=0.6, volume_spike=1.0)
    s = analyst.analyze(ctx(star))
    assert s.direction is Direction.SHORT and s.strength < v.strength  # no volume boost
    doji = features(close_position_5m=0.5, lower_wick_5m=0.2, upper_wick_5m=0.2, volume_spike=1.0)
    assert analyst.analyze(ctx(doji)).abstains


def test_derivatives_fades_crowded_funding_and_follows_oi_build_up() -> None:
    analyst = DerivativesAnalyst()
    assert analyst.analyze(ctx(features(funding_rate=0.0008))).direction is Direction.SHORT
    assert analyst.analyze(ctx(features(funding_rate=-0.0005))).direction is Direction.LONG
    neutral = analyst.analyze(ctx(features(funding_rate=0.0001)))
    assert neutral.abstains and "neutral" in neutral.reasons[0]
    assert neutral.metrics.get(NO_DATA) is None  # it had data, it just has no edge
    oi = analyst.analyze(
        ctx(features(funding_rate=0.0001, oi_change_15m_pct=3.0, change_15m_pct=0.8))
    )
    assert oi.direction is Direction.LONG
    basis = analyst.analyze(ctx(features(basis_pct=0.3)))
    assert basis.direction is Direction.SHORT


def test_liquidation_map_needs_oi_and_leans_to_the_bigger_pool() -> None:
    analyst = LiquidationMapAnalyst()
    assert analyst.analyze(ctx(features())).abstains
    up = features(
        liq_imbalance=3.0,
        liq_long_notional=1e6,
        liq_short_notional=3e6,
        liq_cluster_price=105.0,
        liq_cluster_ratio=2.5,
    )
    assert analyst.analyze(ctx(up)).direction is Direction.LONG
    down = up.model_copy(update={"liq_imbalance": 0.25})
    assert analyst.analyze(ctx(down)).direction is Direction.SHORT
    assert analyst.analyze(ctx(up.model_copy(update={"liq_imbalance": 1.1}))).abstains


def test_correlation_follows_btc_only_when_correlated() -> None:
    analyst = CorrelationAnalyst()
    assert analyst.analyze(ctx(features())).abstains
    v = analyst.analyze(ctx(features(btc_correlation=0.9, btc_change_15m_pct=-0.8)))
    assert v.direction is Direction.SHORT and v.strength == pytest.approx(0.9 * 0.8)
    assert analyst.analyze(ctx(features(btc_correlation=0.3, btc_change_15m_pct=-0.8))).abstains
    assert analyst.analyze(ctx(features(btc_correlation=0.9, btc_change_15m_pct=0.05))).abstains


class _FixedSentiment:
    def __init__(self, score: float | None) -> None:
        self.score = score

    def sentiment(self, symbol: str) -> float | None:
        return self.score


def test_sentiment_abstains_without_a_source_and_votes_with_one() -> None:
    f = features()
    assert SentimentAnalyst().analyze(ctx(f)).reasons == ["no sentiment source configured"]
    assert SentimentAnalyst(source=_FixedSentiment(0.7)).analyze(ctx(f)).direction is Direction.LONG
    assert SentimentAnalyst(source=_FixedSentiment(0.1)).analyze(ctx(f)).abstains
    assert SentimentAnalyst(source=_FixedSentiment(None)).analyze(ctx(f)).abstains


def test_views_carry_only_finite_metrics_and_are_deterministic() -> None:
    s = series(random_walk(1440, seed=3, drift=0.0004))
    f = compute_features(s, btc_1m=None, funding=[], open_interest=[], now_ms=now_after(s))
    first = [a.analyze(ctx(f)).model_dump_json() for a in default_panel()]
    second = [a.analyze(ctx(f)).model_dump_json() for a in default_panel()]
    assert first == second
