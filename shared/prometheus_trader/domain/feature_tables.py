"""The Wilder recursions and per-window tables behind ``FeatureSeries`` (see there).

``table15`` computes, for every window of ``n`` complete 15m bars of a series at once,
the 15m features ``compute_features`` derives from those bars; ``Wilder`` runs the same
recursions for one window start when the window is not tabulated. Both repeat the float
operations of ``features._wilder`` / ``_adx`` / ``_hurst`` / ``_autocorr_15m`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from prometheus_trader.domain.features import FeatureConfig
from prometheus_trader.domain.market import CandleSeries, FloatArray

__all__ = ["Table15", "Wilder", "breaks", "fills", "table15", "tables15"]

IntArray = npt.NDArray[np.int64]


class Wilder:
    """ATR, +DM, -DM and ADX Wilder recursions from one first 15m bar, extended on demand.

    The values are those of ``features._wilder`` / ``_adx`` on any window starting at
    that bar: the same seed (numpy mean of the first ``period`` values) and the same
    ``acc += alpha * (v - acc)`` steps.
    """

    def __init__(self, period: int) -> None:
        self.period = period
        self.alpha = 1.0 / period
        self.atr: list[float] = []
        self.plus: list[float] = []
        self.minus: list[float] = []
        self.plus_di: list[float] = []
        self.minus_di: list[float] = []
        self.dx: list[float] = []
        self.adx: list[float] = []
        self.used = 0  # true ranges consumed

    def extend(self, tr: FloatArray, pdm: FloatArray, mdm: FloatArray) -> None:
        """Consume the window's true ranges / directional moves up to ``len(tr)``."""
        m, p, alpha = tr.shape[0], self.period, self.alpha
        if m < p or m <= self.used:
            return
        if not self.atr:
            self.atr.append(float(tr[:p].mean()))
            self.plus.append(float(pdm[:p].mean()))
            self.minus.append(float(mdm[:p].mean()))
            self._di()
            self.used = p
        atr, plus, minus = self.atr[-1], self.plus[-1], self.minus[-1]
        for v, pv, mv in zip(
            tr[self.used : m].tolist(),
            pdm[self.used : m].tolist(),
            mdm[self.used : m].tolist(),
            strict=True,
        ):
            atr += alpha * (v - atr)
            plus += alpha * (pv - plus)
            minus += alpha * (mv - minus)
            self.atr.append(atr)
            self.plus.append(plus)
            self.minus.append(minus)
            self._di()
        self.used = m

    def _di(self) -> None:
        atr = self.atr[-1]
        safe = atr if atr > 0 else math.inf
        plus_di = 100 * self.plus[-1] / safe
        minus_di = 100 * self.minus[-1] / safe
        di_sum = plus_di + minus_di
        self.plus_di.append(plus_di)
        self.minus_di.append(minus_di)
        self.dx.append(100 * abs(plus_di - minus_di) / (di_sum if di_sum > 0 else math.inf))
        p = self.period
        if len(self.dx) == p:
            self.adx.append(float(np.array(self.dx).mean()))
        elif len(self.dx) > p:
            acc = self.adx[-1]
            self.adx.append(acc + self.alpha * (self.dx[-1] - acc))


@dataclass(frozen=True)
class Table15:
    """Per-window 15m features of every window of one length (see ``table15``)."""

    atr: FloatArray
    adx: FloatArray
    plus_di: FloatArray
    minus_di: FloatArray
    hurst: FloatArray  # the unclipped slope; NaN where an RMS is 0
    cross: FloatArray  # autocorrelation numerator / denominator
    denom: FloatArray


def table15(
    n: int,
    b15_count: int,
    tr: FloatArray,
    pdm: FloatArray,
    mdm: FloatArray,
    log15: FloatArray,
    r15: FloatArray,
    config: FeatureConfig,
) -> Table15 | None:
    """ATR/ADX/DI, the Hurst slope and the autocorrelation of every window of ``n``
    complete 15m bars (row j0 = the window starting at 15m bar j0); see ``tables15``."""
    return tables15((n,), b15_count, tr, pdm, mdm, log15, r15, config).get(n)


def tables15(
    lengths: tuple[int, ...],
    b15_count: int,
    tr: FloatArray,
    pdm: FloatArray,
    mdm: FloatArray,
    log15: FloatArray,
    r15: FloatArray,
    config: FeatureConfig,
) -> dict[int, Table15]:
    """``table15`` of each of ``lengths`` that can be tabulated (too short a length, or
    more bars than the series holds: left out).

    Each row is computed with the operations ``features._adx``, ``_hurst`` and
    ``_autocorr_15m`` apply to that window, element-wise across rows: the Wilder
    recursions step all windows at once (once for all lengths: a window's values after
    ``n - 1`` true ranges do not depend on how long it goes on), and every sum / mean is
    numpy's reduction of a row of a sliding-window view (the same pairwise summation as on
    the 1-D slice).
    """
    p = config.period
    count = b15_count
    ns = sorted(
        n
        for n in set(lengths)
        if count - n + 1 > 0 and n >= max(2 * p + 1, config.hurst_min_bars, 17)
    )
    if not ns:
        return {}
    wilder = _wilder_tables(ns, count, tr, pdm, mdm, p)
    return {n: Table15(*wilder[n], *_hurst_autocorr(n, count - n + 1, log15, r15)) for n in ns}


def _wilder_tables(
    ns: list[int], count: int, tr: FloatArray, pdm: FloatArray, mdm: FloatArray, p: int
) -> dict[int, tuple[FloatArray, FloatArray, FloatArray, FloatArray]]:
    """ATR, ADX, +DI, -DI of every window of each length in ``ns`` (ascending): one run of
    the recursions over the lanes of the shortest, read at each length's last step (the
    lanes of a longer length are the first ``count - n + 1``)."""
    swv = np.lib.stride_tricks.sliding_window_view
    alpha = 1.0 / p
    lanes = count - ns[0] + 1
    atr = swv(tr, p)[:lanes].mean(axis=1)
    plus = swv(pdm, p)[:lanes].mean(axis=1)
    minus = swv(mdm, p)[:lanes].mean(axis=1)
    dx: list[FloatArray] = []
    adx: FloatArray | None = None
    out: dict[int, tuple[FloatArray, FloatArray, FloatArray, FloatArray]] = {}
    for step in range(p, ns[-1]):  # step p - 1 is the seed; n - 1 true ranges
        if step > p:
            i = step - 1  # true range index inside each window
            live = count - step  # windows still inside the series after this step
            if live < lanes:  # past a shorter length's end: its extra lanes stop
                lanes = live
                atr, plus, minus = atr[:lanes], plus[:lanes], minus[:lanes]
                if adx is not None:
                    adx = adx[:lanes]
                dx = [d[:lanes] for d in dx]
            atr = atr + alpha * (tr[i : i + lanes] - atr)
            plus = plus + alpha * (pdm[i : i + lanes] - plus)
            minus = minus + alpha * (mdm[i : i + lanes] - minus)
        safe = np.where(atr > 0, atr, np.inf)
        plus_di = 100 * plus / safe
        minus_di = 100 * minus / safe
        di_sum = plus_di + minus_di
        dx_now = 100 * np.abs(plus_di - minus_di) / np.where(di_sum > 0, di_sum, np.inf)
        if adx is not None:
            adx = adx + alpha * (dx_now - adx)
        else:
            dx.append(dx_now)
            if len(dx) == p:
                adx = np.ascontiguousarray(np.column_stack(dx)).mean(axis=1)
        if step + 1 in ns:  # the last step of windows of step + 1 bars
            assert adx is not None
            n_lanes = count - step
            out[step + 1] = (atr[:n_lanes], adx[:n_lanes], plus_di[:n_lanes], minus_di[:n_lanes])
    return out


def _hurst_autocorr(
    n: int, lanes: int, log15: FloatArray, r15: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The Hurst slope (NaN where an RMS is 0), and the lag-1 autocorrelation's numerator
    and denominator, of every window of ``n`` 15m bars."""
    swv = np.lib.stride_tricks.sliding_window_view
    # Hurst: RMS of the lag-k log-price differences, then the log-log slope
    lags = np.arange(1, max(2, n // 4) + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rms = np.empty((lanes, lags.shape[0]), dtype=np.float64)
        for col, k in enumerate(lags.tolist()):
            sq = (log15[k:] - log15[:-k]) ** 2
            rms[:, col] = np.sqrt(swv(sq, n - k)[:lanes].sum(axis=1) / (n - k))
        x = np.log(lags.astype(np.float64))
        x_c = x - x.mean()
        y = np.log(rms)
        slope = (x_c * (y - y.mean(axis=1)[:, None])).sum(axis=1) / (x_c**2).sum()
        slope[~(rms > 0).all(axis=1)] = np.nan
        # lag-1 autocorrelation of the window's n - 1 log returns: its first n - 2 (a)
        # and last n - 2 (b), each minus its mean; b of window j is a of window j + 1
        # (the same returns, the same reductions), so one more row of a serves both
        c = swv(r15, n - 2)[: lanes + 1]
        c = c - c.mean(axis=1)[:, None]
        squares = (c**2).sum(axis=1)
        a, b = c[:-1], c[1:]
        denom = np.sqrt(squares[:-1] * squares[1:])
        cross = (a * b).sum(axis=1)
    return slope, cross, denom


def _first_reaching(
    values: FloatArray, limits: FloatArray, after: int, *, strict: bool = False
) -> IntArray:
    """For each i, the first k >= i + after with ``values[k] <= limits[i]`` (``strict``:
    ``values[k] < limits[i]``, and a NaN limit is never reached; len(values) if none): a
    binary search over a table of block minima, every i at once."""
    n = values.shape[0]
    pos = np.arange(after, limits.shape[0] + after, dtype=np.int64)
    mins = [values]  # mins[e][k] = min(values[k : k + 2**e])
    while 2 ** len(mins) <= n:
        m, half = mins[-1], 2 ** (len(mins) - 1)
        mins.append(np.minimum(m[:-half], m[half:]))
    for e in range(len(mins) - 1, -1, -1):
        step, m = 2**e, mins[e]
        fits = pos + step <= n  # the whole block [pos, pos + step) exists
        block = m[np.where(fits, pos, 0)]
        # ... and stays above the limit
        skip = fits & (~(block < limits) if strict else (block > limits))
        pos += step * skip
    return pos


def fills(b: CandleSeries) -> tuple[IntArray, IntArray]:
    """Per 3-bar gap (element i: bars i..i + 2) the first later bar trading back into it:
    a low at or below the bullish gap's bottom (``high[i]``), a high at or above the
    bearish gap's top (``low[i]``), or a NaN one (``features._fair_value_gaps``' suffix
    min / max turns NaN there, and its comparison False: filled)."""
    if len(b) < 3:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    low = np.where(np.isnan(b.low), -np.inf, b.low)
    high = np.where(np.isnan(b.high), np.inf, b.high)
    return _first_reaching(low, b.high[:-2], 3), _first_reaching(-high, -b.low[:-2], 3)


def breaks(b: CandleSeries) -> tuple[IntArray, IntArray]:
    """Per bar i, the first later bar closing below its low (a demand pivot's break) and
    above its high (a supply pivot's): ``features._zones``' ``(close[i + 1:] < low).any()``,
    NaN closes skipped and a NaN low or high never broken."""
    up = np.where(np.isnan(b.close), np.inf, b.close)
    down = np.where(np.isnan(b.close), np.inf, -b.close)
    return (
        _first_reaching(up, b.low, 1, strict=True),
        _first_reaching(down, -b.high, 1, strict=True),
    )
