"""Trades as per-symbol columns: what a tick source hands the exit monitor.

A :class:`TickBatch` is one symbol's new trades, oldest first, as numpy columns (no
object per trade), so the monitor's windows take a batch with a few vectorised steps
instead of a Python loop per tick. Any source fills it: the websocket stream straight
from ccxt's parsed dicts, or :func:`batches_from_trades` from domain ``Trade`` objects
(the replay and REST paths), with the same content either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from prometheus_trader.domain.market import Side, Trade

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class TickBatch:
    """One symbol's trades, oldest first, as columns of equal length.

    ``is_buy``: the taker bought (aggressor side). ``real``: the trade is a real taker
    trade (``source == "trade"``), not one derived from a bar; None means all real.
    ``checked``: the source already dropped the ids it saw recently (the stream remembers
    as many per symbol as a window looks among), so a window does not look again.
    """

    symbol: str
    ts_ms: I64
    price: F64
    amount: F64
    is_buy: Bools
    trade_ids: Sequence[str]
    real: Bools | None = None
    checked: bool = False

    def __len__(self) -> int:
        return len(self.trade_ids)

    @classmethod
    def of(
        cls,
        symbol: str,
        ts_ms: Sequence[int] | I64,
        price: Sequence[float] | F64,
        amount: Sequence[float] | F64,
        is_buy: Sequence[bool] | Bools,
        trade_ids: Sequence[str],
        real: Sequence[bool] | Bools | None = None,
        *,
        checked: bool = False,
    ) -> TickBatch:
        """A batch from plain sequences (converted to typed arrays)."""
        n = len(trade_ids)
        cols = (
            np.asarray(ts_ms, dtype=np.int64).reshape(n),
            np.asarray(price, dtype=np.float64).reshape(n),
            np.asarray(amount, dtype=np.float64).reshape(n),
            np.asarray(is_buy, dtype=np.bool_).reshape(n),
        )
        flags = None if real is None else np.asarray(real, dtype=np.bool_).reshape(n)
        return cls(symbol, *cols, trade_ids=trade_ids, real=flags, checked=checked)

    def take(self, rows: Sequence[int] | npt.NDArray[np.intp]) -> TickBatch:
        """The batch restricted to ``rows`` (in that order)."""
        idx = np.asarray(rows, dtype=np.intp)
        ids = self.trade_ids
        return TickBatch(
            self.symbol,
            self.ts_ms[idx],
            self.price[idx],
            self.amount[idx],
            self.is_buy[idx],
            [ids[i] for i in idx.tolist()],
            None if self.real is None else self.real[idx],
            self.checked,
        )


def batches_from_trades(trades: Iterable[Trade], *, checked: bool = False) -> dict[str, TickBatch]:
    """Domain trades grouped by symbol as columns, each symbol's in the given order
    (``checked``: the source already dropped repeated ids, see :class:`TickBatch`)."""
    cols: dict[str, tuple[list[int], list[float], list[float], list[bool], list[str], list[bool]]]
    cols = {}
    for t in trades:
        c = cols.get(t.symbol)
        if c is None:
            c = cols[t.symbol] = ([], [], [], [], [], [])
        c[0].append(t.ts_ms)
        c[1].append(t.price)
        c[2].append(t.amount)
        c[3].append(t.side is Side.BUY)
        c[4].append(t.trade_id)
        c[5].append(t.source == "trade")
    return {
        symbol: TickBatch.of(
            symbol, ts, price, amount, buy, ids, None if all(real) else real, checked=checked
        )
        for symbol, (ts, price, amount, buy, ids, real) in cols.items()
    }


def merge_batches(first: TickBatch, second: TickBatch) -> TickBatch:
    """Two batches of one symbol as one, ordered by time (stable: ``first`` wins ties)."""
    ts = np.concatenate((first.ts_ms, second.ts_ms))
    order = np.argsort(ts, kind="stable")
    real = (
        None
        if first.real is None and second.real is None
        else np.concatenate(
            (
                first.real if first.real is not None else np.ones(len(first), np.bool_),
                second.real if second.real is not None else np.ones(len(second), np.bool_),
            )
        )
    )
    both = TickBatch(
        first.symbol,
        ts,
        np.concatenate((first.price, second.price)),
        np.concatenate((first.amount, second.amount)),
        np.concatenate((first.is_buy, second.is_buy)),
        [*first.trade_ids, *second.trade_ids],
        real,
        first.checked and second.checked,
    )
    return both.take(order)


def total_ticks(batches: Mapping[str, TickBatch]) -> int:
    """Number of trades in a poll's batches."""
    return sum(len(b) for b in batches.values())


__all__ = ["TickBatch", "batches_from_trades", "merge_batches", "total_ticks"]
