"""Feature computation on constructed series with known answers, and on real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from _analysis_fixtures import T0, now_after, ohlc_series, random_walk, series

from prometheus_trader.domain.features import compute_features
from prometheus_trader.domain.market import (
    MINUTE_MS,
    CandleSeries,
    DataQuality,
    FundingRate,
    MarketType,
    OpenInterest,
)
from prometheus_trader.domain.signals import Direction

pytestmark = pytest.mark.unit

_REPO = Path(__file__).resolve().parents[2]
# the committed excerpt only: tests read nothing outside the repository
REAL_BTC_FILES = [_REPO / "tests" / "fixtures" / "data" / "BTC_USDT_USDT-1m-futures.feather"]


def _features(s: CandleSeries, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("btc_1m", None)
    kw.setdefault("funding", [])
    kw.setdefault("open_interest", [])
    if "now_ms" not in kw:
        kw["now_ms"] = now_after(s)
    return compute_features(s, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("direction", [Direction.LONG, Direction.SHORT])
def test_steady_trend_has_strong_adx_in_its_direction(direction: Direction) -> None:
    closes = random_walk(600, seed=1, drift=direction.sign * 0.0008, vol=0.0003)
    f = _features(series(closes))
    assert f.adx is not None and f.adx > 25
    assert f.trend_direction is direction
    assert f.change_1h_pct is not None and direction.sign * f.change_1h_pct > 0


def test_hurst_separates_trending_from_alternating() -> None:
    trending = _features(series(random_walk(900, seed=2, drift=0.0005, vol=0.0005)))
    # 15m blocks alternate between 99 and 101 (with a little noise): anti-persistent
    rng = np.random.default_rng(3)
    block = np.where((np.arange(900) // 15) % 2 == 0, 99.0, 101.0)
    alternating = _features(series(block + 0.05 * rng.standard_normal(900)))
    assert trending.hurst is not None and trending.hurst > 0.5
    assert alternating.hurst is not None and alternating.hurst < 0.5
    # the alternating series also reads as strongly mean-reverting
    assert alternating.mean_reversion is not None and alternating.mean_reversion > 0.8
    assert alternating.autocorr_15m is not None and alternating.autocorr_15m < -0.5


def test_imbalance_cascade_from_taker_volume() -> None:
    n = 120
    volume = np.full(n, 10.0)
    taker = np.full(n, 5.0)  # balanced
    taker[-5:-1] = 7.0  # 5m: (8 + 4 × 7) / 50 buy share
    taker[-1] = 8.0  # 1m: 8 buy vs 2 sell
    f = _features(series(np.full(n, 100.0), volume=volume, taker_buy=taker))
    assert not f.imbalance_estimated
    assert f.imbalance_1m == pytest.approx(4.0)
    assert f.imbalance_5m == pytest.approx(36 / 14)
    assert f.imbalance_15m == pytest.approx((36 + 50) / (150 - 86))
    assert f.imbalance_1m > f.imbalance_5m > f.imbalance_15m


def test_imbalance_is_estimated_from_close_location_without_taker_volume() -> None:
    # the last bar closes at its high: the estimate counts it as (almost) all buying
    bars = [(100.0, 100.5, 99.5, 100.0)] * 119 + [(100.0, 101.0, 99.0, 101.0)]
    f = _features(ohlc_series(bars))
    assert f.imbalance_estimated
    assert f.imbalance_1m is not None and f.imbalance_1m >= 9.9
    assert f.imbalance_15m is not None and f.imbalance_1m > f.imbalance_15m > 1.0


def _gap_up_then_hold(after: list[tuple[float, float, float, float]]) -> CandleSeries:
    flat = [(100.0, 100.05, 99.95, 100.0)] * 60
    climb = [
        (100 + 0.6 * i, 100 + 0.6 * (i + 1), 100 + 0.6 * i, 100 + 0.6 * (i + 1)) for i in range(5)
    ]
    return ohlc_series(flat + climb + after)


def test_fair_value_gap_detected_and_filled() -> None:
    hold = [(104.0, 104.05, 103.95, 104.0)] * 30
    f = _features(_gap_up_then_hold(hold))
    bullish_5m = [g for g in f.fair_value_gaps if g.kind == "bullish" and g.timeframe == "5m"]
    # bars (flat, climb, hold) leave 100.05..103.95 untraded; (climb, hold, hold) 103..103.95
    spans = sorted((round(g.low, 6), round(g.high, 6)) for g in bullish_5m)
    assert spans == [(100.05, 103.95), (103.0, 103.95)]
    assert not [g for g in f.fair_value_gaps if g.kind == "bearish"]
    # price comes back through the whole gap: it is filled and no longer reported
    back = [*hold, *[(100.0, 100.05, 99.9, 100.0)] * 10]
    filled = _features(_gap_up_then_hold(back))
    assert not [g for g in filled.fair_value_gaps if g.kind == "bullish" and g.timeframe == "5m"]


def test_point_of_control_of_a_known_profile() -> None:
    # heavy volume around 100, light volume across 100..110
    closes = np.r_[np.linspace(100, 110, 60), np.full(60, 100.0), np.linspace(100, 110, 60)]
    volume = np.r_[np.full(60, 1.0), np.full(60, 100.0), np.full(60, 1.0)]
    f = _features(series(closes, volume=volume))
    width = (f.vah - f.val) if f.vah and f.val else 1.0
    assert f.poc is not None and f.val is not None and f.vah is not None
    assert abs(f.poc - 100.0) < 0.3
    assert f.val <= f.poc <= f.vah
    assert width < 5  # 70 % of the volume sits at 100, the value area is narrow


def test_correlation_with_an_identical_series_is_one() -> None:
    closes = random_walk(600, seed=4)
    s = series(closes)
    btc = series(closes, symbol="BTC/USDT:USDT")
    f = _features(s, btc_1m=btc)
    assert f.btc_correlation == pytest.approx(1.0)
    inverse = series(10_000 / closes, symbol="BTC/USDT:USDT")
    assert _features(s, btc_1m=inverse).btc_correlation == pytest.approx(-1.0, abs=1e-6)
    assert _features(s, btc_1m=series(closes[:50], symbol="BTC")).btc_correlation is None


def test_quality_ok_stale_gapped_missing() -> None:
    s = series(random_walk(300, seed=5))
    assert _features(s).data_quality is DataQuality.OK
    stale = _features(s, now_ms=now_after(s) + 3 * MINUTE_MS)
    assert stale.data_quality is DataQuality.STALE
    assert not stale.tradable
    ts = np.r_[s.ts_ms[:100], s.ts_ms[103:]]
    gapped = series(s.close[np.r_[0:100, 103:300]], ts_ms=ts)
    g = _features(gapped)
    assert g.data_quality is DataQuality.GAPPED
    assert "3 missing" in g.quality_reason
    assert _features(series(random_walk(30, seed=6))).data_quality is DataQuality.MISSING
    empty = CandleSeries.empty("X", "1m")
    assert _features(empty, now_ms=T0).data_quality is DataQuality.MISSING


def test_no_look_ahead_bars_after_now_are_ignored() -> None:
    closes = random_walk(600, seed=7)
    closes[450:] *= 1.5  # a huge move after the analysis time
    s = series(closes, volume=np.arange(600, dtype=np.float64) + 1)
    now_ms = int(s.ts_ms[400]) + MINUTE_MS  # bar 400 has just closed
    seen = _features(s, now_ms=now_ms)
    truncated = _features(s.tail(600).tail(600), now_ms=now_ms)
    only_past = _features(series(closes[:401], volume=np.arange(401, dtype=np.float64) + 1))
    assert seen.model_dump() == only_past.model_dump() == truncated.model_dump()
    assert seen.last_price == pytest.approx(closes[400])
    # a bar that is still open at now_ms is not visible either
    mid_bar = _features(s, now_ms=now_ms + MINUTE_MS - 1)
    assert mid_bar.last_bar_ts_ms == seen.last_bar_ts_ms


def test_funding_and_open_interest() -> None:
    s = series(random_walk(300, seed=8, drift=0.0002))
    now_ms = now_after(s)
    common = {"exchange": "binance", "market_type": MarketType.PERP, "symbol": s.symbol}
    funding = [
        FundingRate(**common, ts_ms=now_ms - 9 * 3_600_000, rate=0.0001),
        FundingRate(**common, ts_ms=now_ms - 3_600_000, rate=0.0004),
        FundingRate(**common, ts_ms=now_ms + 3_600_000, rate=0.9),  # future: invisible
    ]
    oi = [
        OpenInterest(**common, ts_ms=now_ms - k * 5 * MINUTE_MS, amount=1000.0 + 100 * (6 - k))
        for k in range(6, -1, -1)
    ]
    f = _features(s, funding=funding, open_interest=oi)
    assert f.funding_rate == pytest.approx(0.0004)
    # OI 1600 now vs 1300 fifteen minutes earlier
    assert f.oi_change_15m_pct == pytest.approx((1600 / 1300 - 1) * 100)
    assert f.liq_long_notional is not None and f.liq_long_notional > 0
    assert f.liq_short_notional is not None and f.liq_short_notional > 0
    assert f.liq_cluster_ratio is not None and f.liq_cluster_ratio >= 1
    none = _features(s)
    assert none.oi_change_15m_pct is None and none.liq_imbalance is None
    assert none.funding_rate is None


def test_deterministic_and_as_dict_is_finite() -> None:
    s = series(random_walk(800, seed=9))
    btc = series(random_walk(800, seed=10), symbol="BTC/USDT:USDT")
    a = _features(s, btc_1m=btc)
    b = _features(s, btc_1m=btc)
    assert a.model_dump_json() == b.model_dump_json()
    d = a.as_dict()
    assert d and all(math.isfinite(v) for v in d.values())
    assert d["imbalance_estimated"] == 1.0
    assert "funding_rate" not in d  # unknown features are left out, not zero


def _load_real(path: Path, symbol: str) -> CandleSeries:
    import pyarrow.feather as feather  # the test reads the file; the domain never does

    table = feather.read_table(path)
    ts = np.asarray(table.column("date").cast("int64"), dtype=np.int64) // 1_000_000
    cols = {
        c: np.asarray(table.column(c), dtype=np.float64)
        for c in ("open", "high", "low", "close", "volume")
    }
    return CandleSeries(
        symbol,
        "1m",
        ts.astype(np.int64),
        cols["open"],
        cols["high"],
        cols["low"],
        cols["close"],
        cols["volume"],
        np.full(ts.shape, np.nan),
    )


def test_features_are_finite_and_ok_on_synthetic_and_real_data() -> None:
    """The synthetic case and the committed real Binance BTC excerpt."""
    cases = [series(random_walk(2880, seed=11))]
    cases += [_load_real(p, "BTC/USDT:USDT") for p in REAL_BTC_FILES]
    for s in cases:
        f = _features(s, now_ms=now_after(s))
        assert f.data_quality is DataQuality.OK, f.quality_reason
        assert f.bars == min(len(s), 1440)
        assert f.last_price == pytest.approx(float(s.close[-1]))
        needed = ["change_1h_pct", "volume_spike", "poc", "imbalance_15m"]
        if f.bars >= 480:  # 8h: enough 15m bars for the regime metrics
            needed += ["adx", "hurst", "atr_pct", "mean_reversion", "autocorr_15m"]
        for name in needed:
            value = getattr(f, name)
            assert value is not None and math.isfinite(value), name
        assert f.val is not None and f.vah is not None and f.val <= f.poc <= f.vah  # type: ignore[operator]
        assert all(math.isfinite(v) for v in f.as_dict().values())
    assert len(cases) == 1 + len(REAL_BTC_FILES)
