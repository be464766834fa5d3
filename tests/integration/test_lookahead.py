"""No look-ahead: replaying to time t, nothing stamped after t is ever visible (SPEC §9).

For several random t over the bundled sample (fixed seed), every read method of the replay
exchange, the market-store query the ranker uses and the feature computation are checked
twice: nothing returned is stamped after t (candles by close time), and the answer equals
the answer computed from a store *truncated* to t, i.e. future data changes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import prometheus_trader.sample
from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.domain.features import compute_features
from prometheus_trader.domain.market import MINUTE_MS, CandleSeries, MarketType
from prometheus_trader.ports import SeriesKey

pytestmark = pytest.mark.integration

SAMPLE_STORE = Path(prometheus_trader.sample.__file__).parent / "store"
SEED = 20250521
CHECKS = 5
BTC = "BTC/USDT:USDT"
FAR_FUTURE = 2**62
RANKER_WINDOW_MS = 6 * 60 * MINUTE_MS


@pytest.fixture(scope="module")
def full() -> Iterator[DuckDBMarketStore]:
    yield DuckDBMarketStore(SAMPLE_STORE)


def _keys(store: DuckDBMarketStore) -> list[SeriesKey]:
    return [
        k
        for k in store.series_keys()
        if k.exchange == "binance" and k.market_type is MarketType.PERP
    ]


def random_times(store: DuckDBMarketStore) -> list[int]:
    """CHECKS random instants (ms, not minute-aligned) inside the sample's common range."""
    ranges = [r for k in _keys(store) if (r := store.candle_range(k, "1m")) is not None]
    first = max(r[0] for r in ranges) + 2 * 60 * MINUTE_MS
    last = min(r[1] for r in ranges) + MINUTE_MS
    rng = random.Random(SEED)
    return sorted(rng.randrange(first, last) for _ in range(CHECKS))


def truncated_copy(full: DuckDBMarketStore, t: int, root: Path) -> DuckDBMarketStore:
    """A new store holding only what was known at t: bars closed by t, funding up to t."""
    store = DuckDBMarketStore(root)
    keys = _keys(full)
    for key, s in full.candles_many(keys, "1m", 0, t).items():
        if len(s) == 0:
            continue
        n = len(s)
        store.write_arrow(
            "candles",
            pa.table(
                {
                    "exchange": [key.exchange] * n,
                    "market_type": [key.market_type.value] * n,
                    "symbol": [key.symbol] * n,
                    "timeframe": ["1m"] * n,
                    "ts_ms": s.ts_ms,
                    "open": s.open,
                    "high": s.high,
                    "low": s.low,
                    "close": s.close,
                    "volume": s.volume,
                    "taker_buy_volume": pa.array(s.taker_buy_volume, from_pandas=True),
                }
            ),
        )
        store.write_funding(full.funding(key, 0, t))
        store.write_open_interest(full.open_interest(key, 0, t))
        store.write_trades(full.trades(key, 0, t))
    return store


def exchange_at(store: DuckDBMarketStore, t: int) -> ReplayExchange:
    return ReplayExchange(store, SimulatedClock(datetime.fromtimestamp(t / 1000, UTC)))


def read_everything(ex: ReplayExchange, symbols: list[str], t: int) -> dict[str, list[object]]:
    """Every read method of the exchange, as of its clock."""
    out: dict[str, list[object]] = {
        "markets": list(ex.load_markets()),
        "tickers": list(ex.fetch_tickers()),
        "poll": list(ex.poll_trades(symbols, t - 15 * MINUTE_MS)),
    }
    for s in symbols:
        out[f"1m {s}"] = list(ex.fetch_ohlcv(s, "1m", limit=300))
        out[f"1m since {s}"] = list(ex.fetch_ohlcv(s, "1m", since_ms=t - 120 * MINUTE_MS))
        out[f"5m {s}"] = list(ex.fetch_ohlcv(s, "5m", limit=100))
        out[f"1h {s}"] = list(ex.fetch_ohlcv(s, "1h", limit=24))
        out[f"trades {s}"] = list(ex.fetch_trades(s, t - 30 * MINUTE_MS))
        out[f"funding {s}"] = [ex.fetch_funding_rate(s)]
        out[f"oi {s}"] = [ex.fetch_open_interest(s)]
    return out


def stamp(item: object) -> int | None:
    """The time an item is known: a candle's close, anything else's ``ts_ms``."""
    close_ms = getattr(item, "close_ms", None)
    if close_ms is not None:
        return int(close_ms)
    ts = getattr(item, "ts_ms", None)
    return None if ts is None else int(ts)


def series_equal(a: CandleSeries, b: CandleSeries) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
        for f in ("ts_ms", "open", "high", "low", "close", "volume", "taker_buy_volume")
    )


def test_sample_has_enough_data(full: DuckDBMarketStore) -> None:
    assert len(_keys(full)) >= 2 and any(k.symbol == BTC for k in _keys(full))
    times = random_times(full)
    assert len(set(times)) == CHECKS and any(t % MINUTE_MS for t in times)


def test_exchange_reads_never_see_past_t(full: DuckDBMarketStore, tmp_path: Path) -> None:
    symbols = [k.symbol for k in _keys(full)]
    for t in random_times(full):
        seen = read_everything(exchange_at(full, t), symbols, t)
        stamps = [st for items in seen.values() for i in items if (st := stamp(i)) is not None]
        assert stamps and max(stamps) <= t, f"look-ahead at t={t}"
        assert seen["tickers"] and seen["poll"], "the check must see data"
        known = read_everything(
            exchange_at(truncated_copy(full, t, tmp_path / str(t)), t), symbols, t
        )
        for name, items in seen.items():
            assert items == known[name], f"{name} at t={t} depends on data after t"


def test_ranker_query_and_features_ignore_the_future(
    full: DuckDBMarketStore, tmp_path: Path
) -> None:
    keys = _keys(full)
    btc_key = next(k for k in keys if k.symbol == BTC)
    for t in random_times(full):
        cut = truncated_copy(full, t, tmp_path / str(t))
        for key in keys:
            # the ranker's query: store.candles(key, "1m", start, t)
            start = t - RANKER_WINDOW_MS
            window = full.candles(key, "1m", start, t)
            assert len(window) and int(window.ts_ms[-1]) + MINUTE_MS <= t
            assert series_equal(window, cut.candles(key, "1m", start, t))
        for key in keys:
            # features from *all* stored data (future included) equal features from what was
            # known at t: compute_features itself must not peek
            btc_all = None if key == btc_key else full.candles(btc_key, "1m", 0, FAR_FUTURE)
            btc_cut = None if key == btc_key else cut.candles(btc_key, "1m", 0, FAR_FUTURE)
            with_future = compute_features(
                full.candles(key, "1m", 0, FAR_FUTURE),
                btc_1m=btc_all,
                funding=full.funding(key, 0, FAR_FUTURE),
                open_interest=full.open_interest(key, 0, FAR_FUTURE),
                now_ms=t,
            )
            known = compute_features(
                cut.candles(key, "1m", 0, FAR_FUTURE),
                btc_1m=btc_cut,
                funding=cut.funding(key, 0, FAR_FUTURE),
                open_interest=cut.open_interest(key, 0, FAR_FUTURE),
                now_ms=t,
            )
            assert with_future.bars > 0
            assert with_future == known, f"features of {key.symbol} at t={t} use the future"
