"""``compute_features`` at any time of one series, from arrays computed once.

A backtest asks for the features of the same 16 series every 5 simulated minutes, each
time over the 24 h window ending then. :class:`FeatureSeries` holds what does not depend
on the window (the 15m and 5m roll-ups, true ranges, directional moves, log prices,
swing pivots, running counts of gaps and bad prices), computed once over
the whole series with numpy, and :meth:`FeatureSeries.at` reads the window by index and
finishes only what depends on it. No look-ahead: nothing after ``now_ms`` is read, and
every quantity that spans "the rest of the window" (broken zones, filled gaps) is
computed on the window itself.

The result is the very ``SymbolFeatures`` that ``compute_features`` returns for the same
window, bit for bit: the same float operations in the same order, the same numpy
reductions over the same elements (``tests/unit/test_feature_series.py`` compares every
field on real and synthetic data). What changes is what is not repeated: roll-ups,
element-wise arrays, and the Wilder recursions of ATR/ADX, which only ever extend while
the window's first 15m bar stays the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from prometheus_trader.domain.feature_tables import Table15, Wilder, breaks, fills, tables15
from prometheus_trader.domain.features import (
    _MAX_RATIO,
    FairValueGap,
    FeatureConfig,
    SymbolFeatures,
    Zone,
    _bar_shape,
    _btc,
    _change,
    _distance_pct,
    _fin,
    _hurst,
    _in_gap,
    _latest_funding,
    _liquidations,
    _nearest,
    _oi_change,
    _volume_spike,
    compute_features,
)
from prometheus_trader.domain.market import (
    MINUTE_MS,
    CandleSeries,
    DataQuality,
    FloatArray,
    FundingRate,
    OpenInterest,
)
from prometheus_trader.domain.trusted import trusted

__all__ = ["REGIME_FIELDS", "FeatureSeries"]

_B15_SPAN_MS = 14 * MINUTE_MS  # a complete 15m bar's last 1m bar opens 14 minutes in
_B5_SPAN_MS = 4 * MINUTE_MS


_sum = np.add.reduce  # ndarray.sum / mean / std without their Python wrappers: same loops


def _mean(x: FloatArray) -> np.float64:
    """``x.mean()`` of a non-empty 1-D float array: numpy's sum, then ÷ n."""
    return _sum(x) / x.shape[0]  # type: ignore[no-any-return]


def _deviation_sigma(closes: FloatArray) -> float | None:
    """``features._deviation_sigma``: ``closes.std()`` is numpy's ``_var`` (sum, ÷ n,
    squared deviations, sum, ÷ n) and a square root, spelled out."""
    n = closes.shape[0]
    if n < 15:
        return None
    mean = _sum(closes) / n
    dev = closes - mean
    std = float(np.sqrt(_sum(dev * dev) / n))
    if std <= 0:
        return None
    return _fin((closes[-1] - mean) / std)


_Imbalances = tuple[float | None, float | None, float | None, bool]
# SymbolFeatures' defaults in field order (the required fields: placeholders)
_DEFAULTS: dict[str, object] = {
    name: None if info.is_required() else info.default
    for name, info in SymbolFeatures.model_fields.items()
}
_RANKING_SET = {
    "symbol",
    "as_of_ms",
    "bars",
    "last_bar_ts_ms",
    "data_quality",
    "quality_reason",
    "last_price",
    "change_1m_pct",
    "change_5m_pct",
    "imbalance_1m",
    "imbalance_5m",
    "imbalance_15m",
    "imbalance_estimated",
    "liq_cluster_ratio",
}

REGIME_FIELDS = ("adx", "plus_di", "minus_di", "hurst", "autocorr_15m", "mean_reversion")
"""The fields ``FeatureSeries.regime_at`` computes: the 15m regime."""
_REGIME_SET = {
    "symbol",
    "as_of_ms",
    "bars",
    "last_bar_ts_ms",
    "data_quality",
    "quality_reason",
    *REGIME_FIELDS,
}


BoolArray = npt.NDArray[np.bool_]
_TailBlock = tuple[BoolArray, tuple[list[tuple[FloatArray, FloatArray]], ...]]
_TAIL_BLOCK = 1024  # window ends whose imbalance sums are computed at once
_windows = np.lib.stride_tricks.sliding_window_view


def _buy_sell(tail: CandleSeries, taker: bool) -> tuple[FloatArray, FloatArray]:
    """Buy and sell volume per bar, as ``features._imbalances`` splits them (element-wise:
    a longer series' elements are the tail's)."""
    if taker:
        buy = np.clip(tail.taker_buy_volume, 0.0, tail.volume)
    else:  # the estimate from the close location, as features._imbalances makes it
        rng = tail.high - tail.low
        location = np.where(rng > 0, (tail.close - tail.low) / np.where(rng > 0, rng, 1.0), 0.5)
        buy = tail.volume * np.clip(location, 0.0, 1.0)
    return buy, tail.volume - buy


def _features(**values: object) -> SymbolFeatures:
    """``SymbolFeatures(**values)`` for values of the field types, given in field order."""
    return trusted(SymbolFeatures, values)


@dataclass(frozen=True)
class _Pivots:
    """Unbroken swing pivots of a 15m window (window indices), newest ``max_zones``."""

    avg_volume: float
    alive_low: list[int]
    alive_high: list[int]
    last_high: float | None
    last_low: float | None
    body_bottom: FloatArray
    body_top: FloatArray
    # the zones built so far, by pivot and price-dependent bound (its bits): the other
    # values (and the touches, given that bound) are the window's, the same every time
    zones: dict[tuple[str, int, str], Zone] = field(default_factory=dict)


@dataclass
class _Part15:
    """The features of one window's complete 15m bars (ATR before dividing by price);
    the gaps and pivots only once ``at`` asks (``regime_at`` reads the rest alone)."""

    atr: float | None
    adx: float | None
    plus_di: float | None
    minus_di: float | None
    hurst: float | None
    autocorr: float | None
    j0: int
    j1: int
    structure: tuple[list[FairValueGap], _Pivots | None] | None = None


class FeatureSeries:
    """``compute_features`` of one 1m series (strictly increasing times) at any time."""

    def __init__(self, series_1m: CandleSeries, config: FeatureConfig | None = None) -> None:
        if series_1m.timeframe != "1m":
            raise ValueError(f"FeatureSeries needs 1m bars, got {series_1m.timeframe}")
        ts = series_1m.ts_ms
        if len(series_1m) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
            raise ValueError("FeatureSeries needs strictly increasing bar times")
        self.config = cfg = config or FeatureConfig()
        self.series = s = series_1m
        self.symbol = s.symbol
        steps = np.diff(ts)
        # running counts: gaps / missing bars between bars, bad closes, bad 15m closes
        # (int32: counts of bars; kept per 1m bar of every series, so their size matters)
        self._gaps = np.r_[0, np.cumsum(steps != MINUTE_MS)].astype(np.int32)
        missing = np.r_[0, np.cumsum(np.maximum(steps // MINUTE_MS - 1, 0))]
        self._missing = missing.astype(np.int32) if missing[-1] < 2**31 else missing
        self._bad_close = np.r_[0, np.cumsum(~np.isfinite(s.close))].astype(np.int32)
        self._positive_close = bool((s.close > 0).all())
        # 1m log returns (element i: bars i and i + 1): a window's np.diff(np.log(close))
        # is their slice, element for element (``_btc`` reads them only if all are > 0)
        self._r1 = np.diff(np.log(s.close)) if self._positive_close else np.empty(0)
        # the bars' typical prices, element-wise as ``features._value_area`` makes them
        self._typical = (s.high + s.low + s.close) / 3
        self.b5 = s.resample("5m")
        self.b15 = b15 = s.resample("15m")
        # 15m element-wise arrays (index i: bars i and i + 1), as features._adx builds them
        prev_close = b15.close[:-1]
        high, low = b15.high[1:], b15.low[1:]
        self._tr = np.maximum(
            np.maximum(high - low, np.abs(high - prev_close)), np.abs(low - prev_close)
        )
        up = b15.high[1:] - b15.high[:-1]
        down = b15.low[:-1] - b15.low[1:]
        self._pdm = np.where((up > down) & (up > 0), up, 0.0)
        self._mdm = np.where((down > up) & (down > 0), down, 0.0)
        self._b15_nonpos = np.r_[0, np.cumsum(b15.close <= 0)]
        with np.errstate(divide="ignore", invalid="ignore"):
            self._log15 = np.log(b15.close)
        self._r15 = np.diff(self._log15)
        k = cfg.swing_k
        self._pivot_high = np.zeros(len(b15), dtype=bool)
        self._pivot_low = np.zeros(len(b15), dtype=bool)
        if len(b15) >= 2 * k + 1:
            wh = np.lib.stride_tricks.sliding_window_view(b15.high, 2 * k + 1)
            wl = np.lib.stride_tricks.sliding_window_view(b15.low, 2 * k + 1)
            self._pivot_high[k : len(b15) - k] = wh.argmax(axis=1) == k
            self._pivot_low[k : len(b15) - k] = wl.argmin(axis=1) == k
        self._break_low, self._break_high = breaks(b15)
        self._body_top = np.maximum(b15.open, b15.close)
        self._body_bottom = np.minimum(b15.open, b15.close)
        # features._fair_value_gaps: each gap's size by its third bar, and the gap objects
        # (a gap is the same object at every window that keeps it)
        self._gap_sizes = {
            b.timeframe: (b.low[2:] - b.high[:-2], b.low[:-2] - b.high[2:]) for b in (self.b5, b15)
        }
        # and the bar that fills each gap (``feature_tables.fills``): a gap is unfilled in
        # a window iff that bar is not inside it
        self._gap_fills = {b.timeframe: fills(b) for b in (self.b5, b15)}
        # (kind, bar) -> the gap, per timeframe; gaps before a window are dropped now and
        # then (windows move forward; an older window would build them again, equal)
        self._gap_objects: dict[str, dict[tuple[str, int], FairValueGap]] = {
            b.timeframe: {} for b in (self.b5, b15)
        }
        # BTC's side of the correlation at one window, shared by every symbol's ranking
        self._imbalances_kept: tuple[int, int, _Imbalances] = (-1, -1, (None, None, None, False))
        self._no_bars = s.rows(0, 0)
        # regime_bars' window, for the regime_at that follows it
        self._regime_kept: tuple[int, int | None, int, int, tuple[int, int]] | None = None
        self._tail_block: tuple[int, _TailBlock] | None = None
        self._centered: tuple[int, int, FloatArray, FloatArray] | None = None
        self._wilder: dict[int, Wilder] = {}
        self._parts: dict[tuple[int, int], _Part15] = {}
        # a full window (window_bars 1m bars) holds one of two numbers of complete 15m
        # bars (the ends fall inside a 15m bar or not): those lengths are tabulated
        full = cfg.window_bars // 15
        arrays = (self._tr, self._pdm, self._mdm, self._log15, self._r15)
        self._tables = tables15((full - 1, full), len(b15), *arrays, cfg)

    # ------------------------------------------------------------------ window
    def bounds(self, now_ms: int, since_ms: int | None = None) -> tuple[int, int]:
        """Row range of the window ``compute_features`` would see at ``now_ms`` (bars
        closed by then, opened at or after ``since_ms``, the newest ``window_bars``)."""
        ts = self.series.ts_ms
        hi = int(ts.searchsorted(now_ms - MINUTE_MS, side="right"))
        lo = 0 if since_ms is None else int(ts.searchsorted(since_ms, side="left"))
        return max(lo, hi - self.config.window_bars), hi

    def window(self, now_ms: int, since_ms: int | None = None) -> CandleSeries:
        """The window itself (what ``compute_features`` would be given)."""
        lo, hi = self.bounds(now_ms, since_ms)
        return self.series.rows(lo, max(lo, hi))

    def at(
        self,
        now_ms: int,
        *,
        since_ms: int | None = None,
        btc: FeatureSeries | None = None,
        funding: Sequence[FundingRate] = (),
        open_interest: Sequence[OpenInterest] = (),
        mark_price: float | None = None,
    ) -> SymbolFeatures:
        """``compute_features(window, btc_1m=btc window, ...)`` for the bars of this series
        closed by ``now_ms`` and opened at or after ``since_ms`` (BTC's window likewise)."""
        cfg = self.config
        lo, hi = self.bounds(now_ms, since_ms)
        n = hi - lo
        if n <= 0:
            btc_window = None if btc is None else btc.window(now_ms, since_ms)
            return compute_features(
                self.series.rows(0, 0),
                btc_1m=btc_window,
                funding=funding,
                open_interest=open_interest,
                now_ms=now_ms,
                mark_price=mark_price,
                config=cfg,
            )
        s = self.series
        bars = s.rows(lo, hi)
        ts = s.ts_ms
        quality, reason = self._quality(lo, hi, now_ms)
        close = bars.close
        price = float(close[-1])
        # complete 15m / 5m bars inside the window: a slice of the series' own roll-ups
        first_ts, last_ts = int(ts[lo]), int(ts[hi - 1])
        j0, j1 = self._bounds15(first_ts, last_ts)
        b15 = self.b15.rows(j0, j1)
        f0 = int(self.b5.ts_ms.searchsorted(first_ts, side="left"))
        f1 = max(f0, int(self.b5.ts_ms.searchsorted(last_ts - _B5_SPAN_MS, side="right")))
        b5 = self.b5.rows(f0, f1)
        part = self._part15(j0, j1)
        atr_pct = None if part.atr is None or price <= 0 else _fin(part.atr / price * 100)
        autocorr = part.autocorr
        # the tail's own sums: ``at`` runs for few windows (the backtest's ranking reads
        # the rest from domain/ranking_grid.py), a block of 1,024 window ends would be waste
        imb1, imb5, imb15, estimated = self._imbalances(lo, hi, blocks=False)
        close_pos, upper, lower = _bar_shape(b5)
        tolerance_pct = max(cfg.zone_tolerance_atr * (atr_pct or 0.0), 0.02)
        gaps15, pivots = self._structure15(part, b15)
        zones, bos = self._zones(pivots, b15, price)
        demand = _nearest(zones, "demand", price)
        supply = _nearest(zones, "supply", price)
        demand_dist = _distance_pct(demand, price)
        supply_dist = _distance_pct(supply, price)
        gaps: list[FairValueGap] = self._fvgs(self.b5, f0, f1) + gaps15
        poc, vah, val = self._value_area(lo, hi, bars)
        liq = _liquidations(bars, open_interest, now_ms, price, cfg)
        btc_corr, btc_change = self._btc(lo, hi, bars, btc, now_ms, since_ms)
        # every value below already has its field's type (floats are float, liq's sums
        # of no level are int 0, hence float()): the validated model, without validating
        return _features(
            symbol=s.symbol,
            as_of_ms=int(now_ms),
            bars=n,
            last_bar_ts_ms=last_ts,
            data_quality=quality,
            quality_reason=reason,
            last_price=_fin(price),
            change_1m_pct=_change(close, 1),
            change_5m_pct=_change(close, 5),
            change_15m_pct=_change(close, 15),
            change_1h_pct=_change(close, 60),
            volume_spike=_volume_spike(bars.volume),
            oi_change_15m_pct=_oi_change(open_interest, now_ms),
            funding_rate=_latest_funding(funding, now_ms),
            basis_pct=None if mark_price is None else _fin((mark_price - price) / price * 100),
            atr_pct=atr_pct,
            adx=part.adx,
            plus_di=part.plus_di,
            minus_di=part.minus_di,
            hurst=part.hurst,
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
            liq_long_notional=None if liq[0] is None else float(liq[0]),
            liq_short_notional=None if liq[1] is None else float(liq[1]),
            liq_imbalance=liq[2],
            liq_cluster_price=liq[3],
            liq_cluster_ratio=liq[4],
            btc_correlation=btc_corr,
            btc_change_15m_pct=btc_change,
        )

    def ranking_at(
        self,
        now_ms: int,
        *,
        since_ms: int | None = None,
        open_interest: Sequence[OpenInterest] = (),
    ) -> SymbolFeatures:
        """``at`` with only the fields the ranking scores by (``ranking.RANKING_FIELDS``,
        and the quality reason and last price), each equal to ``at``'s; every other field
        keeps its default. Cheap: the backtest ranks every symbol with these and computes
        the full features only for the symbols it then analyses."""
        lo, hi = self.bounds(now_ms, since_ms)
        if hi <= lo:
            return self.at(now_ms, since_ms=since_ms, open_interest=open_interest)
        quality, reason = self._quality(lo, hi, now_ms)
        close = self.series.close[lo:hi]
        price = float(close[-1])
        imb1, imb5, imb15, estimated = self._imbalances(lo, hi)
        # fewer than two points: _liquidations returns before reading the bars
        bars = self.series.rows(lo, hi) if len(open_interest) >= 2 else self._no_bars
        liq = _liquidations(bars, open_interest, now_ms, price, self.config)
        # SymbolFeatures(**these) without validating: the defaults in field order, these
        # set (all of the field types, as in ``at``), a fresh list for each list default
        values = {
            **_DEFAULTS,
            "symbol": self.symbol,
            "as_of_ms": int(now_ms),
            "bars": hi - lo,
            "last_bar_ts_ms": int(self.series.ts_ms[hi - 1]),
            "data_quality": quality,
            "quality_reason": reason,
            "last_price": _fin(price),
            "change_1m_pct": _change(close, 1),
            "change_5m_pct": _change(close, 5),
            "imbalance_1m": imb1,
            "imbalance_5m": imb5,
            "imbalance_15m": imb15,
            "imbalance_estimated": estimated,
            "liq_cluster_ratio": liq[4],
            "zones": [],
            "fair_value_gaps": [],
        }
        return trusted(SymbolFeatures, values, _RANKING_SET.copy())

    def regime_bars(self, now_ms: int, *, since_ms: int | None = None) -> tuple[int, int] | None:
        """The complete 15m bars (the roll-up's rows j0..j1) that ``regime_at``'s fields
        are computed from alone: equal bars, equal regime fields. None: no window."""
        lo, hi = self.bounds(now_ms, since_ms)
        if hi <= lo:
            return None
        ts = self.series.ts_ms
        bars = self._bounds15(int(ts[lo]), int(ts[hi - 1]))
        self._regime_kept = (now_ms, since_ms, lo, hi, bars)  # regime_at asks next
        return bars

    def regime_at(self, now_ms: int, *, since_ms: int | None = None) -> SymbolFeatures:
        """``at`` with only the 15m regime fields (``REGIME_FIELDS``: ADX, +DI, -DI, Hurst,
        autocorrelation, mean reversion), each equal to ``at``'s; every other field keeps
        its default. Cheap (the 15m part is kept per window): the backtest asks it first
        and skips a symbol whose regime alone rules out a signal (``regime_vetoes``)."""
        kept = self._regime_kept
        if kept is not None and kept[0] == now_ms and kept[1] == since_ms:
            lo, hi, bars = kept[2], kept[3], kept[4]
        else:
            lo, hi = self.bounds(now_ms, since_ms)
            if hi <= lo:
                return self.at(now_ms, since_ms=since_ms)
            bars = self._bounds15(int(self.series.ts_ms[lo]), int(self.series.ts_ms[hi - 1]))
        ts = self.series.ts_ms
        part = self._part15(*bars)
        autocorr = part.autocorr
        quality, reason = self._quality(lo, hi, now_ms)
        values = {
            **_DEFAULTS,
            "symbol": self.symbol,
            "as_of_ms": int(now_ms),
            "bars": hi - lo,
            "last_bar_ts_ms": int(ts[hi - 1]),
            "data_quality": quality,
            "quality_reason": reason,
            "adx": part.adx,
            "plus_di": part.plus_di,
            "minus_di": part.minus_di,
            "hurst": part.hurst,
            "autocorr_15m": autocorr,
            "mean_reversion": None if autocorr is None else min(1.0, max(0.0, (1 - autocorr) / 2)),
            "zones": [],
            "fair_value_gaps": [],
        }
        return trusted(SymbolFeatures, values, _REGIME_SET.copy())

    def keep_imbalances(self, lo: int, hi: int, imbalances: _Imbalances) -> None:
        """Take ``_imbalances(lo, hi)`` computed elsewhere (the backtest's ranking grid,
        equal: tests/unit/test_ranking_grid.py), for the ``at`` on that window next."""
        self._imbalances_kept = (lo, hi, imbalances)

    # ------------------------------------------------------------------ pieces
    def _bounds15(self, first_ts: int, last_ts: int) -> tuple[int, int]:
        """The complete 15m bars (j0..j1 of the series' roll-up) of a window's 1m bars."""
        t15 = self.b15.ts_ms
        j0 = int(t15.searchsorted(first_ts, side="left"))
        return j0, max(j0, int(t15.searchsorted(last_ts - _B15_SPAN_MS, side="right")))

    def _imbalances(self, lo: int, hi: int, *, blocks: bool = True) -> _Imbalances:
        """``features._imbalances`` of the window lo..hi from the series' buy/sell arrays
        (kept for the last window: ``ranking_at`` and then ``at`` ask for the same);
        ``blocks``: a full tail's sums read from a block of window ends (equal)."""
        kept = self._imbalances_kept
        if kept[0] == lo and kept[1] == hi:
            return kept[2]
        if blocks and hi - lo >= 15:  # a full tail: its sums from the block of window ends
            taker, sums = self._tail_sums(hi)
        else:
            tail = self.series.rows(max(lo, hi - 15), hi)  # the window's last bars
            taker = tail.has_taker_volume
            buy, sell = _buy_sell(tail, taker)
            n = buy.shape[0]
            sums = [
                None if n < k else (float(_sum(buy[n - k :])), float(_sum(sell[n - k :])))
                for k in (1, 5, 15)
            ]
        out: list[float | None] = []
        for pair in sums:
            if pair is None:
                out.append(None)
                continue
            b, s = pair
            if b + s <= 0:
                out.append(None)
            elif s <= 0:
                out.append(_MAX_RATIO)
            else:
                out.append(_fin(min(_MAX_RATIO, max(1 / _MAX_RATIO, b / s))))
        result = (out[0], out[1], out[2], not taker)
        self._imbalances_kept = (lo, hi, result)
        return result

    def _tail_sums(self, hi: int) -> tuple[bool, list[tuple[float, float] | None]]:
        """Whether the 15 bars before ``hi`` all carry taker volume, and the buy and sell
        sums of the last 1, 5 and 15 of them as ``features._imbalances`` adds them.

        Computed for a block of window ends at once: each sum is numpy's reduction of a
        row of a ``sliding_window_view``, the same pairwise loop as on the 1-D slice
        (``tests/unit/test_feature_series.py`` compares them), and each element is the
        element-wise value the tail's own arrays hold. The block of the newest window is
        kept (windows move forward; an older one is computed again, equal)."""
        b = (hi - 15) // _TAIL_BLOCK
        block = self._tail_block
        if block is None or block[0] != b:
            block = self._tail_block = (b, self._tail_block_sums(b))
        i = hi - 15 - b * _TAIL_BLOCK
        taker, rows = block[1]
        tk = not bool(taker[i])
        return tk, [(float(x[0][i]), float(x[1][i])) for x in rows[0 if tk else 1]]

    def _tail_block_sums(self, b: int) -> _TailBlock:
        """The sums of ``_tail_sums`` for the window ends 15 + b × block ... (both ways:
        from taker volume and estimated), and where a tail misses taker volume."""
        s = self.series
        r0 = b * _TAIL_BLOCK
        r1 = min(len(s), r0 + _TAIL_BLOCK + 14)
        part = s.rows(r0, r1)
        missing = np.r_[0, np.cumsum(np.isnan(part.taker_buy_volume))]
        no_taker = (missing[15:] - missing[:-15]) > 0
        out = []
        for taker in (True, False):
            buy, sell = _buy_sell(part, taker)
            rows = []
            for k in (1, 5, 15):
                rows.append(
                    (
                        _sum(_windows(buy[15 - k :], k), axis=1),
                        _sum(_windows(sell[15 - k :], k), axis=1),
                    )
                )
            out.append(rows)
        return no_taker, (out[0], out[1])

    def _fvgs(self, b: CandleSeries, lo: int, hi: int) -> list[FairValueGap]:
        """``features._fair_value_gaps(b.rows(lo, hi))`` (b: the series' 5m or 15m bars)."""
        if hi - lo < 3:
            return []
        cfg = self.config
        min_size = float(b.close[hi - 1]) * cfg.min_gap_pct / 100
        bull_size, bear_size = self._gap_sizes[b.timeframe]
        bull_fill, bear_fill = self._gap_fills[b.timeframe]
        # window indices (from 2) of the gaps wide enough and not filled inside the window
        bull = ((bull_size[lo : hi - 2] > min_size) & (bull_fill[lo : hi - 2] >= hi)).nonzero()[0]
        bear = ((bear_size[lo : hi - 2] > min_size) & (bear_fill[lo : hi - 2] >= hi)).nonzero()[0]
        bull += 2
        bear += 2
        gaps: list[FairValueGap] = []
        kept = self._gap_objects[b.timeframe]
        if len(kept) > 256:
            kept = self._gap_objects[b.timeframe] = {k: g for k, g in kept.items() if k[1] >= lo}
        for kind, found in (("bullish", bull), ("bearish", bear)):
            for i in found[-cfg.max_gaps :].tolist():
                key = (kind, lo + i)
                gap = kept.get(key)
                if gap is None:
                    j = lo + i
                    edges = (
                        (b.high[j - 2], b.low[j])
                        if kind == "bullish"
                        else (b.high[j], b.low[j - 2])
                    )
                    gap = kept[key] = trusted(
                        FairValueGap,
                        {
                            "timeframe": b.timeframe,
                            "kind": kind,
                            "low": float(edges[0]),
                            "high": float(edges[1]),
                            "ts_ms": int(b.ts_ms[j]),
                        },
                    )
                gaps.append(gap)
        return gaps

    def _quality(self, lo: int, hi: int, now_ms: int) -> tuple[DataQuality, str]:
        """``features._quality`` from the running counts."""
        cfg, n = self.config, hi - lo
        if n < cfg.min_bars:
            return DataQuality.MISSING, f"{n} closed 1m bars, need {cfg.min_bars}"
        age_ms = now_ms - (int(self.series.ts_ms[hi - 1]) + MINUTE_MS)
        if age_ms > cfg.stale_after_ms:
            return DataQuality.STALE, f"last bar closed {age_ms / 1000:.0f}s before now"
        if int(self._gaps[hi - 1] - self._gaps[lo]):
            missing = int(self._missing[hi - 1] - self._missing[lo])
            return DataQuality.GAPPED, f"{missing} missing 1m bars inside the window"
        if int(self._bad_close[hi] - self._bad_close[lo]):
            return DataQuality.GAPPED, "non-finite prices inside the window"
        return DataQuality.OK, ""

    def _part15(self, j0: int, j1: int) -> _Part15:
        """Everything that depends on the window's 15m bars only (j0..j1), computed once
        per pair: two rankings in three see the same complete 15m bars."""
        key = (j0, j1)
        part = self._parts.get(key)
        if part is not None:
            return part
        table = self._tables.get(j1 - j0)
        if table is not None and j0 < table.atr.shape[0]:
            part = self._from_table(table, j0, j1)
        else:
            part = self._computed15(j0, j1, self.b15.rows(j0, j1))
        if len(self._parts) > 8:
            self._parts.clear()
        self._parts[key] = part
        return part

    def _from_table(self, t: Table15, j0: int, j1: int) -> _Part15:
        """The 15m features of a full-length window, read from the series' tables."""
        cfg = self.config
        positive = not int(self._b15_nonpos[j1] - self._b15_nonpos[j0])
        hurst = None
        if positive:
            slope = float(t.hurst[j0])
            if math.isnan(slope):  # a zero RMS somewhere: as features._hurst does
                hurst = _hurst(self.b15.rows(j0, j1), cfg.hurst_min_bars)
            else:
                hurst = _fin(min(1.0, max(0.0, slope)))
        autocorr = None
        if positive:
            denom = float(t.denom[j0])
            if denom != 0:
                autocorr = _fin(float(t.cross[j0]) / denom)
        return _Part15(
            atr=float(t.atr[j0]),
            adx=_fin(t.adx[j0]),
            plus_di=_fin(t.plus_di[j0]),
            minus_di=_fin(t.minus_di[j0]),
            hurst=hurst,
            autocorr=autocorr,
            j0=j0,
            j1=j1,
        )

    def _computed15(self, j0: int, j1: int, b15: CandleSeries) -> _Part15:
        """The 15m features of any other window (short, or missing 15m bars)."""
        cfg = self.config
        n, p = j1 - j0, cfg.period
        atr = adx = plus_di = minus_di = None
        if n >= p + 1:
            w = self._wilder.get(j0)
            if w is None:
                # windows only move forward in a backtest: older starts are not asked again
                self._wilder = {j: v for j, v in self._wilder.items() if j > j0 - 4}
                w = self._wilder[j0] = Wilder(p)
            # true range i of the window is element j0 + i of the series' (bars i, i + 1)
            w.extend(self._tr[j0 : j1 - 1], self._pdm[j0 : j1 - 1], self._mdm[j0 : j1 - 1])
            k = n - 1 - p  # index of the last Wilder value
            atr = w.atr[k]
            if n >= 2 * p + 1:
                adx, plus_di, minus_di = (
                    _fin(w.adx[k - p + 1]),
                    _fin(w.plus_di[k]),
                    _fin(w.minus_di[k]),
                )
        return _Part15(
            atr=atr,
            adx=adx,
            plus_di=plus_di,
            minus_di=minus_di,
            hurst=self._hurst(j0, j1),
            autocorr=self._autocorr(j0, j1),
            j0=j0,
            j1=j1,
        )

    def _structure15(
        self, part: _Part15, b15: CandleSeries
    ) -> tuple[list[FairValueGap], _Pivots | None]:
        """The 15m fair-value gaps and unbroken pivots of the part's window (b15: its bars),
        computed on first use and kept with the part."""
        if part.structure is None:
            j0, j1 = part.j0, part.j1
            part.structure = (self._fvgs(self.b15, j0, j1), self._pivots(j0, j1, b15))
        return part.structure

    def _hurst(self, j0: int, j1: int) -> float | None:
        """``features._hurst`` of the 15m bars j0..j1: the log closes sliced from the
        series' (element-wise), each lag's ``np.mean`` spelled as its sum ÷ n."""
        n = j1 - j0
        if n < self.config.hurst_min_bars or int(self._b15_nonpos[j1] - self._b15_nonpos[j0]):
            return None
        logp = self._log15[j0:j1]
        lags = np.arange(1, max(2, n // 4) + 1)
        rms = np.array(
            [math.sqrt(float(_sum((logp[k:] - logp[:-k]) ** 2) / (n - k))) for k in lags.tolist()]
        )
        keep = rms > 0
        if int(keep.sum()) < 2:
            return None
        x, y = np.log(lags[keep].astype(np.float64)), np.log(rms[keep])
        x_c = x - x.mean()
        slope = float((x_c * (y - y.mean())).sum() / (x_c**2).sum())
        return _fin(min(1.0, max(0.0, slope)))

    def _autocorr(self, j0: int, j1: int) -> float | None:
        """``features._autocorr_15m`` (log returns sliced from the series')."""
        if j1 - j0 < 17 or int(self._b15_nonpos[j1] - self._b15_nonpos[j0]):
            return None
        r = self._r15[j0 : j1 - 1]
        a, b = r[:-1] - r[:-1].mean(), r[1:] - r[1:].mean()
        denom = math.sqrt(float((a**2).sum() * (b**2).sum()))
        if denom == 0:
            return None
        return _fin(float((a * b).sum()) / denom)

    def _pivots(self, j0: int, j1: int, b15: CandleSeries) -> _Pivots | None:
        """The price-independent half of ``features._zones``: unbroken swing pivots."""
        k, n = self.config.swing_k, j1 - j0
        if n < 2 * k + 1:
            return None
        high, low = b15.high, b15.low
        pivot_high = self._pivot_high[j0 + k : j1 - k].nonzero()[0] + k
        pivot_low = self._pivot_low[j0 + k : j1 - k].nonzero()[0] + k
        # unbroken: no close inside the window beyond the pivot (its break at or after j1)
        m = self.config.max_zones
        alive_low = pivot_low[self._break_low[pivot_low + j0] >= j1][-m:]
        alive_high = pivot_high[self._break_high[pivot_high + j0] >= j1][-m:]
        return _Pivots(
            avg_volume=float(b15.volume.mean()) or 1.0,
            alive_low=alive_low.tolist(),
            alive_high=alive_high.tolist(),
            last_high=float(high[pivot_high[-1]]) if pivot_high.size else None,
            last_low=float(low[pivot_low[-1]]) if pivot_low.size else None,
            body_bottom=self._body_bottom[j0:j1],
            body_top=self._body_top[j0:j1],
        )

    def _zones(
        self, piv: _Pivots | None, b15: CandleSeries, price: float
    ) -> tuple[list[Zone], int]:
        """``features._zones``: the kept zones of the unbroken pivots at this price."""
        if piv is None:
            return [], 0
        k = self.config.swing_k
        high, low = b15.high, b15.low
        min_width = price * 0.0002
        zones: list[Zone] = []
        kept = piv.zones
        for i in piv.alive_low:
            z_low = float(low[i])
            z_high = max(float(piv.body_bottom[i]), z_low + min_width)
            key = ("demand", i, z_high.hex())
            zone = kept.get(key)
            if zone is None:
                zone = kept[key] = trusted(
                    Zone,
                    {
                        "kind": "demand",
                        "low": z_low,
                        "high": z_high,
                        "ts_ms": int(b15.ts_ms[i]),
                        "volume_ratio": float(b15.volume[i]) / piv.avg_volume,
                        "touches": int((low[i + k + 1 :] <= z_high).sum()),
                    },
                )
            zones.append(zone)
        for i in piv.alive_high:
            z_high = float(high[i])
            z_low = min(float(piv.body_top[i]), z_high - min_width)
            key = ("supply", i, z_low.hex())
            zone = kept.get(key)
            if zone is None:
                zone = kept[key] = trusted(
                    Zone,
                    {
                        "kind": "supply",
                        "low": z_low,
                        "high": z_high,
                        "ts_ms": int(b15.ts_ms[i]),
                        "volume_ratio": float(b15.volume[i]) / piv.avg_volume,
                        "touches": int((high[i + k + 1 :] >= z_low).sum()),
                    },
                )
            zones.append(zone)
        bos = 0
        if piv.last_high is not None and price > piv.last_high:
            bos = 1
        elif piv.last_low is not None and price < piv.last_low:
            bos = -1
        return zones, bos

    def _value_area(
        self, lo: int, hi: int, bars: CandleSeries
    ) -> tuple[float | None, float | None, float | None]:
        """``features._value_area`` (the profile's bins read as a list)."""
        cfg = self.config
        low, high = float(np.minimum.reduce(bars.low)), float(np.maximum.reduce(bars.high))
        total = float(_sum(bars.volume))
        if not (math.isfinite(low) and math.isfinite(high)) or total <= 0:
            return None, None, None
        if high <= low:
            return low, high, low
        nb = cfg.profile_bins
        width = (high - low) / nb
        # element-wise on the window's bars (``at`` runs for few windows now: the regime
        # veto skips most, so a per-series array would only hold memory)
        typical = self._typical[lo:hi]
        idx = ((typical - low) / width).astype(np.int64)  # np.clip(idx, 0, nb - 1):
        np.minimum(np.maximum(idx, 0, out=idx), nb - 1, out=idx)
        counts = np.bincount(idx, weights=bars.volume, minlength=nb)
        poc_i = int(counts.argmax())
        profile = counts.tolist()
        left, right, acc = poc_i, poc_i, profile[poc_i]
        target = cfg.value_area_share * total
        while acc < target and (left > 0 or right < nb - 1):
            below = profile[left - 1] if left > 0 else -1.0
            above = profile[right + 1] if right < nb - 1 else -1.0
            if above >= below:
                right += 1
                acc += above
            else:
                left -= 1
                acc += below
        return low + (poc_i + 0.5) * width, low + (right + 1) * width, low + left * width

    def _btc(
        self,
        lo: int,
        hi: int,
        bars: CandleSeries,
        btc: FeatureSeries | None,
        now_ms: int,
        since_ms: int | None,
    ) -> tuple[float | None, float | None]:
        """``features._btc``; the common window read by index when both are gap-free."""
        cfg = self.config
        if btc is None:
            return None, None
        blo, bhi = btc.bounds(now_ms, since_ms)
        if bhi <= blo:
            return None, None
        ts, bts = self.series.ts_ms, btc.series.ts_ms
        same = (
            hi - lo == bhi - blo
            and ts[lo] == bts[blo]
            and ts[hi - 1] == bts[bhi - 1]
            and not int(self._gaps[hi - 1] - self._gaps[lo])
            and not int(btc._gaps[bhi - 1] - btc._gaps[blo])
        )
        if not same:
            return _btc(bars, btc.series.rows(blo, bhi), now_ms, cfg)
        btc_change = _change(btc.series.close[blo:bhi], 15)
        if hi - lo < 2:
            return None, btc_change
        if not (self._positive_close and btc._positive_close):
            return _btc(bars, btc.series.rows(blo, bhi), now_ms, cfg)
        # np.diff(np.log(close)) of a window is a slice of the series' log returns
        if hi - lo - 1 < cfg.min_corr_returns:
            return None, btc_change
        ra = self._r1[lo : hi - 1]  # np.diff(np.log(close[lo:hi])): all closes are positive
        ra = ra - _mean(ra)
        rb, rb_squares = btc._centered_returns(blo, bhi)
        denom = math.sqrt(float(_sum(ra * ra) * rb_squares))  # ra**2 is ra * ra
        if denom == 0:
            return None, btc_change
        return _fin(max(-1.0, min(1.0, float(_sum(ra * rb)) / denom))), btc_change

    def _centered_returns(self, lo: int, hi: int) -> tuple[FloatArray, FloatArray]:
        """The window's 1m log returns minus their mean, and their sum of squares (kept
        for the last window: every symbol of a ranking correlates with the same BTC)."""
        kept = self._centered
        if kept is None or kept[0] != lo or kept[1] != hi:
            r = self._r1[lo : hi - 1]  # np.diff(np.log(close[lo:hi])): all closes are > 0
            r = r - _mean(r)
            kept = self._centered = (lo, hi, r, _sum(r * r))
        return kept[2], kept[3]
