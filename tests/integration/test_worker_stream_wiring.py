"""The deployed worker's runtime streams live trades when ``PROMETHEUS_STREAM_EXCHANGE`` is
set: ``CloudRuntime`` (the composition root of the functions and the worker) wires
``CcxtTradeStream`` (ccxt.pro against the loopback Binance USD-M or Bybit linear stream
stand-in) into the exit monitor, and a silent feed becomes one critical ``system_error``
event. A venue without a stream is refused when the worker starts.

``test_trade_stream.py`` and ``test_stream_exits.py`` prove the stream and the exits on
it; this file proves the wiring a deployment gets from its settings alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.standins.binance_ws import BinanceStreamStandIn, load_recording, wait_until
from tests.standins.bybit_ws import BybitStreamStandIn

from prometheus_trader.app.cloud import CloudRuntime
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.streaming import STREAMED_VENUES, LazyTickSource, stream_venue
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.trading import Direction, Position, TakeProfitLevel
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration

BTC = "BTC/USDT:USDT"


STANDINS: dict[str, type[BinanceStreamStandIn]] = {
    "binance": BinanceStreamStandIn,
    "bybit": BybitStreamStandIn,
}
TOPICS = {"binance": "btcusdt@trade", "bybit": "publicTrade.BTCUSDT"}  # BTC's subscription


@pytest.fixture(params=sorted(STANDINS))
def venue(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(venue: str) -> Iterator[BinanceStreamStandIn]:
    with STANDINS[venue](speed=4.0) as srv:
        yield srv


def runtime(
    tmp_path: Path, venue: str, server: BinanceStreamStandIn, **overrides: object
) -> CloudRuntime:
    first_ms = min(int(m.data["T"]) for m in load_recording())
    settings = Settings(
        backend="embedded",
        var_dir=tmp_path / "var",
        stream_exchange=venue,
        # the stand-in's websocket and the REST its client loads markets from
        stream_urls={"ws": server.ws_url, STREAMED_VENUES[venue]: server.rest_url},
        # the service clock reads the recording's time (its trades are from 2024-08-08)
        clock_start=datetime.fromtimestamp(first_ms / 1000, UTC),
        **overrides,  # type: ignore[arg-type]
    )
    return CloudRuntime(settings)


def held_btc(price: float, opened_ms: int) -> Position:
    """An open BTC position whose rules cannot fire on the recording (stop and target far)."""
    return Position(
        id="pos-stream",
        user_id="stream-user",
        signal_id="sig-stream",
        exchange="binance",
        market_type=MarketType.PERP,
        symbol=BTC,
        direction=Direction.LONG,
        amount=0.01,
        entry_price=price,
        leverage=1.0,
        stop_loss=price * 0.5,
        take_profits=[TakeProfitLevel(price=price * 1.5, pct=50.0, size_fraction=1.0)],
        trailing_stop_pct=0.0,
        best_price=price,
        worst_price=price,
        entry_order_id="entry-stream",
        opened_at=datetime.fromtimestamp(opened_ms / 1000, UTC),
        opened_ms=opened_ms,
        max_hold_minutes=24 * 60,
    )


def test_the_runtime_monitor_streams_the_open_positions_symbols(
    tmp_path: Path, venue: str, server: BinanceStreamStandIn
) -> None:
    rt = runtime(tmp_path, venue, server)
    try:
        first_btc = next(m.data for m in load_recording() if m.stream == "btcusdt@trade")
        p = held_btc(float(first_btc["p"]), int(first_btc["T"]))
        rt.state.set(Collections.POSITIONS, p.id, p.model_dump(mode="json"))
        assert server.connections_opened == 0, "nothing opens a websocket before the monitor"
        seen = 0
        deadline = time.monotonic() + 30
        while seen == 0 and time.monotonic() < deadline:
            report = rt.monitor.cycle()
            assert "pos-stream" not in report.closed
            seen += report.trades_seen
            assert not report.failed, report.failed
            time.sleep(0.5)
        assert seen > 0, "the worker's monitor received streamed trades"
        assert [TOPICS[venue]] in server.subscriptions_seen, "it follows the position's symbol"
    finally:
        rt.close()


def test_a_silent_feed_raises_one_critical_system_error_event(
    tmp_path: Path, venue: str, server: BinanceStreamStandIn
) -> None:
    rt = runtime(tmp_path, venue, server, stream_stale_after_seconds=1.0)
    try:
        stream = rt.trade_stream
        assert stream is not None

        def stale_events() -> list[dict[str, object]]:
            return [
                e
                for e in rt.state.query(Collections.EVENTS)
                if e["type"] == "system_error" and e["payload"].get("error") == "trade feed stale"
            ]

        # trades arrived (only the websocket serves them here): the feed is live now; a
        # slow connect on a loaded machine may already have been one stale episode
        assert wait_until(lambda: bool(stream.poll_ticks([BTC], 0)), timeout=30)
        earlier = len(stale_events())
        server.silence()

        # the monitor keeps polling while the feed is silent (stale detection runs on each poll)
        assert wait_until(
            lambda: (stream.poll_ticks([BTC], 0), len(stale_events()) > earlier)[1], 15
        )
        (event,) = stale_events()[earlier:]
        assert event["severity"] == "critical"
        assert event["payload"]["symbol"] == BTC and event["payload"]["venue"] == venue
    finally:
        rt.close()


def test_a_silent_bybit_feed_is_filled_from_bybits_v5_rest(tmp_path: Path) -> None:
    """The REST fallback is the venue's own: a public ``CcxtExchange('bybit')`` on the v5
    REST stand-in (``/v5/market/recent-trade``), from the last streamed trade on."""
    with BybitStreamStandIn(speed=4.0) as server:
        rt = runtime(tmp_path, "bybit", server, stream_stale_after_seconds=1.0)
        try:
            stream = rt.trade_stream
            assert stream is not None
            assert wait_until(lambda: bool(stream.poll_ticks([BTC], 0)), timeout=30)
            server.silence()
            rest_ids: list[str] = []  # REST trade ids are digits; streamed ones UUIDs

            def rest_trades() -> bool:
                batch = stream.poll_ticks([BTC], 0).get(BTC)
                if batch is not None:
                    rest_ids.extend(i for i in batch.trade_ids if str(i).isdigit())
                return bool(rest_ids)

            assert wait_until(rest_trades, timeout=15), "REST fills in while the feed is silent"
            asked = [p for _, path, p in server.engine.market_requests if "recent-trade" in path]
            assert asked and asked[0]["symbol"] == "BTCUSDT" and asked[0]["category"] == "linear"
            # the stand-in's REST trades are its 1m bars (id = bar time); streamed ids are UUIDs
            bars = server.engine.market.series[BTC].ts_ms.tolist()
            assert {int(i) for i in rest_ids} <= set(bars)
        finally:
            rt.close()


def test_a_venue_without_a_stream_is_refused_at_start(tmp_path: Path) -> None:
    rt = CloudRuntime(Settings(backend="embedded", var_dir=tmp_path, stream_exchange="kraken"))
    with pytest.raises(
        ValueError, match="trade streaming is implemented for binance, bybit, not 'kraken'"
    ):
        _ = rt.trade_stream


@pytest.mark.parametrize(
    ("name", "venue"), [("bybit", "bybit"), ("Bybit", "bybit"), ("binanceusdm", "binance")]
)
def test_a_streamed_venue_is_accepted_at_start(tmp_path: Path, name: str, venue: str) -> None:
    """bybit builds a stream like binance (the two tests above run each venue's whole
    wiring against its stand-in); the worker's source is lazy: nothing connects yet."""
    settings = Settings(backend="embedded", var_dir=tmp_path, stream_exchange=name)
    assert stream_venue(settings) == venue
    rt = CloudRuntime(settings)
    try:
        assert isinstance(rt.trade_stream, LazyTickSource)
    finally:
        rt.close()


def test_without_a_stream_venue_the_monitor_polls_its_exchange(tmp_path: Path) -> None:
    rt = CloudRuntime(Settings(backend="embedded", var_dir=tmp_path))
    assert rt.trade_stream is None
