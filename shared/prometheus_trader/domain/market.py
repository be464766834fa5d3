"""Market data: instruments, candles, trades, tickers, funding, open interest.

Numbers are ``float``: market data arrives as IEEE doubles from every exchange and file
format we read, strategy and risk math is in percentages, and exchange precision is
applied explicitly at the order boundary (``Instrument.round_amount``/``round_price``).
Market timestamps are integer milliseconds since the epoch, UTC (the exchanges' own unit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

MINUTE_MS = 60_000
TIMEFRAME_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}


class MarketType(StrEnum):
    """Kind of market an instrument trades on."""

    SPOT = "spot"
    PERP = "perp"


class Side(StrEnum):
    """Order side, and aggressor (taker) side of a trade."""

    BUY = "buy"
    SELL = "sell"


class Frozen(BaseModel):
    """Base for immutable value objects."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Instrument(Frozen):
    """A tradable market, with the exchange's precision and limits."""

    exchange: str
    market_type: MarketType
    symbol: str = Field(description="ccxt unified symbol, e.g. BTC/USDT:USDT for a USDT perp")
    base: str
    quote: str
    settle: str | None = None
    price_step: float = Field(gt=0)
    amount_step: float = Field(gt=0)
    min_amount: float = Field(ge=0, default=0.0)
    min_notional: float = Field(ge=0, default=0.0)
    max_leverage: float = Field(ge=1, default=1.0)
    taker_fee: float = Field(ge=0, default=0.0005)
    maker_fee: float = Field(ge=0, default=0.0002)
    active: bool = True

    def round_amount(self, amount: float) -> float:
        """Round an order amount *down* to the amount step (never exceed the plan)."""
        steps = math.floor(amount / self.amount_step + 1e-9)
        return _clean(steps * self.amount_step, self.amount_step)

    def round_price(self, price: float) -> float:
        """Round a price to the nearest price step."""
        return _clean(round(price / self.price_step) * self.price_step, self.price_step)


def _clean(value: float, step: float) -> float:
    digits = _DIGITS.get(step)
    if digits is None:  # a handful of steps per market: computed once each
        digits = (max(0, -math.floor(math.log10(step)) + 1) if step < 1 else 0) + 2
        _DIGITS[step] = digits
    return round(value, digits)


_DIGITS: dict[float, int] = {}  # price/amount step -> decimals kept by _clean


class Candle(Frozen):
    """One OHLCV bar; ``ts_ms`` is its open time. Visible only once closed."""

    exchange: str
    market_type: MarketType
    symbol: str
    timeframe: str
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None = None
    taker_buy_volume: float | None = None
    trades: int | None = None

    @property
    def close_ms(self) -> int:
        """Time at which the bar is complete."""
        return self.ts_ms + TIMEFRAME_MS[self.timeframe]


class Trade(Frozen):
    """One executed trade (tick) with the aggressor side.

    ``source`` is ``"trade"`` for recorded trades and ``"bar"`` for a price path derived
    from recorded 1m bars where no trades were recorded (open, extremes, close).
    """

    exchange: str
    market_type: MarketType
    symbol: str
    ts_ms: int
    trade_id: str
    price: float = Field(gt=0)
    amount: float = Field(ge=0)
    side: Side
    source: Literal["trade", "bar"] = "trade"


class Ticker(Frozen):
    """Top of book and 24h statistics as of ``ts_ms``."""

    exchange: str
    market_type: MarketType
    symbol: str
    ts_ms: int
    last: float
    bid: float | None = None
    ask: float | None = None
    quote_volume_24h: float | None = None
    change_24h_pct: float | None = None

    @property
    def spread_pct(self) -> float | None:
        """Bid/ask spread in percent of mid, if both sides are known."""
        if self.bid is None or self.ask is None or self.bid <= 0:
            return None
        mid = (self.bid + self.ask) / 2
        return (self.ask - self.bid) / mid * 100


class FundingRate(Frozen):
    """Funding rate (fraction per funding interval) effective at ``ts_ms``."""

    exchange: str
    market_type: MarketType
    symbol: str
    ts_ms: int
    rate: float


class OpenInterest(Frozen):
    """Open interest (in base units) at ``ts_ms``."""

    exchange: str
    market_type: MarketType
    symbol: str
    ts_ms: int
    amount: float
    value: float | None = None


class DataQuality(StrEnum):
    """Quality flag for a symbol's recent data; only ``OK`` symbols are traded."""

    OK = "ok"
    STALE = "stale"
    GAPPED = "gapped"
    MISSING = "missing"


FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class CandleSeries:
    """Columnar candles of one symbol and timeframe, oldest first (for analytics).

    ``taker_buy_volume`` is NaN where the source does not give it.
    """

    symbol: str
    timeframe: str
    ts_ms: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    taker_buy_volume: FloatArray

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def rows(self, lo: int, hi: int) -> CandleSeries:
        """Bars ``lo:hi`` (numpy views, no copy)."""
        sl = slice(lo, hi)
        return CandleSeries(
            self.symbol,
            self.timeframe,
            self.ts_ms[sl],
            self.open[sl],
            self.high[sl],
            self.low[sl],
            self.close[sl],
            self.volume[sl],
            self.taker_buy_volume[sl],
        )

    @property
    def has_taker_volume(self) -> bool:
        """True when every bar carries the taker-buy volume."""
        return len(self) > 0 and not bool(np.isnan(self.taker_buy_volume).any())

    @classmethod
    def empty(cls, symbol: str, timeframe: str) -> CandleSeries:
        """A series with no bars."""
        f = np.empty(0, dtype=np.float64)
        return cls(symbol, timeframe, np.empty(0, dtype=np.int64), f, f, f, f, f, f)

    @classmethod
    def from_candles(cls, candles: list[Candle]) -> CandleSeries:
        """Build from candle models (all of one symbol and timeframe, oldest first)."""
        if not candles:
            raise ValueError("from_candles needs at least one candle")
        nan = float("nan")
        return cls(
            symbol=candles[0].symbol,
            timeframe=candles[0].timeframe,
            ts_ms=np.array([c.ts_ms for c in candles], dtype=np.int64),
            open=np.array([c.open for c in candles], dtype=np.float64),
            high=np.array([c.high for c in candles], dtype=np.float64),
            low=np.array([c.low for c in candles], dtype=np.float64),
            close=np.array([c.close for c in candles], dtype=np.float64),
            volume=np.array([c.volume for c in candles], dtype=np.float64),
            taker_buy_volume=np.array(
                [nan if c.taker_buy_volume is None else c.taker_buy_volume for c in candles],
                dtype=np.float64,
            ),
        )

    def tail(self, n: int) -> CandleSeries:
        """The last ``n`` bars."""
        s = slice(max(0, len(self) - n), None)
        return CandleSeries(
            self.symbol,
            self.timeframe,
            self.ts_ms[s],
            self.open[s],
            self.high[s],
            self.low[s],
            self.close[s],
            self.volume[s],
            self.taker_buy_volume[s],
        )

    def resample(self, timeframe: str) -> CandleSeries:
        """Roll complete bars up into a coarser timeframe (incomplete buckets dropped)."""
        step = TIMEFRAME_MS[timeframe]
        if step % TIMEFRAME_MS[self.timeframe]:
            raise ValueError(f"cannot resample {self.timeframe} into {timeframe}")
        per_bucket = step // TIMEFRAME_MS[self.timeframe]
        if len(self) == 0:
            return CandleSeries.empty(self.symbol, timeframe)
        buckets = self.ts_ms // step
        # boundaries where the bucket changes
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        ends = np.r_[starts[1:], len(self)]
        complete = (ends - starts) == per_bucket
        if not complete.any():
            return CandleSeries.empty(self.symbol, timeframe)
        high = np.maximum.reduceat(self.high, starts)[complete]
        low = np.minimum.reduceat(self.low, starts)[complete]
        volume = np.add.reduceat(self.volume, starts)[complete]
        taker = np.add.reduceat(self.taker_buy_volume, starts)[complete]
        starts, ends = starts[complete], ends[complete]
        return CandleSeries(
            self.symbol,
            timeframe,
            buckets[starts] * step,
            self.open[starts],
            high,
            low,
            self.close[ends - 1],
            volume,
            taker,
        )
