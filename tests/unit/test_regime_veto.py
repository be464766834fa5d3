"""``regime_vetoes``: a veto only where ``decide`` skips whatever the other features say.

The backtest skips the full features and the analysts of a symbol whose 15m regime alone
rules out a signal; these tests check that the veto never stands where ``decide`` on the
full features (the reference path) would publish: on the sample's series at ranking
times, with both policies, and for random views of the other analysts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from prometheus_trader.app.backtest.data import MemoryMarketData
from prometheus_trader.domain.analysts import (
    AnalysisContext,
    TechnicalRegimeAnalyst,
    default_panel,
)
from prometheus_trader.domain.analysts.base import abstain, view
from prometheus_trader.domain.feature_series import FeatureSeries
from prometheus_trader.domain.features import SymbolFeatures
from prometheus_trader.domain.market import MINUTE_MS, DataQuality, MarketType
from prometheus_trader.domain.signals import AnalystView, Direction
from prometheus_trader.domain.synthesizer import (
    ConsensusConfig,
    ConsensusPolicy,
    HierarchicalPolicy,
    SynthesisPolicy,
    regime_vetoes,
)
from prometheus_trader.sample import SAMPLE_STORE_DIR

pytestmark = pytest.mark.unit

BTC = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def sample() -> dict[str, FeatureSeries]:
    data = MemoryMarketData.from_parquet(SAMPLE_STORE_DIR, "binance", MarketType.PERP)
    return {k.symbol: FeatureSeries(s) for k, s in data.series.items()}


def _relaxed() -> list[SynthesisPolicy]:
    """Both policies, and a consensus that publishes more easily (more outcomes seen)."""
    return [
        ConsensusPolicy(),
        ConsensusPolicy(ConsensusConfig(min_agreeing=2, min_confidence=0.5)),
        HierarchicalPolicy(),
    ]


def test_a_veto_on_the_sample_is_a_skip_of_decide_on_the_full_features(
    sample: dict[str, FeatureSeries],
) -> None:
    panel = default_panel()
    first = max(int(fs.series.ts_ms[0]) for fs in sample.values())
    last = min(int(fs.series.ts_ms[-1]) for fs in sample.values())
    policies = _relaxed()
    vetoed = {id(p): 0 for p in policies}
    allowed = dict(vetoed)
    published = 0
    for now in range(first + 5 * MINUTE_MS, last, 40 * MINUTE_MS):
        since = now - 1440 * MINUTE_MS
        for symbol, fs in sample.items():
            features = fs.at(now, since_ms=since, btc=None if symbol == BTC else sample[BTC])
            views = [a.analyze(AnalysisContext(symbol=symbol, features=features)) for a in panel]
            regime = fs.regime_at(now, since_ms=since)
            for policy in policies:
                if regime_vetoes(policy, panel, regime):
                    assert not policy.decide(views, features).publish
                    vetoed[id(policy)] += 1
                else:
                    allowed[id(policy)] += 1
                    published += policy.decide(views, features).publish
    # every policy both vetoed and let through (both branches were exercised)
    assert all(v > 20 for v in vetoed.values()), vetoed
    assert all(v > 5 for v in allowed.values()), allowed
    assert published > 0  # and some of those let through publish


def _regime(
    adx: float | None, plus: float, minus: float, hurst: float, autocorr: float
) -> SymbolFeatures:
    return SymbolFeatures(
        symbol="X",
        as_of_ms=0,
        bars=1440,
        data_quality=DataQuality.OK,
        adx=adx,
        plus_di=plus,
        minus_di=minus,
        hurst=hurst,
        autocorr_15m=autocorr,
        mean_reversion=min(1.0, max(0.0, (1 - autocorr) / 2)),
    )


def _random_view(rng: random.Random, name: str) -> AnalystView:
    if rng.random() < 0.3:
        return abstain(name, "nothing", {"no_data": 1.0} if rng.random() < 0.5 else None)
    direction = Direction.LONG if rng.random() < 0.6 else Direction.SHORT
    return view(name, direction, rng.random(), ["why"], {"x": rng.random()})


def test_a_consensus_veto_holds_for_any_views_of_the_other_analysts() -> None:
    rng = random.Random(5)
    panel = default_panel()
    policy = ConsensusPolicy(ConsensusConfig(min_agreeing=1, min_confidence=0.0))
    checked = 0
    for _ in range(400):
        regime = _regime(
            rng.choice([None, rng.uniform(5, 60)]),
            rng.uniform(5, 40),
            rng.uniform(5, 40),
            rng.uniform(0.3, 0.9),
            rng.uniform(-0.8, 0.8),
        )
        technical = panel[0].analyze(AnalysisContext(symbol="X", features=regime))
        ranging = technical.abstains and technical.metrics.get("trending") == 0.0
        assert TechnicalRegimeAnalyst().ranging(regime) == ranging
        assert regime_vetoes(policy, panel, regime) == ranging
        if not ranging:
            continue
        for _ in range(20):
            views = [technical] + [_random_view(rng, a.name) for a in panel[1:]]
            assert not policy.decide(views, regime).publish
            checked += 1
    assert checked > 1000


@dataclass(frozen=True)
class _Other:
    """An analyst of another kind that calls itself "technical"."""

    name: str = "technical"

    def analyze(self, ctx: AnalysisContext) -> AnalystView:
        return abstain(self.name, "never ranging", {"trending": 1.0})


def test_no_veto_where_it_is_not_certain() -> None:
    ranging = _regime(10.0, 20.0, 10.0, 0.5, 0.5)
    panel = default_panel()
    assert regime_vetoes(ConsensusPolicy(), panel, ranging)
    assert regime_vetoes(HierarchicalPolicy(), panel, ranging)
    # ranging is no conflict for this consensus; another regime analyst; a foreign one
    assert not regime_vetoes(
        ConsensusPolicy(ConsensusConfig(ranging_is_conflict=False)), panel, ranging
    )
    assert not regime_vetoes(
        ConsensusPolicy(ConsensusConfig(regime_analyst="structure")), panel, ranging
    )
    assert not regime_vetoes(ConsensusPolicy(), [*panel, _Other()], ranging)
    assert not regime_vetoes(ConsensusPolicy(), [*panel, TechnicalRegimeAnalyst()], ranging)
    trending = _regime(40.0, 30.0, 10.0, 0.8, 0.2)
    assert not regime_vetoes(ConsensusPolicy(), panel, trending)
    assert not regime_vetoes(HierarchicalPolicy(), panel, trending)
