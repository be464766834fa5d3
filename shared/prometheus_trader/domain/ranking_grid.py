"""What the backtest's ranking reads of one series, at every ranking time at once.

A backtest ranks its 16 series every 5 simulated minutes: ~7,000 rankings on a month, and
for each symbol ``FeatureSeries.ranking_at`` (the ranking fields) and, for a candidate,
``regime_bars`` (the window's complete 15m bars, on which the regime veto depends). None
of that depends on the portfolio, only on the time and the collection start, both known
before the run. :func:`ranking_grid` computes them for all ranking times with numpy, and
the loop reads them by index.

No look-ahead: the value at time ``t`` reads the rows of the window ``bounds(t, since)``
(bars closed by ``t``) exactly as the scalar methods do. Equal, not close: the same
searchsorted bounds, the same running counts, the same element-wise float operations
(IEEE division and subtraction, numpy's or Python's alike), the imbalance sums as
``FeatureSeries._tail_sums`` makes them (numpy's pairwise sum of each tail's bars), and
Python's ``min``/``max`` spelled as the comparisons they make (a NaN ratio clamps as
they clamp it).
``tests/unit/test_ranking_grid.py`` compares every value with ``ranking_at`` /
``regime_bars`` on the bundled sample and on constructed series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prometheus_trader.domain.feature_series import (
    _B15_SPAN_MS,
    BoolArray,
    FeatureSeries,
    _buy_sell,
    _sum,
)
from prometheus_trader.domain.features import _MAX_RATIO, _hurst
from prometheus_trader.domain.market import MINUTE_MS, FloatArray, IntArray
from prometheus_trader.domain.ranking import (
    FULL_RATIO,
    TOP_MOVER_1M_PCT,
    TOP_MOVER_5M_PCT,
    RankInputs,
)

__all__ = ["RankingGrid", "ranking_grid"]


@dataclass(frozen=True)
class RankingGrid:
    """One series' ranking inputs and regime bars at ``times`` (index ``i``: ``times[i]``).

    ``lo``/``hi``: the window's rows (``FeatureSeries.bounds``); ``inputs[i]``: the
    ``RankInputs`` of ``ranking_at(times[i], since_ms=since[i])`` without open interest
    (its cluster ratio is None); ``has[i]``: whether there is a window; ``j0``/``j1``:
    its complete 15m bars (``bars(i)``)."""

    times: IntArray
    lo: IntArray
    hi: IntArray
    inputs: list[RankInputs]
    has: list[bool]
    j0: IntArray
    j1: IntArray
    # ``regime_at``'s fields at each time (NaN: None; all NaN where there is no window):
    # adx, plus_di, minus_di, hurst, autocorr_15m, mean_reversion
    regime: FloatArray

    # ``FeatureSeries._imbalances`` of each window: the 1m, 5m, 15m ratios (rows; NaN: None)
    # and whether they are estimated
    ratios: FloatArray
    estimated: BoolArray

    def imbalances(self, i: int) -> tuple[float | None, float | None, float | None, bool]:
        """``FeatureSeries._imbalances(lo[i], hi[i])`` (where there is a window)."""
        imb1, imb5, imb15 = (None if v != v else v for v in self.ratios[:, i].tolist())
        return imb1, imb5, imb15, bool(self.estimated[i])

    def bars(self, i: int) -> tuple[int, int] | None:
        """``regime_bars`` at ``times[i]``: the window's complete 15m bars, or None."""
        return (int(self.j0[i]), int(self.j1[i])) if self.has[i] else None


def _none_nan(values: FloatArray) -> list[float | None]:
    """A float array as a list, NaN as None (no valid value here is NaN)."""
    return [None if v != v else v for v in values.tolist()]


def _change(close: FloatArray, hi: IntArray, n: IntArray, k: int) -> FloatArray:
    """``features._change(window close, k)`` at every window end (NaN: None)."""
    valid = n > k
    cur = close[np.where(valid, hi - 1, 0)]
    prev = close[np.where(valid, hi - 1 - k, 0)]
    valid &= ~(prev <= 0)  # ``close[-1 - k] <= 0``: None (a NaN close goes on, to NaN)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = (cur / prev - 1) * 100
    value[~valid | ~np.isfinite(value)] = np.nan
    return value


def _ratio(buy: FloatArray, sell: FloatArray) -> FloatArray:
    """``FeatureSeries._imbalances``' ratio of each (buy, sell) sum pair (NaN: None):
    ``min(M, max(1/M, b/s))`` as the comparisons Python's min and max make."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = buy / sell
    low = 1 / _MAX_RATIO
    r = np.where(r > low, r, low)  # max(1/M, r): r only when r > 1/M
    r = np.where(r < _MAX_RATIO, r, _MAX_RATIO)  # min(M, r): r only when r < M
    r = np.where(sell <= 0, _MAX_RATIO, r)
    return np.where(buy + sell <= 0, np.nan, r)


def _tail_ratios(fs: FeatureSeries, his: IntArray) -> tuple[FloatArray, BoolArray]:
    """The 1m, 5m and 15m imbalance ratios (rows) of full tails ending at ``his`` (each
    >= 15), and which are estimated.

    The sums ``_tail_sums`` makes: buy and sell volume per bar are element-wise (the
    whole series' arrays hold the tail's values), a tail with a bar missing taker volume
    is estimated, and each sum is numpy's reduction of one contiguous row of k values
    (the pairwise loop of the 1-D slice, as ``_tail_block_sums``' rows)."""
    s = fs.series
    missing = np.r_[0, np.cumsum(np.isnan(s.taker_buy_volume))]
    estimated = (missing[his] - missing[his - 15]) > 0
    ways = [_buy_sell(s, taker) for taker in (True, False)]
    ratios = np.empty((3, his.shape[0]))
    for row, k in enumerate((1, 5, 15)):
        rows = his[:, None] + np.arange(-k, 0)  # the last k bars of each tail
        sums: list[FloatArray] = [_sum(side[rows], axis=1) for way in ways for side in way]
        taker_buy, taker_sell, est_buy, est_sell = sums
        ratios[row] = _ratio(
            np.where(estimated, est_buy, taker_buy), np.where(estimated, est_sell, taker_sell)
        )
    return ratios, estimated


def _finite(x: FloatArray) -> FloatArray:
    """``_fin`` element-wise (NaN: None)."""
    return np.where(np.isfinite(x), x, np.nan)


def _clamp01(x: FloatArray) -> FloatArray:
    """``min(1.0, max(0.0, x))`` as Python's comparisons make it (a NaN gives 0.0)."""
    x = np.where(x > 0.0, x, 0.0)
    return np.where(x < 1.0, x, 1.0)


def _regime(fs: FeatureSeries, j0: IntArray, j1: IntArray, has: BoolArray) -> FloatArray:
    """``regime_at``'s fields of the 15m bars j0..j1 where ``has`` (see RankingGrid): the
    full-length windows read from the series' tables as ``_from_table`` reads one row,
    the others from ``_part15`` (one call per distinct bars)."""
    m = j0.shape[0]
    out = np.full((6, m), np.nan)
    done = ~has
    length = j1 - j0
    for n, t in fs._tables.items():
        at = np.flatnonzero(has & (length == n) & (j0 < t.atr.shape[0]))
        if not at.size:
            continue
        done[at] = True
        rows = j0[at]
        positive = fs._b15_nonpos[j1[at]] == fs._b15_nonpos[rows]
        out[0, at] = _finite(t.adx[rows])
        out[1, at] = _finite(t.plus_di[rows])
        out[2, at] = _finite(t.minus_di[rows])
        slope = t.hurst[rows]
        out[3, at] = np.where(positive, _finite(_clamp01(slope)), np.nan)
        for k in np.flatnonzero(positive & np.isnan(slope)).tolist():  # a zero RMS
            hurst = _hurst(fs.b15.rows(int(rows[k]), int(j1[at[k]])), fs.config.hurst_min_bars)
            out[3, at[k]] = np.nan if hurst is None else hurst
        denom = t.denom[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            autocorr = _finite(t.cross[rows] / denom)
        out[4, at] = np.where(positive & (denom != 0), autocorr, np.nan)
    parts: dict[tuple[int, int], tuple[float | None, ...]] = {}
    for i in np.flatnonzero(~done).tolist():  # short windows, or missing 15m bars
        bars = (int(j0[i]), int(j1[i]))
        values = parts.get(bars)
        if values is None:
            p = fs._part15(*bars)
            values = parts[bars] = (p.adx, p.plus_di, p.minus_di, p.hurst, p.autocorr)
        out[:5, i] = [np.nan if v is None else v for v in values]
    # mean_reversion = min(1.0, max(0.0, (1 - autocorr) / 2)), None without autocorr
    autocorr = out[4]
    out[5] = np.where(np.isnan(autocorr), np.nan, _clamp01((1 - autocorr) / 2))
    return out


def ranking_grid(fs: FeatureSeries, times: IntArray, since: IntArray) -> RankingGrid:
    """``fs.ranking_at(t, since_ms=s)``'s ranking inputs (no open interest) and
    ``fs.regime_bars(t, since_ms=s)`` for every (t, s) of ``times``/``since``."""
    cfg = fs.config
    s = fs.series
    ts = s.ts_ms
    times = np.asarray(times, dtype=np.int64)
    since = np.asarray(since, dtype=np.int64)
    hi = ts.searchsorted(times - MINUTE_MS, side="right").astype(np.int64)
    lo = np.maximum(ts.searchsorted(since, side="left").astype(np.int64), hi - cfg.window_bars)
    n = np.maximum(hi - lo, 0)
    has = n > 0
    last = np.where(has, hi - 1, 0)
    first = np.where(has, lo, 0)
    m = times.shape[0]
    ok: BoolArray = np.zeros(m, dtype=bool)
    nan = np.full(m, np.nan)
    change_1m, change_5m, ratio = nan, nan.copy(), nan.copy()
    j0 = j1 = np.zeros(m, dtype=np.int64)
    regime = np.full((6, m), np.nan)
    imbalances = np.full((3, m), np.nan)  # 1m, 5m, 15m
    estimated = np.zeros(m, dtype=bool)
    if len(s):
        # FeatureSeries._quality is OK: enough bars, fresh, no gap, no bad close
        age = times - (ts[last] + MINUTE_MS)
        ok = (
            has
            & (n >= cfg.min_bars)
            & ~(age > cfg.stale_after_ms)
            & (fs._gaps[last] == fs._gaps[first])
            & (fs._bad_close[np.where(has, hi, 0)] == fs._bad_close[first])
        )
        close = s.close
        change_1m = _change(close, hi, n, 1)
        change_5m = _change(close, hi, n, 5)
        full = np.flatnonzero(n >= 15)
        if full.size:
            imbalances[:, full], estimated[full] = _tail_ratios(fs, hi[full])
        for i in np.flatnonzero(has & (n < 15)).tolist():  # a short window: as ranking_at
            *ratios, estimated[i] = fs._imbalances(int(lo[i]), int(hi[i]))
            imbalances[:, i] = [np.nan if r is None else r for r in ratios]
        imb5, imb15 = imbalances[1], imbalances[2]
        ratio = np.where(np.isnan(imb5), imb15, imb5)
        # FeatureSeries._bounds15 of the window's first and last 1m bars
        t15 = fs.b15.ts_ms
        j0 = t15.searchsorted(ts[first], side="left").astype(np.int64)
        j1 = np.maximum(
            j0, t15.searchsorted(ts[last] - _B15_SPAN_MS, side="right").astype(np.int64)
        )
        regime = _regime(fs, j0, j1, has)
    # ranking.imbalance_component(ratio, FULL_RATIO): math.log's logarithms (numpy's may
    # differ in the last bit), then abs, ÷ and min as IEEE and Python make them
    scored = np.isfinite(ratio) & (ratio > 0)
    logs = np.fromiter(map(math.log, ratio[scored].tolist()), np.float64)
    imbalance = np.zeros(m)
    imbalance[scored] = np.minimum(np.abs(logs) / math.log(FULL_RATIO), 1.0)
    # ranking._top_mover: |1m| > 2 % or |5m| > 5 % (a NaN, None, compares False)
    mover = (np.abs(change_1m) > TOP_MOVER_1M_PCT) | (np.abs(change_5m) > TOP_MOVER_5M_PCT)
    inputs = [
        RankInputs(k, r, None, c1, c5, imb, mv)
        for k, r, c1, c5, imb, mv in zip(
            ok.tolist(),
            _none_nan(ratio),
            _none_nan(change_1m),
            _none_nan(change_5m),
            imbalance.tolist(),
            mover.tolist(),
            strict=True,
        )
    ]
    return RankingGrid(
        times=times,
        lo=lo,
        hi=hi,
        inputs=inputs,
        has=has.tolist(),
        j0=j0,
        j1=j1,
        regime=regime,
        ratios=imbalances,
        estimated=estimated,
    )
