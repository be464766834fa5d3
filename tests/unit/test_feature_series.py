"""FeatureSeries.at gives exactly what compute_features gives on the same window.

Exactly: every field equal with ``==`` (floats bit for bit, zones and gaps included), on
the bundled sample's 16 real series at ranking times across the sample (full windows read
from the tabulated 15m features, windows cut short by a collection start, BTC
correlation) and on constructed series that take the other paths (gaps, non-finite and
non-positive prices, flat prices, unordered input refused).
"""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_fixtures import T0, random_walk, series

from prometheus_trader.app.backtest.data import MemoryMarketData
from prometheus_trader.domain.feature_series import REGIME_FIELDS, FeatureSeries
from prometheus_trader.domain.features import SymbolFeatures, _imbalances, compute_features
from prometheus_trader.domain.market import (
    MINUTE_MS,
    CandleSeries,
    FundingRate,
    MarketType,
    OpenInterest,
)
from prometheus_trader.domain.ranking import RANKING_FIELDS, rank_order, rank_symbols
from prometheus_trader.sample import SAMPLE_STORE_DIR

pytestmark = pytest.mark.unit

BTC = "BTC/USDT:USDT"


def _reference(
    fs: FeatureSeries,
    now_ms: int,
    since_ms: int | None,
    btc: FeatureSeries | None,
    **kw: object,
) -> SymbolFeatures:
    """compute_features on the window the backtest would cut (as ``engine._window``)."""
    series = fs.series
    lo = 0 if since_ms is None else int(np.searchsorted(series.ts_ms, since_ms, side="left"))
    hi = int(np.searchsorted(series.ts_ms, now_ms - MINUTE_MS, side="right"))
    btc_window = None
    if btc is not None:
        b = btc.series
        blo = 0 if since_ms is None else int(np.searchsorted(b.ts_ms, since_ms, side="left"))
        bhi = int(np.searchsorted(b.ts_ms, now_ms - MINUTE_MS, side="right"))
        btc_window = b.rows(blo, max(blo, bhi))
    return compute_features(
        series.rows(lo, max(lo, hi)),
        btc_1m=btc_window,
        funding=kw.get("funding", []),  # type: ignore[arg-type]
        open_interest=kw.get("open_interest", []),  # type: ignore[arg-type]
        now_ms=now_ms,
        mark_price=kw.get("mark_price"),  # type: ignore[arg-type]
    )


def _assert_same(fast: SymbolFeatures, ref: SymbolFeatures) -> None:
    """Equal field by field; ``repr`` (shortest round-trip float text) so that a NaN zone
    bound from a NaN price compares equal to itself, and any other bit differs."""
    differ = {
        name: (getattr(fast, name), getattr(ref, name))
        for name in SymbolFeatures.model_fields
        if repr(getattr(fast, name)) != repr(getattr(ref, name))
    }
    assert not differ, f"{ref.symbol} at {ref.as_of_ms}: {differ}"
    # built without validation (domain/trusted.py): what validation would have set
    assert list(fast.__dict__) == list(ref.__dict__)
    assert fast.model_fields_set == ref.model_fields_set
    for made, valid in zip(
        [*fast.zones, *fast.fair_value_gaps], [*ref.zones, *ref.fair_value_gaps], strict=True
    ):
        assert list(made.__dict__) == list(valid.__dict__)
        assert made.model_fields_set == valid.model_fields_set
    assert fast.model_dump_json() == ref.model_dump_json()


@pytest.fixture(scope="module")
def sample() -> dict[str, FeatureSeries]:
    data = MemoryMarketData.from_parquet(SAMPLE_STORE_DIR, "binance", MarketType.PERP)
    return {k.symbol: FeatureSeries(s) for k, s in data.series.items()}


def test_sample_series_at_ranking_times_equal_compute_features(
    sample: dict[str, FeatureSeries],
) -> None:
    first = max(int(fs.series.ts_ms[0]) for fs in sample.values())
    last = min(int(fs.series.ts_ms[-1]) for fs in sample.values())
    btc = sample[BTC]
    start = first - first % (5 * MINUTE_MS) + 5 * MINUTE_MS
    times = list(range(start, last + 2 * MINUTE_MS, 35 * MINUTE_MS))
    full = short = 0
    for i, now in enumerate(times):
        # mostly the ranker's 24 h window, sometimes cut by a collection start
        since = now - 1440 * MINUTE_MS if i % 4 else first + (i % 7) * 45 * MINUTE_MS
        refs, light = {}, {}
        for symbol, fs in sample.items():
            other = None if symbol == BTC else btc
            fast = fs.at(now, since_ms=since, btc=other)
            ref = refs[symbol] = _reference(fs, now, since, other)
            _assert_same(fast, ref)
            light[symbol] = fs.ranking_at(now, since_ms=since)
            _assert_ranking_fields(light[symbol], ref)
            _assert_regime_fields(fs.regime_at(now, since_ms=since), ref)
            full += ref.bars == 1440
            short += 60 <= ref.bars < 1440
        # the backtest ranks by the ranking fields alone: the same order, scores, movers
        rates = {BTC: 0.75, "ETH/USDT:USDT": 0.25}
        ranking = rank_symbols(refs, rates, top_n=10)
        assert rank_order(light, rates, top_n=10) == (
            [(r.symbol, r.score) for r in ranking.ranked],
            ranking.top_movers,
        )
    assert full > 200 and short > 50  # both paths (tabulated and computed) were compared


def _assert_ranking_fields(light: SymbolFeatures, ref: SymbolFeatures) -> None:
    for name in (*RANKING_FIELDS, "symbol", "bars", "quality_reason", "last_price"):
        assert repr(getattr(light, name)) == repr(getattr(ref, name)), name
    # built without validation: what validating the fields it sets would give
    valid = SymbolFeatures(**{name: getattr(light, name) for name in light.model_fields_set})
    assert repr(light) == repr(valid) and list(light.__dict__) == list(valid.__dict__)
    assert light.model_fields_set == valid.model_fields_set


def _assert_regime_fields(regime: SymbolFeatures, ref: SymbolFeatures) -> None:
    names = (*REGIME_FIELDS, "symbol", "bars", "data_quality", "quality_reason")
    for name in names:
        assert repr(getattr(regime, name)) == repr(getattr(ref, name)), name
    assert regime.trend_direction == ref.trend_direction
    valid = SymbolFeatures(**{name: getattr(regime, name) for name in regime.model_fields_set})
    assert repr(regime) == repr(valid) and list(regime.__dict__) == list(valid.__dict__)
    assert regime.model_fields_set == valid.model_fields_set


def test_funding_open_interest_and_mark_price_pass_through(
    sample: dict[str, FeatureSeries],
) -> None:
    fs = sample["ETH/USDT:USDT"]
    now = int(fs.series.ts_ms[-1]) + MINUTE_MS
    perp = {"exchange": "binance", "market_type": MarketType.PERP, "symbol": fs.symbol}
    funding = [FundingRate(**perp, ts_ms=now - 3_600_000, rate=1e-4)]
    price = float(fs.series.close[-30])
    interest = [
        OpenInterest(**perp, ts_ms=now - m * MINUTE_MS, amount=1000.0 + m)
        for m in (50, 40, 20, 5, 1)
    ]
    kw = {"funding": funding, "open_interest": interest, "mark_price": price}
    fast = fs.at(now, btc=sample[BTC], **kw)  # type: ignore[arg-type]
    ref = _reference(fs, now, None, sample[BTC], **kw)
    _assert_same(fast, ref)
    _assert_ranking_fields(fs.ranking_at(now, open_interest=interest), ref)
    assert fast.funding_rate == 1e-4 and fast.liq_long_notional is not None


def _check_all(s: CandleSeries, btc: CandleSeries | None = None, step: int = 25) -> int:
    fs = FeatureSeries(s)
    other = None if btc is None else FeatureSeries(btc)
    count = 0
    regimes: dict[tuple[int, int], str] = {}  # regime_bars -> the regime fields
    for now in range(int(s.ts_ms[0]), int(s.ts_ms[-1]) + 3 * MINUTE_MS, step * MINUTE_MS):
        for since in (None, now - 1440 * MINUTE_MS, now - 300 * MINUTE_MS):
            ref = _reference(fs, now, since, other)
            bars = fs.regime_bars(now, since_ms=since)
            if bars is not None:  # equal 15m bars, equal regime fields (the engine keeps them)
                regime = repr([getattr(ref, name) for name in REGIME_FIELDS])
                assert regimes.setdefault(bars, regime) == regime
            _assert_same(fs.at(now, since_ms=since, btc=other), ref)
            _assert_ranking_fields(fs.ranking_at(now, since_ms=since), ref)
            _assert_regime_fields(fs.regime_at(now, since_ms=since), ref)
            count += 1
    return count


def test_random_walk_with_btc() -> None:
    s = series(random_walk(2200, seed=7, vol=0.002), symbol="ETH/USDT:USDT")
    btc = series(random_walk(2200, seed=8, vol=0.001), symbol=BTC)
    assert _check_all(s, btc) > 200


def test_gaps_bad_prices_and_flat_stretches_take_the_computed_paths() -> None:
    closes = random_walk(2100, seed=9, vol=0.002)
    closes[300:700] = 100.0  # flat: zero RMS (Hurst None), zero true ranges
    closes[1500] = np.nan  # non-finite price: GAPPED
    ts = T0 + MINUTE_MS * np.arange(2100, dtype=np.int64)
    ts[1800:] += 7 * MINUTE_MS  # a hole: GAPPED, a 15m bar missing, BTC windows misaligned
    s = series(closes, ts_ms=ts, symbol="SOL/USDT:USDT")
    btc = series(random_walk(2100, seed=10), symbol=BTC)
    assert _check_all(s, btc, step=20) > 300
    negative = series(np.r_[random_walk(1000, seed=11), -np.ones(5), random_walk(600, seed=12)])
    assert _check_all(negative, btc, step=40) > 100


def test_imbalances_at_every_window_end_with_and_without_taker_volume() -> None:
    """The imbalance sums come from blocks of window ends (sliding-window reductions):
    every end, across block edges, with taker volume missing in stretches (a tail with
    one missing bar is estimated) and sizes that make pairwise and sequential sums differ."""
    n = 2600
    rng = np.random.default_rng(3)
    volume = rng.lognormal(0.0, 2.0, n) * rng.choice([1.0, 1e-4, 1e4], n)
    taker = volume * rng.uniform(-0.1, 1.1, n)  # clipped to 0..volume
    taker[400:430] = np.nan
    taker[1100] = np.nan
    taker[2050:2060] = np.nan
    volume[700:720] = 0.0  # no volume: None
    s = series(random_walk(n, seed=13), volume=volume, taker_buy=taker)
    fs = FeatureSeries(s)
    names = ("imbalance_1m", "imbalance_5m", "imbalance_15m", "imbalance_estimated")
    estimated = 0
    for hi in range(1, n + 1):
        now = int(s.ts_ms[hi - 1]) + MINUTE_MS
        for since in (None, int(s.ts_ms[max(0, hi - 15)]), int(s.ts_ms[max(0, hi - 3)])):
            light = fs.ranking_at(now, since_ms=since)
            lo = 0 if since is None else int(np.searchsorted(s.ts_ms, since))
            ref = _imbalances(s.rows(max(0, lo, hi - 1440), hi))
            assert repr(tuple(getattr(light, name) for name in names)) == repr(ref), (hi, since)
            estimated += ref[3]
    assert 100 < estimated < 3 * n  # both ways


def test_empty_and_too_early() -> None:
    s = series(random_walk(100, seed=3))
    fs = FeatureSeries(s)
    _assert_same(fs.at(T0), _reference(fs, T0, None, None))  # nothing closed yet
    _assert_same(fs.at(T0 + 30 * MINUTE_MS), _reference(fs, T0 + 30 * MINUTE_MS, None, None))
    _assert_same(fs.regime_at(T0), _reference(fs, T0, None, None))


def test_unordered_series_is_refused() -> None:
    s = series(random_walk(10, seed=4), ts_ms=T0 + MINUTE_MS * np.arange(10)[::-1])
    with pytest.raises(ValueError, match="increasing"):
        FeatureSeries(s)


def _gappy(n: int, seed: int) -> CandleSeries:
    """1m bars that jump (many 3-bar gaps), with repeated prices (ties at the fill edges)
    and NaN / infinite highs and lows in places."""
    rng = np.random.default_rng(seed)
    close = np.round(100 + np.cumsum(rng.choice([-3.0, -1.0, 0.0, 1.0, 3.0], n)), 0)
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) + rng.choice([0.0, 1.0], n)
    low = np.minimum(open_, close) - rng.choice([0.0, 1.0], n)
    high[rng.choice(n, 6, replace=False)] = np.nan
    low[rng.choice(n, 6, replace=False)] = np.nan
    high[rng.choice(n, 2, replace=False)] = np.inf
    low[rng.choice(n, 2, replace=False)] = -np.inf
    ts = T0 + MINUTE_MS * np.arange(n, dtype=np.int64)
    return CandleSeries(
        "GAP/USDT:USDT", "1m", ts, open_, high, low, close, np.full(n, 5.0), np.full(n, 2.0)
    )


def test_gap_fills_equal_a_scan_and_windows_keep_the_reference_gaps() -> None:
    """``_fills`` (a binary search over block minima) names the first later bar trading
    back into each gap, as a bar-by-bar scan does; every window's gaps then equal
    ``features._fair_value_gaps`` of that window's bars (ties, NaN and infinite prices)."""
    from prometheus_trader.domain.feature_tables import fills as _fills
    from prometheus_trader.domain.features import _fair_value_gaps

    fs = FeatureSeries(_gappy(3000, seed=21))
    cfg = fs.config
    checked = 0
    for b in (fs.b5, fs.b15):
        bull, bear = _fills(b)
        n = len(b)
        for i in range(n - 2):
            up = next((k for k in range(i + 3, n) if not b.low[k] > b.high[i]), n)
            down = next((k for k in range(i + 3, n) if not b.high[k] < b.low[i]), n)
            if not np.isnan(b.high[i]):
                assert bull[i] == up, (b.timeframe, i)
            if not np.isnan(b.low[i]):
                assert bear[i] == down, (b.timeframe, i)
        for lo in range(0, n, 7):
            for hi in range(lo, min(n, lo + 120) + 1, 3):
                fast = fs._fvgs(b, lo, hi)
                ref = _fair_value_gaps(b.rows(lo, hi), cfg)
                assert repr([g.model_dump() for g in fast]) == repr(
                    [g.model_dump() for g in ref]
                ), (b.timeframe, lo, hi)
                checked += len(ref)
    assert checked > 1000


def test_tables_of_two_lengths_in_one_run_equal_each_alone() -> None:
    """``tables15`` steps the Wilder recursions once for both tabulated lengths (the
    shorter length's extra lane dropped past its end): each table equals its own run."""
    from prometheus_trader.domain.feature_tables import table15, tables15

    fs = FeatureSeries(series(random_walk(9000, seed=31, vol=0.003)))
    arrays = (fs._tr, fs._pdm, fs._mdm, fs._log15, fs._r15)
    count = len(fs.b15)
    lengths = (40, 95, 96, count, count + 1)
    both = tables15(lengths, count, *arrays, fs.config)
    assert sorted(both) == [40, 95, 96, count]
    for n in lengths:
        alone = table15(n, count, *arrays, fs.config)
        if alone is None:
            assert n not in both
            continue
        for name in ("atr", "adx", "plus_di", "minus_di", "hurst", "cross", "denom"):
            a, b = getattr(both[n], name), getattr(alone, name)
            assert a.shape == b.shape == (count - n + 1,)
            assert a.tobytes() == b.tobytes(), (n, name)


def test_pivot_breaks_equal_a_scan_and_windows_keep_the_reference_zones() -> None:
    """``_breaks`` names the first later close beyond each bar's low / high, as a scan
    does (NaN closes skipped, a NaN low or high never broken); every 15m window's zones
    and break of structure then equal ``features._zones`` of its bars."""
    from prometheus_trader.domain.feature_tables import breaks as _breaks
    from prometheus_trader.domain.features import _zones

    bars = _gappy(9000, seed=22)
    nan_close = np.random.default_rng(23).choice(len(bars), 40, replace=False)
    bars.close[nan_close] = np.nan
    fs = FeatureSeries(bars)
    b = fs.b15
    n = len(b)
    assert np.isnan(b.close).any() and np.isnan(b.low).any()
    below, above = _breaks(b)
    for i in range(n):
        down = next((k for k in range(i + 1, n) if b.close[k] < b.low[i]), n)
        up = next((k for k in range(i + 1, n) if b.close[k] > b.high[i]), n)
        assert (below[i], above[i]) == (down, up), i
    zones = 0
    for j0 in range(0, n, 5):
        for j1 in range(j0, min(n, j0 + 100) + 1, 4):
            window = b.rows(j0, j1)
            for price in (100.0, float(np.nanmedian(b.close[j0:j1])) if j1 > j0 else 1.0):
                fast = fs._zones(fs._pivots(j0, j1, window), window, price)
                ref = _zones(window, price, fs.config)
                assert fast[1] == ref[1], (j0, j1)
                assert repr([z.model_dump() for z in fast[0]]) == repr(
                    [z.model_dump() for z in ref[0]]
                ), (j0, j1, price)
                zones += len(ref[0])
    assert zones > 1000
