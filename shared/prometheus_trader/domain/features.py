"""Per-symbol market features (SPEC §4), computed purely from recorded market data.

Everything here is a pure function of its inputs: no clock, no I/O, no randomness. Bars
that close after ``now_ms`` are never looked at. Missing inputs give ``None`` features
(never a made-up number); the order-flow imbalance falls back to an *estimate* from the
bar's close location when the exchange gives no taker-buy volume, and says so in
``imbalance_estimated``.

Conventions: prices in quote currency, changes and distances in percent, imbalances as
buy ÷ sell volume ratios, funding as a fraction per funding interval.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from prometheus_trader.domain.market import (
    MINUTE_MS,
    TIMEFRAME_MS,
    CandleSeries,
    DataQuality,
    FloatArray,
    FundingRate,
    OpenInterest,
)
from prometheus_trader.domain.signals import Direction

__all__ = [
    "LEVERAGE_TIERS",
    "FairValueGap",
    "FeatureConfig",
    "SymbolFeatures",
    "Zone",
    "compute_features",
]

LEVERAGE_TIERS: tuple[int, ...] = (10, 25, 50, 100)
_MAX_RATIO = 10.0  # imbalance ratios are clipped to [1/10, 10] so one-sided bars stay finite


class FeatureConfig(BaseModel):
    """Knobs of the feature computation (defaults are the SPEC's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_bars: int = 1440  # at most 24h of 1m bars are used
    min_bars: int = 60  # fewer visible bars -> MISSING
    stale_after_ms: int = 2 * MINUTE_MS  # last bar closed longer ago -> STALE
    period: int = 14  # ATR / ADX period on 15m bars
    hurst_min_bars: int = 32  # 15m bars needed for the Hurst exponent
    swing_k: int = 2  # a swing high/low dominates k bars each side
    max_zones: int = 3  # per side
    max_gaps: int = 5  # per timeframe and side
    min_gap_pct: float = 0.02  # ignore fair-value gaps narrower than this (% of price)
    zone_tolerance_atr: float = 0.25  # "at a zone" = within this many ATR%s of it
    profile_bins: int = 50
    value_area_share: float = 0.70
    min_corr_returns: int = 120  # overlapping 1m returns for the BTC correlation
    liq_bin_pct: float = 0.25  # liquidation-map price grid, % of price


class Zone(BaseModel):
    """A supply (swing high) or demand (swing low) zone on 15m bars, not yet broken."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["demand", "supply"]
    low: float
    high: float
    ts_ms: int
    volume_ratio: float  # pivot bar volume ÷ average 15m volume in the window
    touches: int  # later bars that re-entered the zone (0 = fresh)


class FairValueGap(BaseModel):
    """A 3-bar fair-value gap (bar i-2 and bar i do not overlap) that is not fully filled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeframe: str
    kind: Literal["bullish", "bearish"]
    low: float
    high: float
    ts_ms: int  # open time of the third bar


class SymbolFeatures(BaseModel):
    """All features of one symbol as of ``as_of_ms`` (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    as_of_ms: int
    bars: int
    last_bar_ts_ms: int | None = None
    data_quality: DataQuality
    quality_reason: str = ""
    last_price: float | None = None
    change_1m_pct: float | None = None
    change_5m_pct: float | None = None
    change_15m_pct: float | None = None
    change_1h_pct: float | None = None
    volume_spike: float | None = None  # last 5m volume ÷ average 5m volume over the last 1h
    oi_change_15m_pct: float | None = None
    funding_rate: float | None = None  # latest, fraction per funding interval
    basis_pct: float | None = None  # (mark - last) ÷ last, when a mark price is given
    atr_pct: float | None = None  # ATR(14) on 15m in % of the last price
    adx: float | None = None  # ADX(14) on 15m
    plus_di: float | None = None
    minus_di: float | None = None
    hurst: float | None = None  # directional persistence: generalized Hurst (q=2) on 15m
    autocorr_15m: float | None = None  # lag-1 autocorrelation of 15m returns
    mean_reversion: float | None = None  # (1 - autocorr_15m) / 2, 0..1
    deviation_sigma_15m: float | None = None  # (price - mean) ÷ std of the last 15 1m closes
    imbalance_1m: float | None = None  # buy ÷ sell volume over the last 1 / 5 / 15 1m bars
    imbalance_5m: float | None = None
    imbalance_15m: float | None = None
    imbalance_estimated: bool = False  # True: from close location × volume, no taker data
    close_position_5m: float | None = None  # last 5m bar: (close - low) ÷ range, 0..1
    upper_wick_5m: float | None = None  # last 5m bar: upper wick ÷ range
    lower_wick_5m: float | None = None
    zones: list[Zone] = []
    at_demand_zone: bool = False
    at_supply_zone: bool = False
    demand_distance_pct: float | None = None  # to the nearest demand zone (0 inside)
    supply_distance_pct: float | None = None
    demand_touches: int | None = None  # of the nearest demand zone
    supply_touches: int | None = None
    break_of_structure: int = 0  # +1 above the last swing high, -1 below the last swing low
    fair_value_gaps: list[FairValueGap] = []
    in_bullish_fvg: bool = False
    in_bearish_fvg: bool = False
    poc: float | None = None
    vah: float | None = None
    val: float | None = None
    liq_long_notional: float | None = None  # estimated pending long liquidations below price
    liq_short_notional: float | None = None  # ... pending short liquidations above price
    liq_imbalance: float | None = None  # short ÷ long pending liquidations
    liq_cluster_price: float | None = None  # largest pending cluster
    liq_cluster_ratio: float | None = None  # largest cluster ÷ the average cluster
    btc_correlation: float | None = None  # Pearson, 1m log returns, up to 24h
    btc_change_15m_pct: float | None = None

    @property
    def tradable(self) -> bool:
        """Only symbols with OK data are ranked or traded."""
        return self.data_quality is DataQuality.OK

    @property
    def trend_direction(self) -> Direction | None:
        """Direction of the 15m trend by the directional indicators (+DI vs -DI)."""
        if self.plus_di is None or self.minus_di is None or self.plus_di == self.minus_di:
            return None
        return Direction.LONG if self.plus_di > self.minus_di else Direction.SHORT

    def as_dict(self) -> dict[str, float]:
        """Every scalar numeric feature that is known (None omitted, booleans as 0/1)."""
        out: dict[str, float] = {}
        # the fields in declaration order, as iterating the model gives them (without its
        # generator: this runs for every symbol at every ranking)
        for name, value in self.__dict__.items():
            if isinstance(value, bool):
                out[name] = 1.0 if value else 0.0
            elif isinstance(value, int | float) and name not in ("as_of_ms", "last_bar_ts_ms"):
                out[name] = float(value)
        return out


def compute_features(
    series_1m: CandleSeries,
    *,
    btc_1m: CandleSeries | None,
    funding: Sequence[FundingRate],
    open_interest: Sequence[OpenInterest],
    now_ms: int,
    mark_price: float | None = None,
    config: FeatureConfig | None = None,
) -> SymbolFeatures:
    """Features of one symbol from its 1m bars closed at or before ``now_ms``.

    A store holding only coarser bars (3m/5m/15m/1h) passes those instead: every window
    keeps its span in time (24 h, 1 h, 15 min...), counted in bars of that timeframe; a
    feature whose span is shorter than one bar, or not a whole number of bars, is None
    (e.g. ``change_1m_pct`` on 5m bars), and the 5m/15m views are rolled up from the bars
    given (or are those bars when they are already as coarse). See docs/data.md.
    """
    step = TIMEFRAME_MS.get(series_1m.timeframe, 0)
    if not MINUTE_MS <= step <= 60 * MINUTE_MS:
        raise ValueError(f"compute_features needs 1m..1h bars, got {series_1m.timeframe}")
    cfg = _at_resolution(config or _DEFAULT, step)
    bars = _visible(series_1m, now_ms, cfg.window_bars, step)
    n = len(bars)
    quality, reason = _quality(bars, now_ms, cfg, step)
    if n == 0:
        return SymbolFeatures(
            symbol=series_1m.symbol,
            as_of_ms=now_ms,
            bars=0,
            data_quality=quality,
            quality_reason=reason,
        )
    close = bars.close
    price = float(close[-1])
    b15 = _rolled(bars, "15m")
    b5 = _rolled(bars, "5m")
    atr_pct = _atr_pct(b15, cfg.period, price)
    adx, plus_di, minus_di = _adx(b15, cfg.period)
    autocorr = _autocorr_15m(b15)
    imb1, imb5, imb15, estimated = _imbalances(bars, step)
    close_pos, upper, lower = _bar_shape(b5)
    tolerance_pct = max(cfg.zone_tolerance_atr * (atr_pct or 0.0), 0.02)
    zones, bos = _zones(b15, price, cfg)
    demand = _nearest(zones, "demand", price)
    supply = _nearest(zones, "supply", price)
    demand_dist = _distance_pct(demand, price)
    supply_dist = _distance_pct(supply, price)
    gaps = _fair_value_gaps(b5, cfg) + _fair_value_gaps(b15, cfg)
    poc, vah, val = _value_area(bars, cfg)
    liq = _liquidations(bars, open_interest, now_ms, price, cfg, step)
    btc_corr, btc_change = _btc(bars, btc_1m, now_ms, cfg, step)
    return SymbolFeatures(
        symbol=series_1m.symbol,
        as_of_ms=now_ms,
        bars=n,
        last_bar_ts_ms=int(bars.ts_ms[-1]),
        data_quality=quality,
        quality_reason=reason,
        last_price=_fin(price),
        change_1m_pct=_change(close, _bars_in(1, step)),
        change_5m_pct=_change(close, _bars_in(5, step)),
        change_15m_pct=_change(close, _bars_in(15, step)),
        change_1h_pct=_change(close, _bars_in(60, step)),
        volume_spike=_volume_spike(bars.volume, step),
        oi_change_15m_pct=_oi_change(open_interest, now_ms),
        funding_rate=_latest_funding(funding, now_ms),
        basis_pct=None if mark_price is None else _fin((mark_price - price) / price * 100),
        atr_pct=atr_pct,
        adx=adx,
        plus_di=plus_di,
        minus_di=minus_di,
        hurst=_hurst(b15, cfg.hurst_min_bars),
        autocorr_15m=autocorr,
        mean_reversion=None if autocorr is None else min(1.0, max(0.0, (1 - autocorr) / 2)),
        deviation_sigma_15m=_deviation_sigma(close[-15:]),
        imbalance_1m=imb1,
        imbalance_5m=imb5,
        imbalance_15m=imb15,
        imbalance_estimated=estimated,
        close_position_5m=close_pos,
        upper_wick_5m=upper,
        lower_wick_5m=lower,
        zones=zones,
        at_demand_zone=demand_dist is not None and demand_dist <= tolerance_pct,
        at_supply_zone=supply_dist is not None and supply_dist <= tolerance_pct,
        demand_distance_pct=demand_dist,
        supply_distance_pct=supply_dist,
        demand_touches=None if demand is None else demand.touches,
        supply_touches=None if supply is None else supply.touches,
        break_of_structure=bos,
        fair_value_gaps=gaps,
        in_bullish_fvg=_in_gap(gaps, "bullish", price, tolerance_pct),
        in_bearish_fvg=_in_gap(gaps, "bearish", price, tolerance_pct),
        poc=poc,
        vah=vah,
        val=val,
        liq_long_notional=liq[0],
        liq_short_notional=liq[1],
        liq_imbalance=liq[2],
        liq_cluster_price=liq[3],
        liq_cluster_ratio=liq[4],
        btc_correlation=btc_corr,
        btc_change_15m_pct=btc_change,
    )


_DEFAULT = FeatureConfig()


def _at_resolution(cfg: FeatureConfig, step: int) -> FeatureConfig:
    """``cfg`` with its 1m bar counts turned into counts of ``step`` bars (same spans)."""
    if step == MINUTE_MS:
        return cfg
    per = MINUTE_MS / step
    return cfg.model_copy(
        update={
            "window_bars": max(1, int(cfg.window_bars * per)),
            "min_bars": max(1, int(cfg.min_bars * per)),
            "stale_after_ms": cfg.stale_after_ms * step // MINUTE_MS,
            # a correlation needs some returns whatever the bar: at least 12
            "min_corr_returns": max(12, int(cfg.min_corr_returns * per)),
        }
    )


def _bars_in(minutes: int, step: int) -> int | None:
    """How many ``step`` bars span ``minutes``; None unless a whole number (>= 1)."""
    span = minutes * MINUTE_MS
    return span // step if span >= step and span % step == 0 else None


def _rolled(bars: CandleSeries, timeframe: str) -> CandleSeries:
    """``bars`` rolled up into ``timeframe``; the bars themselves when they cannot be (they
    are already as coarse, or the timeframe is not a multiple of theirs)."""
    if bars.timeframe == "1m" or TIMEFRAME_MS[timeframe] % TIMEFRAME_MS[bars.timeframe] == 0:
        return bars.resample(timeframe)
    return bars


def _fin(x: float) -> float | None:
    """A finite float or None (NaN/inf in the data never leaks into features)."""
    v = float(x)
    return v if math.isfinite(v) else None


def _visible(
    series: CandleSeries, now_ms: int, max_bars: int, step: int = MINUTE_MS
) -> CandleSeries:
    """Bars closed at or before ``now_ms``, oldest first, at most ``max_bars`` of them."""
    ts = series.ts_ms
    if len(series) == 0:
        return series
    if bool(np.all(ts[1:] > ts[:-1])):
        end = int(np.searchsorted(ts, now_ms - step, side="right"))
        return series.rows(max(0, end - max_bars), end)
    # unordered input: sort (stable) and keep the visible bars
    order = np.argsort(ts, kind="stable")
    order = order[ts[order] + step <= now_ms][-max_bars:]
    return CandleSeries(
        series.symbol,
        series.timeframe,
        ts[order],
        series.open[order],
        series.high[order],
        series.low[order],
        series.close[order],
        series.volume[order],
        series.taker_buy_volume[order],
    )


def _quality(
    bars: CandleSeries, now_ms: int, cfg: FeatureConfig, step: int = MINUTE_MS
) -> tuple[DataQuality, str]:
    n = len(bars)
    if n < cfg.min_bars:
        return DataQuality.MISSING, f"{n} closed {bars.timeframe} bars, need {cfg.min_bars}"
    age_ms = now_ms - (int(bars.ts_ms[-1]) + step)
    if age_ms > cfg.stale_after_ms:
        return DataQuality.STALE, f"last bar closed {age_ms / 1000:.0f}s before now"
    steps = np.diff(bars.ts_ms)
    if bool((steps != step).any()):
        missing = int(np.maximum(steps // step - 1, 0).sum())
        return DataQuality.GAPPED, f"{missing} missing {bars.timeframe} bars inside the window"
    if not bool(np.isfinite(bars.close).all()):
        return DataQuality.GAPPED, "non-finite prices inside the window"
    return DataQuality.OK, ""


def _change(close: FloatArray, bars_back: int | None) -> float | None:
    if bars_back is None or close.shape[0] <= bars_back or close[-1 - bars_back] <= 0:
        return None
    return _fin((close[-1] / close[-1 - bars_back] - 1) * 100)


def _volume_spike(volume: FloatArray, step: int = MINUTE_MS) -> float | None:
    hour, five = _bars_in(60, step), _bars_in(5, step)
    if hour is None or five is None or volume.shape[0] < hour:
        return None
    hourly_avg_5m = float(volume[-hour:].sum()) / 12
    if hourly_avg_5m <= 0:
        return None
    return _fin(float(volume[-five:].sum()) / hourly_avg_5m)


def _latest_funding(funding: Sequence[FundingRate], now_ms: int) -> float | None:
    best: FundingRate | None = None
    for f in funding:
        if f.ts_ms <= now_ms and (best is None or f.ts_ms >= best.ts_ms):
            best = f
    return None if best is None else _fin(best.rate)


def _visible_oi(open_interest: Sequence[OpenInterest], now_ms: int) -> list[OpenInterest]:
    return sorted((o for o in open_interest if o.ts_ms <= now_ms), key=lambda o: o.ts_ms)


def _oi_change(open_interest: Sequence[OpenInterest], now_ms: int) -> float | None:
    points = _visible_oi(open_interest, now_ms)
    if len(points) < 2:
        return None
    last = points[-1]
    earlier = [p for p in points if p.ts_ms <= last.ts_ms - 15 * MINUTE_MS]
    if not earlier or earlier[-1].amount <= 0:
        return None
    return _fin((last.amount / earlier[-1].amount - 1) * 100)


def _true_range(b: CandleSeries) -> FloatArray:
    prev_close = b.close[:-1]
    high, low = b.high[1:], b.low[1:]
    tr: FloatArray = np.maximum(
        np.maximum(high - low, np.abs(high - prev_close)), np.abs(low - prev_close)
    )
    return tr


def _wilder(values: FloatArray, period: int) -> FloatArray:
    """Wilder's smoothing (seeded with the first ``period`` mean); len - period + 1 values."""
    out = np.empty(values.shape[0] - period + 1, dtype=np.float64)
    acc = float(values[:period].mean())
    out[0] = acc
    alpha = 1.0 / period
    for i, v in enumerate(values[period:].tolist(), start=1):
        acc += alpha * (v - acc)
        out[i] = acc
    return out


def _atr_pct(b15: CandleSeries, period: int, price: float) -> float | None:
    if len(b15) < period + 1 or price <= 0:
        return None
    return _fin(_wilder(_true_range(b15), period)[-1] / price * 100)


def _adx(b15: CandleSeries, period: int) -> tuple[float | None, float | None, float | None]:
    """ADX, +DI, -DI (Wilder); needs 2 × period + 1 bars."""
    if len(b15) < 2 * period + 1:
        return None, None, None
    up = b15.high[1:] - b15.high[:-1]
    down = b15.low[:-1] - b15.low[1:]
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    atr = _wilder(_true_range(b15), period)
    safe_atr = np.where(atr > 0, atr, np.inf)
    plus_di = 100 * _wilder(plus_dm, period) / safe_atr
    minus_di = 100 * _wilder(minus_dm, period) / safe_atr
    di_sum = plus_di + minus_di
    dx = 100 * np.abs(plus_di - minus_di) / np.where(di_sum > 0, di_sum, np.inf)
    adx = _wilder(dx, period)[-1]
    return _fin(adx), _fin(plus_di[-1]), _fin(minus_di[-1])


def _hurst(b15: CandleSeries, min_bars: int) -> float | None:
    """Generalized Hurst exponent (q = 2) of 15m log closes, clipped to 0..1.

    RMS of the lag-k log-price differences scales as k^H: H ≈ 1 for a steady trend,
    0.5 for a random walk, < 0.5 for a mean-reverting (alternating) series. The RMS is
    not demeaned on purpose, so a drift counts as persistence.
    """
    n = len(b15)
    if n < min_bars or bool((b15.close <= 0).any()):
        return None
    logp = np.log(b15.close)
    lags = np.arange(1, max(2, n // 4) + 1)
    rms = np.array([math.sqrt(float(np.mean((logp[k:] - logp[:-k]) ** 2))) for k in lags])
    keep = rms > 0
    if int(keep.sum()) < 2:
        return None
    x, y = np.log(lags[keep].astype(np.float64)), np.log(rms[keep])
    x_c = x - x.mean()
    slope = float((x_c * (y - y.mean())).sum() / (x_c**2).sum())
    return _fin(min(1.0, max(0.0, slope)))


def _autocorr_15m(b15: CandleSeries) -> float | None:
    if len(b15) < 17 or bool((b15.close <= 0).any()):
        return None
    r = np.diff(np.log(b15.close))
    a, b = r[:-1] - r[:-1].mean(), r[1:] - r[1:].mean()
    denom = math.sqrt(float((a**2).sum() * (b**2).sum()))
    if denom == 0:
        return None
    return _fin(float((a * b).sum()) / denom)


def _deviation_sigma(closes: FloatArray) -> float | None:
    if closes.shape[0] < 15:
        return None
    std = float(closes.std())
    if std <= 0:
        return None
    return _fin((closes[-1] - closes.mean()) / std)


def _imbalances(
    bars: CandleSeries, step: int = MINUTE_MS
) -> tuple[float | None, float | None, float | None, bool]:
    """Buy ÷ sell volume over the last 1, 5, 15 1m bars (estimated without taker data).

    The estimate splits each bar's volume by where it closed in its range: a close at the
    high counts as all-buy, at the low as all-sell, a doji (high == low) as half/half.
    """
    tail = bars.tail(15)
    if tail.has_taker_volume:
        buy = np.clip(tail.taker_buy_volume, 0.0, tail.volume)
        estimated = False
    else:
        rng = tail.high - tail.low
        location = np.where(rng > 0, (tail.close - tail.low) / np.where(rng > 0, rng, 1.0), 0.5)
        buy = tail.volume * np.clip(location, 0.0, 1.0)
        estimated = True
    sell = tail.volume - buy
    out: list[float | None] = []
    for minutes in (1, 5, 15):
        k = _bars_in(minutes, step)
        if k is None or tail.volume.shape[0] < k:
            out.append(None)
            continue
        b, s = float(buy[-k:].sum()), float(sell[-k:].sum())
        if b + s <= 0:
            out.append(None)
        elif s <= 0:
            out.append(_MAX_RATIO)
        else:
            out.append(_fin(min(_MAX_RATIO, max(1 / _MAX_RATIO, b / s))))
    return out[0], out[1], out[2], estimated


def _bar_shape(b5: CandleSeries) -> tuple[float | None, float | None, float | None]:
    if len(b5) == 0:
        return None, None, None
    o, h, lo, c = (float(x[-1]) for x in (b5.open, b5.high, b5.low, b5.close))
    rng = h - lo
    if rng <= 0:
        return 0.5, 0.0, 0.0
    return _fin((c - lo) / rng), _fin((h - max(o, c)) / rng), _fin((min(o, c) - lo) / rng)


def _zones(b15: CandleSeries, price: float, cfg: FeatureConfig) -> tuple[list[Zone], int]:
    """Unbroken swing-high (supply) and swing-low (demand) zones, and the break of structure."""
    k, n = cfg.swing_k, len(b15)
    if n < 2 * k + 1:
        return [], 0
    high, low, close = b15.high, b15.low, b15.close
    body_top = np.maximum(b15.open, close)
    body_bottom = np.minimum(b15.open, close)
    avg_volume = float(b15.volume.mean()) or 1.0
    windows_h = np.lib.stride_tricks.sliding_window_view(high, 2 * k + 1)
    windows_l = np.lib.stride_tricks.sliding_window_view(low, 2 * k + 1)
    pivot_high = np.flatnonzero(windows_h.argmax(axis=1) == k) + k
    pivot_low = np.flatnonzero(windows_l.argmin(axis=1) == k) + k
    min_width = price * 0.0002
    demand: list[Zone] = []
    supply: list[Zone] = []
    for i in pivot_low.tolist():
        z_low, z_high = float(low[i]), max(float(body_bottom[i]), float(low[i]) + min_width)
        later = slice(i + k + 1, None)
        if bool((close[i + 1 :] < z_low).any()):
            continue  # broken: a later close below the zone
        touches = int((low[later] <= z_high).sum())
        demand.append(
            Zone(
                kind="demand",
                low=z_low,
                high=z_high,
                ts_ms=int(b15.ts_ms[i]),
                volume_ratio=float(b15.volume[i]) / avg_volume,
                touches=touches,
            )
        )
    for i in pivot_high.tolist():
        z_high, z_low = float(high[i]), min(float(body_top[i]), float(high[i]) - min_width)
        later = slice(i + k + 1, None)
        if bool((close[i + 1 :] > z_high).any()):
            continue
        touches = int((high[later] >= z_low).sum())
        supply.append(
            Zone(
                kind="supply",
                low=z_low,
                high=z_high,
                ts_ms=int(b15.ts_ms[i]),
                volume_ratio=float(b15.volume[i]) / avg_volume,
                touches=touches,
            )
        )
    bos = 0
    last_high = float(high[pivot_high[-1]]) if pivot_high.size else None
    last_low = float(low[pivot_low[-1]]) if pivot_low.size else None
    if last_high is not None and price > last_high:
        bos = 1
    elif last_low is not None and price < last_low:
        bos = -1
    zones = demand[-cfg.max_zones :] + supply[-cfg.max_zones :]
    return zones, bos


def _nearest(zones: list[Zone], kind: str, price: float) -> Zone | None:
    candidates = [z for z in zones if z.kind == kind]
    if not candidates:
        return None
    return min(candidates, key=lambda z: (_interval_distance(z.low, z.high, price), -z.ts_ms))


def _interval_distance(low: float, high: float, price: float) -> float:
    return max(low - price, price - high, 0.0)


def _distance_pct(zone: Zone | None, price: float) -> float | None:
    if zone is None or price <= 0:
        return None
    return _interval_distance(zone.low, zone.high, price) / price * 100


def _fair_value_gaps(b: CandleSeries, cfg: FeatureConfig) -> list[FairValueGap]:
    """Unfilled 3-bar gaps; a gap is filled once a later bar trades through all of it."""
    n = len(b)
    if n < 3:
        return []
    high, low = b.high, b.low
    min_size = float(b.close[-1]) * cfg.min_gap_pct / 100
    # later extremes after bar i: suffix min of lows / max of highs, shifted by one
    # (np.concatenate, not np.r_: this runs for every symbol at every ranking)
    later_low = np.concatenate((np.minimum.accumulate(low[::-1])[::-1][1:], _INF))
    later_high = np.concatenate((np.maximum.accumulate(high[::-1])[::-1][1:], _NEG_INF))
    idx = np.arange(2, n)
    bull = idx[(low[2:] - high[:-2] > min_size) & (later_low[2:] > high[:-2])]
    bear = idx[(low[:-2] - high[2:] > min_size) & (later_high[2:] < low[:-2])]
    gaps: list[FairValueGap] = []
    for i in bull[-cfg.max_gaps :].tolist():
        gaps.append(
            FairValueGap(
                timeframe=b.timeframe,
                kind="bullish",
                low=float(high[i - 2]),
                high=float(low[i]),
                ts_ms=int(b.ts_ms[i]),
            )
        )
    for i in bear[-cfg.max_gaps :].tolist():
        gaps.append(
            FairValueGap(
                timeframe=b.timeframe,
                kind="bearish",
                low=float(high[i]),
                high=float(low[i - 2]),
                ts_ms=int(b.ts_ms[i]),
            )
        )
    return gaps


_INF = np.array([np.inf])
_NEG_INF = np.array([-np.inf])


def _in_gap(gaps: list[FairValueGap], kind: str, price: float, tolerance_pct: float) -> bool:
    tol = price * tolerance_pct / 100
    return any(g.kind == kind and g.low - tol <= price <= g.high + tol for g in gaps)


def _value_area(
    bars: CandleSeries, cfg: FeatureConfig
) -> tuple[float | None, float | None, float | None]:
    """POC, VAH, VAL of the volume profile (volume at each bar's typical price)."""
    lo, hi = float(bars.low.min()), float(bars.high.max())
    total = float(bars.volume.sum())
    if not (math.isfinite(lo) and math.isfinite(hi)) or total <= 0:
        return None, None, None
    if hi <= lo:
        return lo, hi, lo
    nb = cfg.profile_bins
    width = (hi - lo) / nb
    typical = (bars.high + bars.low + bars.close) / 3
    idx = np.clip(((typical - lo) / width).astype(np.int64), 0, nb - 1)
    profile = np.bincount(idx, weights=bars.volume, minlength=nb)
    poc_i = int(profile.argmax())
    left, right, acc = poc_i, poc_i, float(profile[poc_i])
    target = cfg.value_area_share * total
    while acc < target and (left > 0 or right < nb - 1):
        below = float(profile[left - 1]) if left > 0 else -1.0
        above = float(profile[right + 1]) if right < nb - 1 else -1.0
        if above >= below:
            right += 1
            acc += above
        else:
            left -= 1
            acc += below
    return lo + (poc_i + 0.5) * width, lo + (right + 1) * width, lo + left * width


def _liquidations(
    bars: CandleSeries,
    open_interest: Sequence[OpenInterest],
    now_ms: int,
    price: float,
    cfg: FeatureConfig,
    bar_ms: int = MINUTE_MS,
) -> tuple[float | None, float | None, float | None, float | None, float | None]:
    """Estimated pending liquidations from OI increases × leverage tiers (10/25/50/100x).

    Each OI increase is new positions opened at that minute's close; the side is unknown,
    so half is assumed long and half short, spread evenly over the leverage tiers, each
    liquidated roughly 1/leverage away from its entry (maintenance margin ignored). Levels
    price has already crossed are dropped. Returns pending long notional (below price),
    short notional (above), short ÷ long, the largest cluster's price and its size ÷ the
    average cluster (price grid of ``liq_bin_pct``).
    """
    points = _visible_oi(open_interest, now_ms)
    if len(points) < 2 or price <= 0:
        return None, None, None, None, None
    ts = bars.ts_ms
    levels: list[tuple[float, float]] = []  # (liquidation price, notional)
    for prev, cur in itertools.pairwise(points):
        added = cur.amount - prev.amount
        if added <= 0:
            continue
        i = int(np.searchsorted(ts, cur.ts_ms - bar_ms, side="right")) - 1
        entry = float(bars.close[i]) if i >= 0 else price
        per_tier = added * entry / 2 / len(LEVERAGE_TIERS)
        for lev in LEVERAGE_TIERS:
            levels.append((entry * (1 - 1 / lev), per_tier))
            levels.append((entry * (1 + 1 / lev), per_tier))
    long_liq = sum(n for p, n in levels if p < price)
    short_liq = sum(n for p, n in levels if p > price)
    pending = [(p, n) for p, n in levels if p != price]
    if not pending:
        return 0.0, 0.0, None, None, None
    step = price * cfg.liq_bin_pct / 100
    bins: dict[int, float] = {}
    for p, n in pending:
        key = round((p - price) / step)
        bins[key] = bins.get(key, 0.0) + n
    top_key = min(bins, key=lambda key: (-bins[key], abs(key), key))
    mean_cluster = sum(bins.values()) / len(bins)
    return (
        long_liq,
        short_liq,
        None if long_liq <= 0 else short_liq / long_liq,
        price + top_key * step,
        bins[top_key] / mean_cluster if mean_cluster > 0 else None,
    )


def _btc(
    bars: CandleSeries,
    btc_1m: CandleSeries | None,
    now_ms: int,
    cfg: FeatureConfig,
    step: int = MINUTE_MS,
) -> tuple[float | None, float | None]:
    """Correlation of 1m log returns with BTC over the common window, and BTC's 15m change."""
    if btc_1m is None:
        return None, None
    btc = _visible(btc_1m, now_ms, cfg.window_bars, step)
    if len(btc) == 0:
        return None, None
    btc_change = _change(btc.close, _bars_in(15, step))
    common, ia, ib = np.intersect1d(bars.ts_ms, btc.ts_ms, assume_unique=True, return_indices=True)
    if common.shape[0] < 2:
        return None, btc_change
    a, b = bars.close[ia], btc.close[ib]
    if bool((a <= 0).any()) or bool((b <= 0).any()):
        return None, btc_change
    consecutive = np.diff(common) == step
    ra, rb = np.diff(np.log(a))[consecutive], np.diff(np.log(b))[consecutive]
    if ra.shape[0] < cfg.min_corr_returns:
        return None, btc_change
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    if denom == 0:
        return None, btc_change
    return _fin(max(-1.0, min(1.0, float((ra * rb).sum()) / denom))), btc_change
