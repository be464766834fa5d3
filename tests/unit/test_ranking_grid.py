"""``ranking_grid`` equals the scalar ``FeatureSeries`` methods at every ranking time.

The backtest reads each ranking's inputs, regime bars and regime fields from arrays
computed once per series (domain/ranking_grid.py) and the regime veto from
``regime_veto_mask``; the scalar methods stay the reference. Compared with ``repr`` (every
float bit for bit, None as None) on the bundled sample's 16 real series (every 5 minutes,
windows cut short by a collection start) and on constructed series that take the other
paths (gaps, a non-finite and non-positive price, flat stretches, missing taker volume,
no window yet).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from _analysis_fixtures import T0, random_walk, series

from prometheus_trader.app.backtest.data import MemoryMarketData
from prometheus_trader.domain.analysts import TechnicalRegimeAnalyst, default_panel
from prometheus_trader.domain.feature_series import REGIME_FIELDS, FeatureSeries
from prometheus_trader.domain.features import SymbolFeatures
from prometheus_trader.domain.market import MINUTE_MS, CandleSeries, DataQuality, MarketType
from prometheus_trader.domain.ranking import rank_inputs
from prometheus_trader.domain.ranking_grid import ranking_grid
from prometheus_trader.domain.synthesizer import (
    ConsensusConfig,
    ConsensusPolicy,
    HierarchicalPolicy,
    SynthesisPolicy,
    regime_veto_mask,
    regime_vetoes,
)
from prometheus_trader.sample import SAMPLE_STORE_DIR

pytestmark = pytest.mark.unit

POLICIES: list[SynthesisPolicy] = [
    ConsensusPolicy(),
    ConsensusPolicy(ConsensusConfig(min_agreeing=2, min_confidence=0.5)),
    HierarchicalPolicy(),
]


def _compare(s: CandleSeries, times: np.ndarray, since: np.ndarray) -> dict[str, int]:
    """Every grid value against a fresh FeatureSeries' scalar answer; what was seen."""
    grid = ranking_grid(FeatureSeries(s), times, since)
    ref = FeatureSeries(s)  # its own caches: the scalar path from scratch
    panel = default_panel()
    masks = [regime_veto_mask(p, panel, *grid.regime[[0, 1, 2, 3, 5]]) for p in POLICIES]
    seen = {"ok": 0, "windows": 0, "vetoed": 0, "allowed": 0, "ratios": 0, "regimes": 0}
    for i, (now, start) in enumerate(zip(times.tolist(), since.tolist(), strict=True)):
        assert (int(grid.lo[i]), int(grid.hi[i])) == ref.bounds(now, start)
        light = ref.ranking_at(now, since_ms=start)
        if grid.has[i]:  # at() reads the grid's imbalances of the window
            kept = repr(ref._imbalances(int(grid.lo[i]), int(grid.hi[i]), blocks=False))
            assert repr(grid.imbalances(i)) == kept, (s.symbol, now, start)
        assert repr(grid.inputs[i]) == repr(rank_inputs(light)), (s.symbol, now, start)
        bars = ref.regime_bars(now, since_ms=start)
        assert grid.bars(i) == bars and grid.has[i] == (bars is not None)
        regime = ref.regime_at(now, since_ms=start)
        fields = [None if v != v else v for v in grid.regime[:, i].tolist()]
        assert repr(fields) == repr([getattr(regime, n) for n in REGIME_FIELDS]), (now, start)
        for policy, mask in zip(POLICIES, masks, strict=True):
            assert mask is not None
            vetoed = regime_vetoes(policy, panel, regime)
            assert bool(mask[i]) == vetoed
            seen["vetoed" if vetoed else "allowed"] += 1
        seen["ok"] += grid.inputs[i].ok
        seen["windows"] += bars is not None
        seen["ratios"] += grid.inputs[i].ratio is not None
        seen["regimes"] += regime.adx is not None
    return seen


def test_sample_every_ranking_time_equals_the_scalar_methods() -> None:
    data = MemoryMarketData.from_parquet(SAMPLE_STORE_DIR, "binance", MarketType.PERP)
    first = min(int(s.ts_ms[0]) for s in data.series.values())
    last = max(int(s.ts_ms[-1]) for s in data.series.values())
    start = first - first % (5 * MINUTE_MS) - 10 * MINUTE_MS  # before any bar, too
    times = np.arange(start, last + 10 * MINUTE_MS, 5 * MINUTE_MS, dtype=np.int64)
    # the ranker's 24 h window, cut by a collection start (the engine's ``since``)
    since = np.maximum(times - 1440 * MINUTE_MS, first + 7 * MINUTE_MS)
    total = {"ok": 0, "windows": 0, "vetoed": 0, "allowed": 0, "ratios": 0, "regimes": 0}
    for s in data.series.values():
        for name, count in _compare(s, times, since).items():
            total[name] += count
    # a grid of some of the times (the engine computes chunks of them) holds the same
    s = next(iter(data.series.values()))
    whole = ranking_grid(FeatureSeries(s), times, since)
    part = ranking_grid(FeatureSeries(s), times[100:350], since[100:350])
    assert repr(part.inputs) == repr(whole.inputs[100:350])
    assert np.array_equal(part.regime, whole.regime[:, 100:350], equal_nan=True)
    assert np.array_equal(part.ratios, whole.ratios[:, 100:350], equal_nan=True)
    cells = len(times) * len(data.series)
    assert total["ok"] > cells // 2 and total["windows"] < cells  # OK and no window seen
    assert total["vetoed"] > 500 and total["allowed"] > 500
    assert total["regimes"] > cells // 2


def test_constructed_series_take_the_other_paths() -> None:
    n = 2600
    closes = random_walk(n, seed=21, vol=0.002)
    closes[300:700] = 100.0  # flat: zero true ranges, a zero RMS (Hurst's fallback)
    closes[1500] = np.nan  # a non-finite price: GAPPED
    closes[2000] = -1.0  # a non-positive price: no Hurst, no autocorrelation
    rng = np.random.default_rng(5)
    volume = rng.lognormal(0.0, 2.0, n) * rng.choice([1.0, 1e-4, 1e4], n)
    volume[900:930] = 0.0  # no volume: no ratio
    taker = volume * rng.uniform(-0.1, 1.1, n)
    taker[400:430] = np.nan  # estimated imbalances
    taker[1100] = np.nan
    ts = T0 + MINUTE_MS * np.arange(n, dtype=np.int64)
    ts[1800:] += 7 * MINUTE_MS  # a hole: GAPPED, a 15m bar missing (the computed path)
    s = series(closes, ts_ms=ts, volume=volume, taker_buy=taker)
    # volumes whose 15-bar sums differ between numpy's pairwise loop and a plain one: a
    # grid summing in another order would differ from ranking_at
    tails = volume[np.arange(n - 15)[:, None] + np.arange(15)]
    assert any(float(np.add.reduce(t)) != sum(t.tolist()) for t in tails)
    times = np.arange(T0 - 2 * MINUTE_MS, int(ts[-1]) + 5 * MINUTE_MS, 3 * MINUTE_MS)
    for back in (1440, 300, 12):  # 12: windows shorter than a full tail (< 15 bars)
        since = np.maximum(times - back * MINUTE_MS, T0 + 4 * MINUTE_MS)
        seen = _compare(s, times, since)
        assert seen["windows"] < len(times) and seen["ratios"] > 0
        assert (seen["ok"] > 0) == (back > 12)  # 12 bars are too few to rank


def test_the_veto_mask_is_regime_vetoes_on_any_regime() -> None:
    """Random regimes with unknown fields, boundary values and equal DIs."""
    rnd = random.Random(9)
    picks = [None, 0.0, 0.3, 0.55, 0.6, 0.7, 1.0, 20.0, 25.0, 30.0]
    rows = [[rnd.choice(picks) for _ in range(5)] for _ in range(3000)]
    arrays = np.array([[np.nan if v is None else v for v in r] for r in rows]).T
    panel = default_panel()
    for policy in POLICIES:
        mask = regime_veto_mask(policy, panel, *arrays)
        assert mask is not None
        for row, vetoed in zip(rows, mask.tolist(), strict=True):
            adx, plus_di, minus_di, hurst, mean_reversion = row
            regime = SymbolFeatures(
                symbol="X",
                as_of_ms=0,
                bars=0,
                data_quality=DataQuality.OK,
                adx=adx,
                plus_di=plus_di,
                minus_di=minus_di,
                hurst=hurst,
                mean_reversion=mean_reversion,
            )
            assert vetoed == regime_vetoes(policy, panel, regime), row
    # not a closed form: the caller asks regime_vetoes regime by regime
    extra = [*panel, TechnicalRegimeAnalyst()]
    assert regime_veto_mask(ConsensusPolicy(), extra, *arrays) is None
    lenient = ConsensusPolicy(ConsensusConfig(ranging_is_conflict=False))
    assert regime_veto_mask(lenient, panel, *arrays) is None
