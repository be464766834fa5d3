"""Synthesizer policies and opportunity-signal construction."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _analysis_fixtures import features
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from prometheus_trader.domain.analysts import NO_DATA
from prometheus_trader.domain.features import SymbolFeatures
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import AnalystView, Direction
from prometheus_trader.domain.synthesizer import (
    ConsensusConfig,
    ConsensusPolicy,
    HierarchicalPolicy,
    SignalParams,
    SynthesisResult,
    build_signal,
    policy_from_name,
)

pytestmark = pytest.mark.unit

L, S = Direction.LONG, Direction.SHORT
NOW = datetime(2025, 5, 20, 12, 0, tzinfo=UTC)


def v(
    name: str, direction: Direction | None, strength: float = 0.8, **metrics: float
) -> AnalystView:
    return AnalystView(
        analyst=name,
        direction=direction,
        strength=strength if direction else 0.0,
        reasons=[f"{name} says {direction}"],
        metrics=metrics,
    )


def panel(
    *votes: tuple[Direction | None, float], regime: AnalystView | None = None
) -> list[AnalystView]:
    """A regime view (trending long unless given) plus the other analysts' votes."""
    first = regime or v("technical", L, 0.8, trending=1.0)
    return [first] + [v(f"a{i}", d, s) for i, (d, s) in enumerate(votes)]


# ----------------------------------------------------------------------- consensus


def test_consensus_publishes_when_five_agree_confidently() -> None:
    views = panel((L, 0.8), (L, 0.6), (L, 0.7), (L, 0.9), (None, 0.0), (S, 0.3), (None, 0.0))
    result = ConsensusPolicy().decide(views, features())
    assert result.publish and result.direction is L
    assert result.agreeing == 5 and result.voting == 6
    # strength-weighted share of the majority
    assert result.confidence == pytest.approx((0.8 + 0.8 + 0.6 + 0.7 + 0.9) / (3.8 + 0.3))
    assert result.skipped_reason is None


def test_consensus_skips_with_four_agreeing() -> None:
    views = panel((L, 0.8), (L, 0.8), (L, 0.8), (None, 0.0), (None, 0.0), (None, 0.0), (None, 0.0))
    result = ConsensusPolicy().decide(views, features())
    assert not result.publish
    assert result.skipped_reason == "4 analysts agree, need 5"
    assert result.confidence == pytest.approx(1.0)


def test_consensus_skips_below_the_confidence_bar() -> None:
    views = panel((L, 0.5), (L, 0.5), (L, 0.5), (L, 0.5), (S, 1.0), (S, 1.0), (S, 0.4))
    result = ConsensusPolicy().decide(views, features())
    assert not result.publish and result.direction is L and result.agreeing == 5
    assert result.confidence == pytest.approx(2.8 / 5.2)
    assert result.skipped_reason is not None and "confidence 0.54 < 0.65" in result.skipped_reason


def test_consensus_regime_conflicts_block() -> None:
    others = [(L, 0.9)] * 6
    ranging = v("technical", None, trending=0.0)
    result = ConsensusPolicy().decide(panel(*others, regime=ranging), features())
    assert not result.publish and "ranging" in (result.skipped_reason or "")
    against = v("technical", S, 0.5, trending=1.0)
    result = ConsensusPolicy().decide(panel(*others, regime=against), features())
    assert not result.publish and "regime analyst votes short" in (result.skipped_reason or "")
    # a regime analyst without data is not a conflict
    unknown = v("technical", None, no_data=1.0)
    assert ConsensusPolicy().decide(panel(*others, regime=unknown), features()).publish
    lenient = ConsensusPolicy(ConsensusConfig(ranging_is_conflict=False))
    assert lenient.decide(panel(*others, regime=ranging), features()).publish


def test_consensus_nothing_to_say_and_ties() -> None:
    silent = [v(f"a{i}", None) for i in range(8)]
    assert (
        ConsensusPolicy().decide(silent, features()).skipped_reason == "no analyst has an opinion"
    )
    tie = [v("a", L, 0.5), v("b", S, 0.5)]
    assert not ConsensusPolicy().decide(tie, features()).publish


def test_consensus_weights_and_scaling_to_the_analysts_with_data() -> None:
    views = panel((L, 0.8), (L, 0.8), (L, 0.8), (None, 0.0), (S, 0.9))
    views += [v("liquidation", None, **{NO_DATA: 1.0}), v("sentiment", None, **{NO_DATA: 1.0})]
    views.append(v("derivatives", None, **{NO_DATA: 1.0}))
    assert not ConsensusPolicy().decide(views, features()).publish  # 4 of 8 agree
    scaled = ConsensusPolicy(ConsensusConfig(scale_to_available=True))
    result = scaled.decide(views, features())
    assert result.publish and result.agreeing == 4  # need ceil(5 × 5 / 8) = 4
    heavy_short = ConsensusPolicy(ConsensusConfig(scale_to_available=True, weights={"a4": 10.0}))
    assert heavy_short.decide(views, features()).direction is S


# -------------------------------------------------------------------- hierarchical


def _long_setup(**overrides: Any) -> SymbolFeatures:
    values: dict[str, Any] = {
        "adx": 35.0,
        "plus_di": 30.0,
        "minus_di": 10.0,
        "hurst": 0.7,
        "mean_reversion": 0.3,
        "at_demand_zone": True,
        "demand_distance_pct": 0.0,
        "demand_touches": 0,
        "imbalance_1m": 3.0,
        "imbalance_5m": 2.0,
        "imbalance_15m": 1.2,
        "close_position_5m": 0.8,
        "volume_spike": 2.0,
        "autocorr_15m": 0.1,
        "deviation_sigma_15m": -1.5,
        "supply_distance_pct": 1.0,
    }
    values.update(overrides)
    return features(**values)


def test_hierarchical_publishes_a_full_long_setup() -> None:
    result = HierarchicalPolicy().decide([], _long_setup())
    assert result.publish and result.direction is L
    # autocorrelation 1.0 + mean reversion 0.75 + fresh demand 2.0 + supply target 0.5
    assert result.score == pytest.approx(4.25)
    assert result.confidence == pytest.approx(4.25 / 8.0)
    assert [r[:2] for r in result.reasons[:4]] == ["L1", "L2", "L3", "L4"]


def test_hierarchical_mirrors_for_shorts() -> None:
    short = _long_setup(
        plus_di=10.0,
        minus_di=30.0,
        at_demand_zone=False,
        at_supply_zone=True,
        supply_distance_pct=0.0,
        supply_touches=0,
        demand_distance_pct=1.0,
        imbalance_1m=0.3,
        imbalance_5m=0.5,
        imbalance_15m=0.8,
        close_position_5m=0.2,
        deviation_sigma_15m=2.5,
    )
    result = HierarchicalPolicy().decide([], short)
    assert result.publish and result.direction is S
    assert result.score == pytest.approx(1.0 + 1.5 + 2.0 + 0.5)


@pytest.mark.parametrize(
    ("overrides", "level"),
    [
        ({"adx": 20.0}, "L1: ranging"),
        ({"hurst": 0.5}, "L1: ranging"),
        ({"mean_reversion": 0.65}, "L1: ranging"),
        ({"adx": None}, "L1: regime unknown"),
        ({"at_demand_zone": False}, "L2:"),
        ({"imbalance_1m": 1.8}, "L3:"),  # ordered, but 1m not above 2.0
        ({"imbalance_5m": 1.0}, "L3:"),  # 1m > 5m but 5m < 15m
        ({"volume_spike": 1.4}, "L4:"),
        ({"close_position_5m": 0.3}, "L4:"),
        (
            {
                "demand_touches": 5,
                "autocorr_15m": 0.45,
                "deviation_sigma_15m": 0.0,
                "supply_distance_pct": None,
            },
            "confluence 0.50 < 3",
        ),
    ],
)
def test_hierarchical_short_circuits_at_each_level(overrides: dict[str, Any], level: str) -> None:
    result = HierarchicalPolicy().decide([], _long_setup(**overrides))
    assert not result.publish
    assert result.skipped_reason is not None and result.skipped_reason.startswith(level)


def test_policy_from_name() -> None:
    consensus = policy_from_name("consensus", min_confidence=0.7, min_agreeing=4)
    assert isinstance(consensus, ConsensusPolicy) and consensus.config.min_agreeing == 4
    assert consensus.config.min_confidence == 0.7 and not consensus.config.scale_to_available
    scaled = policy_from_name("consensus", scale_to_available=True)
    assert isinstance(scaled, ConsensusPolicy) and scaled.config.scale_to_available
    assert isinstance(policy_from_name("hierarchical"), HierarchicalPolicy)
    with pytest.raises(ValueError, match="unknown synthesizer"):
        policy_from_name("vibes")


# ------------------------------------------------------------------------- signals


def _synthesis(direction: Direction, confidence: float = 0.7) -> SynthesisResult:
    return SynthesisResult(
        policy="consensus", publish=True, direction=direction, confidence=confidence
    )


def _signal(
    direction: Direction, price: float, atr: float | None, params: SignalParams | None = None
):  # type: ignore[no-untyped-def]
    return build_signal(
        symbol="ETH/USDT:USDT",
        exchange="binance",
        market_type=MarketType.PERP,
        direction=direction,
        last_price=price,
        features=features(atr_pct=atr, last_price=price),
        views=[v("technical", direction)],
        synthesis=_synthesis(direction),
        now=NOW,
        ttl_minutes=20,
        strategy="consensus",
        rank_score=0.42,
        params=params,
    )


@settings(max_examples=200, deadline=None)
@given(
    direction=st.sampled_from([L, S]),
    price=st.floats(min_value=1e-6, max_value=1e6),
    atr=st.one_of(st.none(), st.floats(min_value=0.0, max_value=20.0)),
    k=st.floats(min_value=0.5, max_value=4.0),
)
def test_signal_prices_are_consistent(
    direction: Direction, price: float, atr: float | None, k: float
) -> None:
    s = _signal(direction, price, atr, SignalParams(stop_atr_multiple=k))
    tps = [tp.price for tp in s.take_profits]
    assert s.stop_loss is not None and s.stop_loss_pct is not None
    if direction is L:
        assert s.stop_loss < s.entry_low <= s.entry_price <= s.entry_high < tps[0] < tps[1] < tps[2]
    else:
        assert s.stop_loss > s.entry_high >= s.entry_price >= s.entry_low > tps[0] > tps[1] > tps[2]
    assert 0.3 <= s.stop_loss_pct <= 10.0
    assert abs(s.stop_loss - price) / price * 100 == pytest.approx(s.stop_loss_pct)
    for tp, r in zip(s.take_profits, (2.0, 3.0, 4.0), strict=True):
        assert tp.pct == pytest.approx(r * s.stop_loss_pct)
        assert abs(tp.price - price) / price * 100 == pytest.approx(tp.pct)
    assert math.fsum(tp.size_fraction for tp in s.take_profits) == pytest.approx(1.0)
    assert s.reward_risk == pytest.approx(2.0 * 0.5 + 3.0 * 0.3 + 4.0 * 0.2)


def test_signal_stop_from_atr_ttl_id_and_payload() -> None:
    s = _signal(L, 2000.0, 0.8)
    assert s.stop_loss_pct == pytest.approx(1.2)  # 1.5 × ATR 0.8 %
    assert s.stop_loss == pytest.approx(2000 * (1 - 0.012))
    assert s.entry_low == pytest.approx(2000 * (1 - 0.002))  # ± 0.25 × ATR
    assert s.expires_at - s.created_at == timedelta(minutes=20)
    assert s.confidence == 0.7 and s.rank_score == 0.42
    assert s.features["atr_pct"] == 0.8
    assert s.analysts[0].analyst == "technical"
    assert s.id == _signal(L, 2000.0, 0.8).id  # a re-run gives the same id
    later = build_signal(
        symbol="ETH/USDT:USDT",
        exchange="binance",
        market_type=MarketType.PERP,
        direction=L,
        last_price=2000.0,
        features=features(atr_pct=0.8),
        views=[],
        synthesis=_synthesis(L),
        now=NOW + timedelta(minutes=5),
        ttl_minutes=20,
        strategy="consensus",
        rank_score=0.0,
    )
    assert later.id != s.id
    tiny = _signal(S, 50.0, 0.05)
    assert tiny.stop_loss_pct == pytest.approx(0.3)  # the floor


def test_signal_params_are_validated() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        SignalParams(take_profit_fractions=(0.5, 0.3, 0.3))
    with pytest.raises(ValidationError, match="increasing"):
        SignalParams(take_profit_r=(3.0, 2.0, 4.0))
    with pytest.raises(ValidationError, match="1 to 3"):
        SignalParams(take_profit_r=(), take_profit_fractions=())
    single = SignalParams(take_profit_r=(2.5,), take_profit_fractions=(1.0,))
    assert single.reward_risk == 2.5
    assert len(_signal(L, 100.0, 1.0, single).take_profits) == 1
