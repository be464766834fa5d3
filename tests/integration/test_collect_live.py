"""The live collector through real ccxt against the exchange stand-ins (issue 9 item 1):
first fill, a dropped range backfilled on the next round, an unfillable range recorded,
a rerun adding nothing, 429 + Retry-After waited, ccxt's throttle spacing every request,
5m/15m/1h derived from the stored 1m bars (never fetched), and the CLI in two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from tests.standins.binance_usdm import Stand, serve_binance
from tests.standins.bybit import serve_bybit
from tests.standins.engine import Engine

from prometheus_trader.adapters.ccxt import CcxtExchange, LiveTradingRefused, RetryPolicy
from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.cloud import CloudRuntime
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.market import MINUTE_MS, MarketType
from prometheus_trader.ports import SeriesKey
from prometheus_trader.usecases.collect_live import (
    CollectLiveMarketData,
    LiveCollectConfig,
    LiveCollectReport,
)
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration
BTC, ETH, SOL = "BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"
SYMBOLS = (BTC, ETH, SOL)
WINDOW = 180  # minutes of history on the first round


def never(account: str) -> object:
    raise AssertionError("the collector uses no account")


@pytest.fixture
def engine() -> Engine:
    return Engine(keys={})


@pytest.fixture
def stand(engine: Engine) -> Iterator[Stand]:
    with serve_binance(engine) as s:
        yield s


def clock_at(ms: int) -> SimulatedClock:
    return SimulatedClock(datetime.fromtimestamp(ms / 1000, UTC))


def collector(
    exchange_id: str,
    urls: dict[str, str],
    tmp: Path,
    clock: SimulatedClock,
    *,
    rate_limit_ms: float = 1.0,
    **cfg: object,
) -> tuple[CollectLiveMarketData, DuckDBMarketStore, SqliteStateStore]:
    exchange = CcxtExchange(
        exchange_id,
        "live",
        never,  # type: ignore[arg-type]
        urls=urls,
        clock=clock,
        public_only=True,
        rate_limit=True,
        rate_limit_ms=rate_limit_ms,
        retry=RetryPolicy(attempts=4, base_s=0.05, max_wait_s=5.0),
    )
    store = DuckDBMarketStore(tmp / "market")
    state = SqliteStateStore(tmp / "state.sqlite")
    config = LiveCollectConfig(backfill_minutes=WINDOW, symbols=SYMBOLS, **cfg)  # type: ignore[arg-type]
    return CollectLiveMarketData(exchange, store, state, clock, config), store, state


def key(symbol: str, exchange: str = "binance") -> SeriesKey:
    return SeriesKey(exchange, MarketType.PERP, symbol)


def klines_since(engine: Engine, mark: int) -> list[dict[str, str]]:
    return [p for _, path, p in engine.market_requests[mark:] if path.endswith("/klines")]


def test_fill_backfill_unfillable_and_rerun(engine: Engine, stand: Stand, tmp_path: Path) -> None:
    now = engine.now_ms
    end = now - now % MINUTE_MS
    fillable = (end - 100 * MINUTE_MS, end - 90 * MINUTE_MS)  # back on the venue later
    lost = (end - 50 * MINUTE_MS, end - 47 * MINUTE_MS)  # never served again
    engine.dropped_bars[BTC] = [fillable, lost]
    clock = clock_at(now)
    run, store, state = collector("binance", stand.urls, tmp_path, clock)

    # round 1: N bars for M symbols, less the dropped ones; both holes recorded as open gaps
    first = run.run()
    assert first.failed == {}
    assert first.candles == 3 * WINDOW - 10 - 3
    assert (first.gaps_found, first.gaps_filled, first.gaps_unfillable) == (2, 0, 0)
    gaps = {g["start_ms"]: g for g in state.query(Collections.MARKET_GAPS)}
    assert {s: (g["end_ms"], g["status"], g["attempts"]) for s, g in gaps.items()} == {
        fillable[0]: (fillable[1], "open", 1),
        lost[0]: (lost[1], "open", 1),
    }
    # the stored bars are the venue's (real recorded) bars, value for value
    got = store.candles(key(ETH), "1m", end - WINDOW * MINUTE_MS, end)
    want = engine.bars(ETH, end - WINDOW * MINUTE_MS, end)
    assert np.array_equal(got.ts_ms, want.ts_ms) and np.allclose(got.close, want.close)

    # round 2, five minutes later: the venue serves the first range again
    engine.dropped_bars[BTC] = [lost]
    engine.now_ms += 5 * MINUTE_MS
    clock.set_ms(engine.now_ms)
    second = run.run()
    assert second.candles == 10 + 3 * 5
    assert (second.gaps_found, second.gaps_filled, second.gaps_unfillable) == (0, 1, 1)
    gaps = {g["start_ms"]: g for g in state.query(Collections.MARKET_GAPS)}
    assert gaps[fillable[0]]["status"] == "filled"
    assert (gaps[lost[0]]["status"], gaps[lost[0]]["attempts"]) == ("unfillable", 2)
    btc = store.candles(key(BTC), "1m", end - WINDOW * MINUTE_MS, end + 5 * MINUTE_MS)
    assert len(btc) == WINDOW + 5 - 3
    assert not np.isin(np.arange(*lost, MINUTE_MS), btc.ts_ms).any()

    # round 3 at the same instant (a rerun): nothing written, the lost range not asked again
    mark = len(engine.market_requests)
    again = run.run()
    assert again.rows == 0 and again.failed == {}
    assert (again.gaps_found, again.gaps_filled, again.gaps_unfillable) == (0, 0, 0)
    assert klines_since(engine, mark) == []  # no tail yet, the lost range not asked again
    assert len(state.query(Collections.MARKET_GAPS)) == 2

    # every ticker in one request a round (Binance's 24 h ticker without a symbol; its best
    # bid/ask, which that ticker lacks, in one more)
    tickers = [p for _, path, p in engine.market_requests if path.endswith("/ticker/24hr")]
    assert len(tickers) == 3 and all("symbol" not in p for p in tickers)
    # 5m/15m/1h come from the stored 1m bars; every klines request asked for 1m
    assert {p["interval"] for p in klines_since(engine, 0)} == {"1m"}
    for tf in ("5m", "15m", "1h"):
        derived = store.candles(key(ETH), tf, end - WINDOW * MINUTE_MS, end)
        rolled = want.resample(tf)
        assert len(derived) == len(rolled) > 0
        assert np.array_equal(derived.ts_ms, rolled.ts_ms)
        assert np.allclose(derived.high, rolled.high) and np.allclose(derived.volume, rolled.volume)
    # a bucket holding an unfillable minute has no derived bar
    hours = store.candles(key(BTC), "1h", 0, end + 5 * MINUTE_MS).ts_ms
    assert lost[0] - lost[0] % 3_600_000 not in hours
    assert fillable[0] - fillable[0] % 3_600_000 in hours


def test_stale_tail_is_a_gap_until_the_venue_serves_it(
    engine: Engine, stand: Stand, tmp_path: Path
) -> None:
    now = engine.now_ms
    end = now - now % MINUTE_MS
    engine.dropped_bars[SOL] = [(end - 10 * MINUTE_MS, end + 60 * MINUTE_MS)]  # gone quiet
    clock = clock_at(now)
    run, _, state = collector("binance", stand.urls, tmp_path, clock)
    assert run.run().gaps_found == 1
    [gap] = state.query(Collections.MARKET_GAPS)
    assert (gap["start_ms"], gap["end_ms"], gap["status"], gap["tail"]) == (
        end - 10 * MINUTE_MS,
        end,
        "open",
        True,
    )
    engine.now_ms += 3 * MINUTE_MS  # still quiet: the same gap, longer, still open
    clock.set_ms(engine.now_ms)
    run.run()
    [gap] = state.query(Collections.MARKET_GAPS)
    assert (gap["end_ms"], gap["status"], gap["attempts"]) == (end + 3 * MINUTE_MS, "open", 2)
    engine.dropped_bars[SOL] = []  # the venue serves the minutes again
    engine.now_ms += MINUTE_MS
    clock.set_ms(engine.now_ms)
    report = run.run()
    assert report.gaps_filled == 1 and report.candles == 14 + 2 * 1
    assert state.query(Collections.MARKET_GAPS)[0]["status"] == "filled"


def test_open_interest_history_funding_and_shortlist_trades(
    engine: Engine, stand: Stand, tmp_path: Path
) -> None:
    clock = clock_at(engine.now_ms)
    run, store, state = collector(
        "binance", stand.urls, tmp_path, clock, shortlist=1, trade_page=3, trade_pages=5
    )
    state.set(
        Collections.RANKINGS,
        "r1",
        {"id": "r1", "as_of_ms": engine.now_ms - 60_000, "ranked": [{"symbol": SOL}]},
    )
    report = run.run()
    assert report.failed == {}
    hist = [p for p in store.open_interest(key(ETH), 0, engine.now_ms) if p.ts_ms % 300_000 == 0]
    assert len(hist) == WINDOW // 5 + 1  # every 5m boundary of the window, both ends
    assert hist[-1].amount == pytest.approx(engine.open_interest_proxy(ETH, hist[-1].ts_ms))
    assert store.funding(key(BTC), 0, engine.now_ms)  # the day's settled rate
    # the stand-in's trades are one a bar (its aggTrades serves the bars opening 05:51 to
    # 05:59 for a start at 05:50:30), 3 a page from the last stamp: 4 requests, the last
    # one empty
    assert len(store.trades(key(SOL), 0, engine.now_ms)) == 9
    assert not store.trades(key(BTC), 0, engine.now_ms)
    agg = [p for _, path, p in engine.market_requests if path.endswith("aggTrades")]
    assert [p["symbol"] for p in agg] == ["SOLUSDT"] * 4
    assert run.run().rows == 0
    # minute by minute: each symbol asks for the next 5m point once, the symbols staggered
    # (SOL's offset is 0 minutes, BTC's and ETH's 4) instead of all in the same round
    asked: dict[str, list[int]] = {}
    for minute in range(1, 16):
        mark = len(engine.market_requests)
        engine.now_ms += MINUTE_MS
        clock.set_ms(engine.now_ms)
        run.run()
        for _, path, params in engine.market_requests[mark:]:
            if path.endswith("openInterestHist"):
                asked.setdefault(params["symbol"], []).append(minute)
            assert not path.endswith("fundingRate")  # the next settlement is 08:00
    assert asked == {"SOLUSDT": [10], "BTCUSDT": [14], "ETHUSDT": [14]}


def test_market_data_only_client_never_reaches_an_account(engine: Engine, stand: Stand) -> None:
    exchange = CcxtExchange(
        "binance",
        "live",  # live market data needs no live-trading switch: no keys are ever loaded
        never,  # type: ignore[arg-type]
        urls=stand.urls,
        public_only=True,
        rate_limit=False,
    )
    assert [i.symbol for i in exchange.load_markets()][:1] == ["ADA/USDT:USDT"]
    with pytest.raises(LiveTradingRefused):
        exchange.fetch_balance("alice")
    with pytest.raises(LiveTradingRefused):  # and without public_only, live stays refused
        CcxtExchange("binance", "live", never, urls=stand.urls)  # type: ignore[arg-type]
    assert [p for _, p in engine.requests] == ["/fapi/v1/exchangeInfo"]


@pytest.mark.parametrize("venue", ["binance", "bybit"])
def test_fetch_ohlcv_pages_past_the_venue_maximum(engine: Engine, venue: str) -> None:
    start = engine.now_ms - engine.now_ms % 86_400_000  # 2025-05-21 00:00
    engine.now_ms = start + 2 * 86_400_000  # both recorded days have closed
    serve = serve_binance if venue == "binance" else serve_bybit
    with serve(engine) as stand:  # type: ignore[operator]
        exchange = CcxtExchange(
            venue,
            "live",
            never,
            urls=stand.urls,
            public_only=True,
            rate_limit=False,  # type: ignore[arg-type]
        )
        bars = exchange.fetch_ohlcv(BTC, "1m", start, limit=2500)
    assert [c.ts_ms for c in bars] == list(range(start, start + 2500 * MINUTE_MS, MINUTE_MS))
    klines = [
        p
        for _, path, p in engine.market_requests
        if path.endswith("kline") or path.endswith("klines")
    ]
    assert len(klines) == 3  # 1000 a page (999 closed bars and room for the forming one)
    assert {int(p["limit"]) for p in klines} == {1000}


def test_429_retry_after_is_waited_and_requests_are_spaced(
    engine: Engine, stand: Stand, tmp_path: Path
) -> None:
    rate_ms = 50.0  # ccxt's own default for Binance
    engine.market_faults.retry_after_s = 1
    # markets, all tickers, all best bid/asks, then the first klines: refused once
    engine.market_faults.queue = ["", "", "", "429"]
    run, _, _ = collector(
        "binance", stand.urls, tmp_path, clock_at(engine.now_ms), rate_limit_ms=rate_ms
    )
    report = run.run()
    assert report.failed == {} and report.candles == 3 * WINDOW
    times = [t for t, _, _ in engine.market_requests]
    paths = [p for _, p, _ in engine.market_requests]
    assert paths[3] == paths[4] == "/fapi/v1/klines"  # refused, then the same call again
    assert engine.market_requests[3][2] == engine.market_requests[4][2]
    assert times[4] - times[3] >= 1.0  # Retry-After: 1
    gaps = np.diff(times)
    # ccxt's throttle: every request waits rateLimit x its weight after the previous one.
    # Arrival times at the stand-in carry the network's (and a loaded machine's) jitter:
    # one late arrival shortens the next gap by what it lengthened the one before, so the
    # check spans two gaps (a single gap once measured 21 ms for a 50 ms rate at load 5)
    span2 = np.asarray(times[2:]) - np.asarray(times[:-2])
    assert span2.min() >= 1.0 * rate_ms / 1000
    all_tickers = paths.index("/fapi/v1/ticker/24hr")  # weight 40 without a symbol
    assert gaps[all_tickers - 1] >= 0.5 * 40 * rate_ms / 1000
    # never more requests in a second than the configured rate allows
    per_second = 1000 / rate_ms
    for i, t in enumerate(times):
        assert np.searchsorted(times, t + 1.0) - i <= per_second + 2


def test_bybit_fill_gap_open_interest_history_and_rerun(engine: Engine, tmp_path: Path) -> None:
    now = engine.now_ms
    end = now - now % MINUTE_MS
    engine.dropped_bars[ETH] = [(end - 30 * MINUTE_MS, end - 20 * MINUTE_MS)]
    with serve_bybit(engine) as stand:
        run, store, state = collector("bybit", stand.urls, tmp_path, clock_at(now))
        first = run.run()
        assert first.failed == {}
        assert first.candles == 3 * WINDOW - 10 and first.tickers == 3
        assert first.gaps_found == 1
        assert [g["start_ms"] for g in state.query(Collections.MARKET_GAPS)] == [
            end - 30 * MINUTE_MS
        ]
        assert len(store.candles(key(BTC, "bybit"), "15m", 0, now)) == WINDOW // 15
        hist = store.open_interest(key(SOL, "bybit"), 0, now)
        assert [p.ts_ms % 300_000 for p in hist] == [0] * (WINDOW // 5 + 1)
        assert run.run().rows == 0


def test_cli_round_then_a_second_process_adds_nothing(
    engine: Engine, stand: Stand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prometheus-trader collect` in a child process, then a rerun in this process over
    the same deployment folder (settings from the environment, as a function reads them)."""
    endpoint = tmp_path / "urls.json"
    endpoint.write_text(json.dumps(stand.urls))
    # the venue's clock is 06:00:30; ours starts at 06:00:01 so both rounds see 06:00
    start = datetime.fromtimestamp((engine.now_ms - 29_000) / 1000, UTC).isoformat()
    env = {
        "PROMETHEUS_VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_CLOCK_START": start,
        "PROMETHEUS_COLLECTOR_BACKFILL_MINUTES": "120",
        "PROMETHEUS_COLLECTOR_RATE_LIMIT_MS": "1",
    }
    cmd = [sys.executable, "-m", "prometheus_trader", "collect", "--exchange", "binanceusdm"]
    cmd += ["--symbols", f"{BTC},{ETH}", "--endpoint", str(endpoint)]
    done = subprocess.run(
        cmd, env=os.environ | env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout.strip().splitlines()[-1])
    assert first["candles"] == 2 * 120 and first["derived"] > 0 and first["failed"] == {}

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROMETHEUS_COLLECTOR_EXCHANGE", "binance")
    monkeypatch.setenv("PROMETHEUS_COLLECTOR_SYMBOLS", json.dumps([BTC, ETH]))
    monkeypatch.setenv("PROMETHEUS_COLLECTOR_URLS", json.dumps(stand.urls))
    runtime = CloudRuntime(Settings())
    try:
        second = runtime.collect()
        assert isinstance(second, LiveCollectReport)
        assert second.rows == 0 and second.failed == {}
        stored = runtime.market.candles(key(BTC), "1m", 0, engine.now_ms)
        assert len(stored) == 120
    finally:
        runtime.close()
