"""The exit monitor's rolling trade window (``TradeWindow``): recent trades of one symbol
in typed column arrays with running sums, answering the exit rules' questions (order-flow
ratios, last price, price range, adverse moves) in O(log n). The rules are in exits.py."""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, compress
from operator import and_, mul, ne, not_, or_
from typing import Any

import numpy as np

from prometheus_trader.domain.market import Side, Trade
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.ticks import F64, TickBatch

SECOND_MS = 1_000
MINUTE_MS = 60_000
HORIZON_MS = 15 * MINUTE_MS
_COMPACT_MIN = 4096  # compact storage once this many pruned rows sit at the front
_CACHE_MAX = 64  # query times remembered between two changes of a window
_VECTOR_MIN = 24  # batches this large go through numpy; smaller ones through lists
_SEEN_ROWS = 4096  # duplicate ids are looked for among this many newest rows


class TradeWindow:
    """Rolling window (default 15 min) of one symbol's trades, fed in time order.

    Columns live in ``array`` buffers (typed, contiguous): the live rows are
    ``[head, len)``; pruning advances ``head`` and the dead front is cut off once it is at
    least half the buffer (amortised O(1) per trade), so the buffers slide like a ring.
    Volumes are prefix sums, so any ``(now − w, now]`` volume is two binary searches.
    Distinct price changes are kept separately so counting adverse moves is O(moves).
    A ``trade_id`` already among the newest 4,096 rows is ignored (websocket + REST
    overlap, a reconnect's replay; the stream keeps as many ids per symbol, and its batches
    come ``checked``: not looked at again); a trade older than the newest one is kept at
    the newest time (the window is ordered).
    Queries are valid for ``now_ms`` not older than the last :meth:`prune` time.
    :meth:`add_batch` takes a batch as numpy columns (``TickBatch``, no ``Trade`` object
    per tick): the stream's path; :meth:`add_columns` and :meth:`add` are the same on
    lists and on ``Trade`` objects.
    """

    def __init__(self, symbol: str | None = None, horizon_ms: int = HORIZON_MS) -> None:
        self.symbol = symbol
        self.horizon_ms = horizon_ms
        self._head = 0
        self._ts = array("q")
        self._price = array("d")
        self._ids: list[str] = []
        self._cum_buy = array("d")  # real taker buy volume up to and including row i
        self._cum_sell = array("d")
        self._cum_real = array("q")  # count of real (source "trade") trades
        self._base_buy = 0.0  # cumulative values just before the head row
        self._base_sell = 0.0
        self._base_real = 0
        self._base_price: float | None = None  # last price of a pruned row
        self._seen: set[str] = set()  # ids of the rows from _seen_lo on
        self._seen_lo = 0
        # rows from checked batches (the stream already dropped repeats) are appended
        # without recording ids; they are read back from the rows if an unchecked batch
        # ever comes (the monitor feeds a window from one source)
        self._seen_stale = False
        # the last appended batch's prices (first row, numpy column): the price range
        # since the previous cycle is usually exactly those rows
        self._tail: tuple[int, F64] | None = None
        self._tick_head = 0
        self._tick_ts = array("q")
        self._tick_price = array("d")
        # row index by query time: the positions on one symbol ask the same times
        self._idx_cache: dict[int, int] = {}
        # answers shared by the positions on one symbol (flow ratios, price ranges,
        # adverse moves), keyed by query; cleared whenever the window changes
        self._memo: dict[tuple[object, ...], Any] = {}

    def __len__(self) -> int:
        return len(self._ts) - self._head

    def add(self, trades: Iterable[Trade]) -> int:
        """Append trades (oldest first); returns how many were new."""
        batch: list[Trade] = []
        for t in trades:
            if self.symbol is None:
                self.symbol = t.symbol
            elif t.symbol != self.symbol:
                # what came before the stranger is kept, as one trade at a time would
                self._add_trades(batch)
                raise ValueError(f"trade for {t.symbol} fed to the {self.symbol} window")
            batch.append(t)
        return self._add_trades(batch)

    def _add_trades(self, trades: list[Trade]) -> int:
        return self.add_columns(
            [t.ts_ms for t in trades],
            [t.price for t in trades],
            [t.amount for t in trades],
            [t.side is Side.BUY for t in trades],
            [t.trade_id for t in trades],
            [t.source == "trade" for t in trades],
        )

    def add_columns(
        self,
        ts_ms: Sequence[int],
        price: Sequence[float],
        amount: Sequence[float],
        is_buy: Sequence[bool],
        trade_ids: Sequence[str],
        real: Sequence[bool] | None = None,
    ) -> int:
        """Append a batch given as columns (oldest first; ``real`` defaults to all real
        taker trades); returns how many were new. Same result as :meth:`add`."""
        if len(trade_ids) >= _VECTOR_MIN:
            batch = TickBatch.of(self.symbol or "", ts_ms, price, amount, is_buy, trade_ids, real)
            return self.add_batch(batch)
        keep = self._fresh(trade_ids)
        if keep is not None:
            if not keep:
                return 0
            ts_ms = [ts_ms[i] for i in keep]
            price = [price[i] for i in keep]
            amount = [amount[i] for i in keep]
            is_buy = [is_buy[i] for i in keep]
            trade_ids = [trade_ids[i] for i in keep]
            real = None if real is None else [real[i] for i in keep]
        self._append_lists(ts_ms, price, amount, is_buy, trade_ids, real)
        return len(trade_ids)

    def add_batch(self, batch: TickBatch) -> int:
        """Append one symbol's batch of columns (oldest first); returns how many were new.

        Vectorised: a handful of numpy steps per batch, whatever its size (a small
        batch goes through plain lists, cheaper below ``_VECTOR_MIN`` rows). Either way
        the numbers are the ones trade-at-a-time appends give: prefix sums are
        accumulated in the same order, from the same starting value.
        """
        trade_ids = batch.trade_ids
        if not trade_ids:
            return 0
        if batch.symbol:
            if self.symbol is None:
                self.symbol = batch.symbol
            elif batch.symbol != self.symbol:
                raise ValueError(f"trades of {batch.symbol} fed to the {self.symbol} window")
        if batch.checked:
            if not self._seen_stale:
                self._seen_stale = True
                self._seen.clear()
        else:
            keep = self._fresh(trade_ids)
            if keep is not None:
                if not keep:
                    return 0
                batch = batch.take(keep)
                trade_ids = batch.trade_ids
        n = len(trade_ids)
        real = batch.real
        if n < _VECTOR_MIN:
            self._append_lists(
                batch.ts_ms.tolist(),
                batch.price.tolist(),
                batch.amount.tolist(),
                batch.is_buy.tolist(),
                trade_ids,
                None if real is None else real.tolist(),
            )
            return n
        price = batch.price
        live = len(self._ts) > self._head
        # the window is ordered: a late trade is kept at the newest time
        ordered = np.maximum.accumulate(batch.ts_ms)
        if self._ts and ordered[0] < self._ts[-1]:
            np.maximum(ordered, self._ts[-1], out=ordered)
        is_buy = batch.is_buy
        prev_real = self._cum_real[-1] if live else self._base_real
        # amount × True is the amount exactly, × False is 0.0 (and amount − that is the
        # other side's, exactly); the first add starts from the previous sum, so every
        # partial sum is the one a running loop computes
        amount = batch.amount
        if real is None:
            buys = amount * is_buy
            sold = amount - buys
            reals = np.arange(prev_real + 1, prev_real + n + 1, dtype=np.int64)
        else:
            # a bar trade's side is a guess: neither buy nor sell volume
            buys = amount * (is_buy & real)
            sold = amount * (~is_buy & real)
            reals = np.cumsum(real, dtype=np.int64)
            reals += prev_real
        buys[0] += self._cum_buy[-1] if live else self._base_buy
        sold[0] += self._cum_sell[-1] if live else self._base_sell
        self._tail = (len(self._ts), price)
        self._ts.frombytes(ordered.tobytes())
        self._price.frombytes(price.tobytes())
        self._ids.extend(trade_ids)
        self._cum_buy.frombytes(buys.cumsum().tobytes())
        self._cum_sell.frombytes(sold.cumsum().tobytes())
        self._cum_real.frombytes(reals.tobytes())
        # distinct price changes (equal successive prices are one tick)
        changed = np.empty(n, dtype=np.bool_)
        changed[0] = not self._tick_price or price[0] != self._tick_price[-1]
        np.not_equal(price[1:], price[:-1], out=changed[1:])
        self._tick_ts.frombytes(ordered[changed].tobytes())
        self._tick_price.frombytes(price[changed].tobytes())
        self._appended()
        return n

    def _fresh(self, trade_ids: Sequence[str]) -> list[int] | None:
        """Record the batch's ids as seen; None if all are new, else the rows to keep
        (the first of each id not seen before, as one trade at a time would)."""
        if self._seen_stale:  # rows came from checked batches: their ids, as recorded
            self._seen_stale = False
            self._seen_lo = max(self._head, len(self._ids) - _SEEN_ROWS)
            self._seen = set(self._ids[self._seen_lo :])
        seen = self._seen
        before = len(seen)
        if seen.isdisjoint(trade_ids):
            seen.update(trade_ids)
            if len(seen) - before == len(trade_ids):
                return None
            seen.difference_update(trade_ids)  # repeats inside the batch: one at a time
        keep: list[int] = []
        for i, tid in enumerate(trade_ids):
            if tid not in seen:
                seen.add(tid)
                keep.append(i)
        return keep

    def _append_lists(
        self,
        ts_ms: Sequence[int],
        price: Sequence[float],
        amount: Sequence[float],
        is_buy: Sequence[bool],
        trade_ids: Sequence[str],
        real: Sequence[bool] | None,
    ) -> None:
        """The list form of :meth:`add_batch`'s numpy steps (same numbers), for small
        batches where C-level iterators beat numpy's per-call cost."""
        n = len(trade_ids)
        price = list(price)
        live = len(self._ts) > self._head
        prev_buy = self._cum_buy[-1] if live else self._base_buy
        prev_sell = self._cum_sell[-1] if live else self._base_sell
        prev_real = self._cum_real[-1] if live else self._base_real
        if self._ts:
            stamps = accumulate(ts_ms, max, initial=self._ts[-1])
            next(stamps)
        else:
            stamps = accumulate(ts_ms, max)
        ordered = list(stamps)
        if real is None:
            sides: Sequence[bool] = is_buy
            reals: Iterable[int] = range(prev_real + 1, prev_real + n + 1)
        else:
            sides = list(map(and_, is_buy, real))
            is_buy = list(map(or_, is_buy, map(not_, real)))  # "not a real sell"
            cum_real = accumulate(map(int, real), initial=prev_real)
            next(cum_real)
            reals = cum_real
        cum_buy = accumulate(map(mul, amount, sides), initial=prev_buy)
        next(cum_buy)
        cum_sell = accumulate(map(mul, amount, map(not_, is_buy)), initial=prev_sell)
        next(cum_sell)
        self._tail = None
        self._ts.fromlist(ordered)
        self._price.fromlist(price)
        self._ids.extend(trade_ids)
        self._cum_buy.fromlist(list(cum_buy))
        self._cum_sell.fromlist(list(cum_sell))
        self._cum_real.fromlist(list(reals))
        last = self._tick_price[-1] if self._tick_price else None
        changed = list(map(ne, chain((last,), price), price))
        self._tick_ts.fromlist(list(compress(ordered, changed)))
        self._tick_price.fromlist(list(compress(price, changed)))
        self._appended()

    def _changed(self) -> None:
        """Forget the remembered query answers (the window changed)."""
        self._idx_cache.clear()
        self._memo.clear()

    def _appended(self) -> None:
        """After an append: forget the ids of rows older than the newest ``_SEEN_ROWS``
        (a small set of recent ids is several times cheaper to check than the window's)
        and the remembered query answers."""
        lo = len(self._ids) - _SEEN_ROWS
        if lo > self._seen_lo and not self._seen_stale:
            self._seen.difference_update(self._ids[self._seen_lo : lo])
            self._seen_lo = lo
        self._changed()

    def prune(self, now_ms: int) -> None:
        """Forget trades at or before ``now_ms − horizon``."""
        cutoff = now_ms - self.horizon_ms
        self._changed()
        new_head = bisect_right(self._ts, cutoff, self._head)
        if new_head > self._head:
            if new_head > self._seen_lo and not self._seen_stale:
                self._seen.difference_update(self._ids[self._seen_lo : new_head])
                self._seen_lo = new_head
            last = new_head - 1
            self._base_buy = self._cum_buy[last]
            self._base_sell = self._cum_sell[last]
            self._base_real = self._cum_real[last]
            self._base_price = self._price[last]
            self._head = new_head
        # keep the newest tick even if old: it is the reference for the next move
        tick_head = bisect_right(self._tick_ts, cutoff, self._tick_head)
        self._tick_head = min(tick_head, max(0, len(self._tick_ts) - 1))
        self._compact()

    def _compact(self) -> None:
        if self._head >= _COMPACT_MIN and self._head * 2 >= len(self._ts):
            h = self._head
            # rebase the prefix sums so they stay window-sized (float precision)
            base_buy, base_sell, base_real = self._base_buy, self._base_sell, self._base_real
            self._cum_buy = _rebased(self._cum_buy, h, base_buy)
            self._cum_sell = _rebased(self._cum_sell, h, base_sell)
            self._cum_real = _rebased(self._cum_real, h, base_real)
            self._base_buy, self._base_sell, self._base_real = 0.0, 0.0, 0
            del self._ts[:h]
            del self._price[:h]
            self._tail = None
            del self._ids[:h]
            self._head = 0
            self._seen_lo -= h
        if self._tick_head >= _COMPACT_MIN and self._tick_head * 2 >= len(self._tick_ts):
            del self._tick_ts[: self._tick_head]
            del self._tick_price[: self._tick_head]
            self._tick_head = 0

    def _index(self, t_ms: int) -> int:
        """Number of rows (absolute index) with ts <= t_ms."""
        cache = self._idx_cache
        idx = cache.get(t_ms)
        if idx is None:
            if len(cache) >= _CACHE_MAX:  # many query times and no change in between
                cache.clear()
            ts, head = self._ts, self._head
            # "now" is usually at or after the newest trade, "now − horizon" before the
            # oldest kept one (pruned at that now): no search for either
            if ts and t_ms >= ts[-1]:
                idx = len(ts)
            elif head < len(ts) and t_ms < ts[head]:
                idx = head
            else:
                idx = bisect_right(ts, t_ms, head)
            cache[t_ms] = idx
        return idx

    def _cum(self, idx: int) -> tuple[float, float, int]:
        if idx <= self._head:
            return self._base_buy, self._base_sell, self._base_real
        return self._cum_buy[idx - 1], self._cum_sell[idx - 1], self._cum_real[idx - 1]

    def buy_sell_volume(self, window_ms: int, now_ms: int) -> tuple[float, float]:
        """Real taker (buy, sell) volume in ``(now − window, now]``; bar trades excluded."""
        b1, s1, _ = self._cum(self._index(now_ms))
        b0, s0, _ = self._cum(self._index(now_ms - window_ms))
        return max(0.0, b1 - b0), max(0.0, s1 - s0)

    def real_trade_count(self, window_ms: int, now_ms: int) -> int:
        """Number of real (``source == "trade"``) trades in ``(now − window, now]``."""
        return self._cum(self._index(now_ms))[2] - self._cum(self._index(now_ms - window_ms))[2]

    def flow_ratio(self, window_ms: int, now_ms: int) -> float | None:
        """Buy ÷ sell volume (inf if no sells); None without real volume."""
        buy, sell = self.buy_sell_volume(window_ms, now_ms)
        if sell > 0:
            return buy / sell
        return math.inf if buy > 0 else None

    def flow_ratios(
        self, live_ms: int, now_ms: int
    ) -> tuple[int, float | None, float | None, float | None]:
        """(real trades in the last ``live_ms``, 1m, 5m and 15m flow ratios; the ratios
        are None without a live trade). Remembered until the window changes: every
        position on the symbol asks the same at the same time."""
        key = ("flow", live_ms, now_ms)
        hit: tuple[int, float | None, float | None, float | None] | None = self._memo.get(key)
        if hit is None:
            # the same numbers as real_trade_count and flow_ratio, one lookup per time
            cum, index = self._cum, self._index
            b1, s1, n1 = cum(index(now_ms))
            live = n1 - cum(index(now_ms - live_ms))[2]
            if live == 0:
                hit = (0, None, None, None)
            else:
                ratios: list[float | None] = []
                for window_ms in (MINUTE_MS, 5 * MINUTE_MS, 15 * MINUTE_MS):
                    b0, s0, _ = cum(index(now_ms - window_ms))
                    buy, sell = max(0.0, b1 - b0), max(0.0, s1 - s0)
                    ratios.append(buy / sell if sell > 0 else math.inf if buy > 0 else None)
                hit = (live, ratios[0], ratios[1], ratios[2])
            self._remember(key, hit)
        return hit

    def _remember(self, key: tuple[object, ...], value: object) -> None:
        if len(self._memo) >= 4 * _CACHE_MAX:  # many queries and no change in between
            self._memo.clear()
        self._memo[key] = value

    def last_price(self, now_ms: int) -> float | None:
        """Price of the last trade at or before ``now_ms`` (None if never any)."""
        idx = self._index(now_ms)
        if idx > self._head:
            return self._price[idx - 1]
        return self._base_price

    def price_range(self, since_ms: int, now_ms: int) -> tuple[float, float] | None:
        """(low, high) of trade prices in ``(since, now]``, or None if none."""
        lo, hi = self._index(since_ms), self._index(now_ms)
        if hi <= lo:
            return None
        key = ("range", lo, hi)
        hit: tuple[float, float] | None = self._memo.get(key)
        if hit is None:
            tail = self._tail
            if tail is not None and lo >= tail[0] and hi <= tail[0] + len(tail[1]):
                seg = tail[1][lo - tail[0] : hi - tail[0]]
                hit = (float(np.minimum.reduce(seg)), float(np.maximum.reduce(seg)))
            elif hi - lo < _VECTOR_MIN:
                prices = self._price[lo:hi]
                hit = (min(prices), max(prices))
            else:  # a view on the buffer, dropped before the buffer can grow again
                view = np.frombuffer(self._price, dtype=np.float64)[lo:hi]
                hit = (float(view.min()), float(view.max()))
                del view
            self._remember(key, hit)
        return hit

    def adverse_moves(self, direction: Direction, now_ms: int, since_ms: int) -> int:
        """Consecutive latest distinct-price moves against ``direction`` ending in (since, now]."""
        key = ("adverse", direction, now_ms, since_ms)
        hit: int | None = self._memo.get(key)
        if hit is not None:
            return hit
        sign = direction.sign
        i = bisect_right(self._tick_ts, now_ms, self._tick_head) - 1
        count = 0
        while i - 1 >= self._tick_head and self._tick_ts[i] > since_ms:
            move = self._tick_price[i] - self._tick_price[i - 1]
            if move * sign >= 0:
                break
            count += 1
            i -= 1
        self._remember(key, count)
        return count


def _rebased(values: array[Any], start: int, base: float) -> array[Any]:
    """``values[start:] - base`` as a new typed array (one vectorised step)."""
    tail = np.frombuffer(values, dtype=np.float64 if values.typecode == "d" else np.int64)
    out = array(values.typecode)
    out.frombytes((tail[start:] - base).tobytes())
    del tail  # release the buffer export before the caller replaces the array
    return out
