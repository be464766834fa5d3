"""Coarse-resolution runs (a store of only 3m/5m/15m/1h candles): features keep their time
spans in bars of that timeframe, the replay exchange derives its price path from those bars,
the run picks the timeframe the store holds. The 1m path is unchanged (docs/data.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _analysis_fixtures import T0, random_walk, series

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_data import BAR_PATH_OFFSETS_MS, bar_path_offsets
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.app.run_window import DataRangeError, data_window, replay_timeframe
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.features import compute_features
from prometheus_trader.domain.market import (
    MINUTE_MS,
    Candle,
    CandleSeries,
    DataQuality,
    MarketType,
)

pytestmark = pytest.mark.unit

FIVE = 5 * MINUTE_MS


def _features(s: CandleSeries, now_ms: int, btc: CandleSeries | None = None):  # type: ignore[no-untyped-def]
    return compute_features(s, btc_1m=btc, funding=[], open_interest=[], now_ms=now_ms)


def _pair(n: int, seed: int, symbol: str) -> tuple[CandleSeries, CandleSeries]:
    closes = random_walk(n, seed=seed, drift=0.0002, vol=0.001)
    rng = np.random.default_rng(seed + 100)
    volume = rng.uniform(5, 15, n)
    one = series(closes, symbol=symbol, volume=volume, taker_buy=volume * rng.uniform(0.2, 0.8, n))
    return one, one.resample("5m")


def test_5m_features_keep_their_time_spans() -> None:
    one, five = _pair(12 * 60, seed=7, symbol="ETH/USDT:USDT")  # 12 h
    btc_one, btc_five = _pair(12 * 60, seed=8, symbol="BTC/USDT:USDT")
    now = int(one.ts_ms[-1]) + MINUTE_MS
    a = _features(one, now, btc_one)
    b = _features(five, now, btc_five)
    assert b.data_quality is DataQuality.OK and b.bars == len(five) == a.bars // 5
    # whole 5m/15m/1h spans: the same closes, the same volumes, the same 15m bars
    for name in (
        "last_price",
        "change_5m_pct",
        "change_15m_pct",
        "change_1h_pct",
        "volume_spike",
        "imbalance_5m",
        "imbalance_15m",
        "atr_pct",
        "adx",
        "plus_di",
        "minus_di",
        "hurst",
        "autocorr_15m",
        "btc_change_15m_pct",
        "close_position_5m",
    ):
        va, vb = getattr(a, name), getattr(b, name)
        assert va is not None and vb == pytest.approx(va, rel=1e-9), name
    # volumes summed in another order: equal to the last bits
    assert [z.model_dump(exclude={"volume_ratio"}) for z in b.zones] == [
        z.model_dump(exclude={"volume_ratio"}) for z in a.zones
    ]
    assert [z.volume_ratio for z in b.zones] == pytest.approx([z.volume_ratio for z in a.zones])
    assert b.fair_value_gaps == a.fair_value_gaps
    # shorter than one bar: unknown, never made up
    assert b.change_1m_pct is None and b.imbalance_1m is None
    assert b.btc_correlation is not None  # over 5m returns (24 h / 5m bars needed: 12+)


def test_5m_quality_counts_in_5m_bars() -> None:
    _, five = _pair(6 * 60, seed=3, symbol="ETH/USDT:USDT")
    close = int(five.ts_ms[-1]) + FIVE
    assert _features(five, close + 9 * MINUTE_MS).data_quality is DataQuality.OK
    stale = _features(five, close + 11 * MINUTE_MS)
    assert stale.data_quality is DataQuality.STALE
    keep = np.r_[0 : len(five) - 3, len(five) - 2 : len(five)]  # one 5m bar missing
    gapped = CandleSeries(five.symbol, "5m", *(getattr(five, c)[keep] for c in _COLUMNS))
    g = _features(gapped, close)
    assert g.data_quality is DataQuality.GAPPED
    assert g.quality_reason == "1 missing 5m bars inside the window"
    short = _features(five.rows(0, 11), int(five.ts_ms[10]) + FIVE)
    assert short.data_quality is DataQuality.MISSING  # an hour of bars is 12 at 5m
    assert short.quality_reason == "11 closed 5m bars, need 12"


def test_features_refuse_bars_coarser_than_an_hour() -> None:
    _, five = _pair(8 * 60, seed=4, symbol="ETH/USDT:USDT")
    four_h = five.resample("4h")
    with pytest.raises(ValueError, match=r"1m\.\.1h"):
        _features(four_h, int(four_h.ts_ms[-1]) + 240 * MINUTE_MS)


def test_the_1m_price_path_keeps_its_offsets() -> None:
    assert bar_path_offsets(MINUTE_MS) == BAR_PATH_OFFSETS_MS
    assert bar_path_offsets(FIVE) == (0, 100_000, 200_000, 299_000)


def _candles(symbol: str, tf: str, step: int, bars: list[tuple[float, float, float, float]]):  # type: ignore[no-untyped-def]
    return [
        Candle(
            exchange="binance",
            market_type=MarketType.PERP,
            symbol=symbol,
            timeframe=tf,
            ts_ms=T0 + i * step,
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=8.0,
        )
        for i, (o, h, lo, c) in enumerate(bars)
    ]


BARS_5M = [(100.0, 101.0, 99.0, 100.5), (100.5, 100.8, 98.5, 99.0), (99.0, 99.5, 98.0, 99.2)]


def test_a_5m_replay_walks_each_bar_and_shows_it_at_its_close(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path / "store")
    store.write_candles(_candles("BTC/USDT:USDT", "5m", FIVE, BARS_5M))
    clock = _clock(T0)
    ex = ReplayExchange(store, clock, bar_timeframe="5m")
    clock.set_ms(T0 + FIVE - 1)
    assert ex.poll_trades(["BTC/USDT:USDT"], T0 - 1) == []  # the bar is still open
    clock.set_ms(T0 + FIVE)
    path = ex.poll_trades(["BTC/USDT:USDT"], T0 - 1)
    assert [(t.ts_ms - T0, t.price) for t in path] == [
        (0, 100.0),
        (100_000, 99.0),  # bullish bar: open → low → high → close
        (200_000, 101.0),
        (299_000, 100.5),
    ]
    assert all(t.source == "bar" and t.amount == 2.0 for t in path)
    clock.set_ms(T0 + 3 * FIVE)
    assert ex.fetch_ohlcv("BTC/USDT:USDT", "1m", T0) == []  # finer than recorded: none
    assert [c.close for c in ex.fetch_ohlcv("BTC/USDT:USDT", "5m", T0)] == [100.5, 99.0, 99.2]
    (bar_15m,) = ex.fetch_ohlcv("BTC/USDT:USDT", "15m", T0)
    assert (bar_15m.open, bar_15m.high, bar_15m.low, bar_15m.close) == (100.0, 101.0, 98.0, 99.2)
    (ticker,) = ex.fetch_tickers(["BTC/USDT:USDT"])
    assert ticker.ts_ms == T0 + 3 * FIVE and ticker.last == 99.2
    store.close()


def test_the_run_replays_the_finest_timeframe_every_symbol_holds(tmp_path: Path) -> None:
    store = DuckDBMarketStore(tmp_path / "store")
    store.write_candles(_candles("BTC/USDT:USDT", "5m", FIVE, BARS_5M))
    store.write_candles(_candles("ETH/USDT:USDT", "5m", FIVE, BARS_5M))
    store.write_candles(_candles("ETH/USDT:USDT", "1h", 60 * MINUTE_MS, BARS_5M))
    settings = Settings(data_dir=tmp_path / "store")
    assert replay_timeframe(store, settings) == "5m"
    assert data_window(store, settings, "5m") == (T0, T0 + 3 * FIVE)
    assert replay_timeframe(store, settings.model_copy(update={"bar_timeframe": "1h"})) == "1h"
    forced = settings.model_copy(update={"bar_timeframe": "1m"})
    with pytest.raises(DataRangeError, match="holds 5m/1h candles for binance/perp, not 1m"):
        data_window(store, forced, replay_timeframe(store, forced))
    # one symbol also with 1m: 5m is still the finest they share
    store.write_candles(_candles("BTC/USDT:USDT", "1m", MINUTE_MS, BARS_5M))
    assert replay_timeframe(store, settings) == "5m"
    store.write_candles(_candles("ETH/USDT:USDT", "1m", MINUTE_MS, BARS_5M))
    assert replay_timeframe(store, settings) == "1m"
    # nothing shared: the finest any symbol holds (1m, as before; the others sit out)
    other = DuckDBMarketStore(tmp_path / "other")
    other.write_candles(_candles("BTC/USDT:USDT", "1m", MINUTE_MS, BARS_5M))
    other.write_candles(_candles("ETH/USDT:USDT", "5m", FIVE, BARS_5M))
    assert replay_timeframe(other, settings) == "1m"
    other.close()
    spot = settings.model_copy(update={"market_type": MarketType.SPOT})
    with pytest.raises(DataRangeError, match="not binance/spot"):
        data_window(store, spot, replay_timeframe(store, spot))
    store.close()


def _clock(ms: int) -> SimulatedClock:
    from datetime import UTC, datetime

    return SimulatedClock(datetime.fromtimestamp(ms / 1000, UTC))


_COLUMNS = ("ts_ms", "open", "high", "low", "close", "volume", "taker_buy_volume")
