"""The SPEC ranking formula, ordering, exclusions and top-mover flags."""

from __future__ import annotations

import math
import random

import pytest
from _analysis_fixtures import features

from prometheus_trader.domain.market import DataQuality
from prometheus_trader.domain.ranking import (
    RankingWeights,
    cluster_component,
    imbalance_component,
    rank_order,
    rank_symbols,
)

pytestmark = pytest.mark.unit


def test_components_are_normalized_as_documented() -> None:
    assert imbalance_component(1.0) == 0.0
    assert imbalance_component(3.0) == pytest.approx(1.0)
    assert imbalance_component(1 / 3) == pytest.approx(1.0)
    assert imbalance_component(9.0) == 1.0  # capped
    assert imbalance_component(math.sqrt(3)) == pytest.approx(0.5)
    assert imbalance_component(None) == 0.0
    assert cluster_component(None) == 0.0
    assert cluster_component(1.0) == pytest.approx(0.5)  # 100 % of the typical cluster
    assert cluster_component(5.0) == 1.0  # capped at 200 %


def test_score_is_the_weighted_sum() -> None:
    f = {"A": features(symbol="A", imbalance_5m=3.0, liq_cluster_ratio=1.0)}
    ranked = rank_symbols(f, {"A": 0.8}).ranked[0]
    assert ranked.score == pytest.approx(0.5 * 1.0 + 0.3 * 0.5 + 0.2 * 0.8)
    assert ranked.success_rate == 0.8
    assert ranked.features["imbalance_5m"] == 3.0
    prior = rank_symbols(f, {}).ranked[0]
    assert prior.success_component == 0.5 and prior.success_rate is None


def test_order_by_score_then_symbol_and_top_n() -> None:
    f = {
        "C": features(symbol="C", imbalance_5m=1.5),
        "A": features(symbol="A", imbalance_5m=1.5),
        "B": features(symbol="B", imbalance_5m=0.25),  # strong sell imbalance counts too
        "D": features(symbol="D", imbalance_5m=1.0),
    }
    ranking = rank_symbols(f, {}, top_n=3)
    assert [r.symbol for r in ranking.ranked] == ["B", "A", "C"]
    assert [r.rank for r in ranking.ranked] == [1, 2, 3]
    assert ranking.ranked[1].score == ranking.ranked[2].score
    # history breaks the tie
    assert [r.symbol for r in rank_symbols(f, {"C": 0.9}, top_n=3).ranked][:2] == ["B", "C"]


def test_bad_data_is_excluded_with_its_reason() -> None:
    f = {
        "OK": features(symbol="OK", imbalance_5m=1.2),
        "OLD": features(
            symbol="OLD",
            imbalance_5m=5.0,
            data_quality=DataQuality.STALE,
            quality_reason="last bar closed 300s before now",
        ),
        "HOLE": features(symbol="HOLE", data_quality=DataQuality.GAPPED),
    }
    ranking = rank_symbols(f, {})
    assert [r.symbol for r in ranking.ranked] == ["OK"]
    assert [(e.symbol, e.data_quality) for e in ranking.excluded] == [
        ("HOLE", DataQuality.GAPPED),
        ("OLD", DataQuality.STALE),
    ]
    assert ranking.excluded[1].reason == "last bar closed 300s before now"
    assert ranking.excluded[0].reason == "data quality gapped"


def test_top_movers_are_flagged_even_outside_the_top_n() -> None:
    f = {
        "FAST1M": features(symbol="FAST1M", change_1m_pct=-2.5, change_5m_pct=-1.0),
        "FAST5M": features(symbol="FAST5M", change_1m_pct=0.1, change_5m_pct=5.5),
        "CALM": features(symbol="CALM", change_1m_pct=1.9, change_5m_pct=4.9, imbalance_5m=3.0),
    }
    ranking = rank_symbols(f, {}, top_n=1)
    assert [r.symbol for r in ranking.ranked] == ["CALM"]
    assert not ranking.ranked[0].top_mover
    assert ranking.top_movers == ["FAST1M", "FAST5M"]
    movers = {r.symbol: r for r in rank_symbols(f, {}).ranked}
    assert (
        movers["FAST1M"].top_mover and "1m change -2.50%" in movers["FAST1M"].top_mover_reasons[0]
    )
    assert movers["FAST5M"].top_mover


def test_ranking_is_deterministic_and_serializable() -> None:
    f = {s: features(symbol=s, imbalance_5m=1 + i / 10) for i, s in enumerate("QWERTY")}
    a = rank_symbols(f, {"Q": 0.1}).model_dump_json()
    b = rank_symbols(dict(reversed(list(f.items()))), {"Q": 0.1}).model_dump_json()
    assert a == b


def test_rank_order_is_rank_symbols_order_scores_and_movers() -> None:
    """``rank_order`` (the backtest's) scores without building the records: the same top
    N with the same scores, the same top movers, on random features with ties."""
    rng = random.Random(11)
    choices = [None, 0.0, -1.0, 0.33, 1.0, 3.0, 5.0, math.inf, math.nan]
    for _ in range(300):
        batch = {}
        for _i in range(rng.randint(0, 14)):
            symbol = f"S{rng.randint(0, 20)}/USDT:USDT"
            batch[symbol] = features(
                symbol=symbol,
                data_quality=rng.choice([DataQuality.OK] * 4 + [DataQuality.STALE]),
                imbalance_5m=rng.choice(choices),
                imbalance_15m=rng.choice(choices),
                liq_cluster_ratio=rng.choice(choices),
                change_1m_pct=rng.choice([None, 0.5, -2.5, 2.0, 3.0]),
                change_5m_pct=rng.choice([None, 1.0, -6.0, 5.0]),
            )
        rates = {s: rng.choice([0.0, 0.5, 1.0, 2.0, math.nan]) for s in batch if rng.random() < 0.5}
        top_n = rng.randint(1, 12)
        # the default weights (RankInputs' imbalance read as it is) and others (recomputed)
        weights = rng.choice([None, RankingWeights(imbalance_full_ratio=2.0, cluster_cap=1.5)])
        ranking = rank_symbols(batch, rates, top_n=top_n, weights=weights)
        assert rank_order(batch, rates, top_n=top_n, weights=weights) == (
            [(r.symbol, r.score) for r in ranking.ranked],
            ranking.top_movers,
        )
