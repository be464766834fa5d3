"""The exit worker's live trade stream: ccxt.pro against loopback stand-ins of each
streamed venue (ccxt's own websocket client and parser run): Binance USD-M replays its
recorded ``@trade`` messages, Bybit pushes the same recorded trades in its v5
``publicTrade`` format (``tests/standins/bybit_ws.py``).

What is proven, on both venues: trades arrive exactly as recorded (the aggressor side
from Binance's ``m``, or Bybit's ``S`` re-encoded from it); a symbol added while running
is followed within one 2-second cycle; a dropped connection reconnects; a silent feed
raises the stale alert within the configured time and falls back to REST polling
meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.standins import bybit_ws
from tests.standins.binance_ws import BinanceStreamStandIn, load_recording, wait_until
from tests.standins.bybit_ws import BybitStreamStandIn

from prometheus_trader.adapters.streaming.ccxt_trade_stream import (
    CcxtTradeStream,
    binance_usdm_client_factory,
    bybit_linear_client_factory,
)
from prometheus_trader.domain.market import MarketType, Side, Trade

pytestmark = pytest.mark.integration

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
CYCLE_S = 2.0


@dataclass(frozen=True)
class Venue:
    """What differs per streamed venue: its stand-in, ccxt client, ids and topic names."""

    name: str
    standin: type[BinanceStreamStandIn]
    factory: Callable[..., Callable[[], Any]]
    trade_id: Callable[[dict[str, Any]], str]  # a recorded Binance payload's id on the venue
    topic: Callable[[str], str]  # an exchange symbol id's subscription name


VENUES = [
    Venue(
        "binance",
        BinanceStreamStandIn,
        binance_usdm_client_factory,
        lambda d: str(d["t"]),
        lambda sid: f"{sid.lower()}@trade",
    ),
    Venue(
        "bybit",
        BybitStreamStandIn,
        bybit_linear_client_factory,
        lambda d: bybit_ws.trade_id(d["s"], int(d["t"])),
        lambda sid: f"publicTrade.{sid}",
    ),
]


@pytest.fixture(params=VENUES, ids=lambda v: v.name)
def venue(request: pytest.FixtureRequest) -> Venue:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server(venue: Venue) -> Iterator[BinanceStreamStandIn]:
    with venue.standin(speed=4.0) as srv:
        yield srv


def stream_for(venue: Venue, server: BinanceStreamStandIn, **kwargs: object) -> CcxtTradeStream:
    factory = venue.factory(ws_url=server.ws_url, rest_url=server.rest_url)
    return CcxtTradeStream(factory, exchange_id=venue.name, **kwargs)  # type: ignore[arg-type]


def collect(stream: CcxtTradeStream, symbols: list[str], seconds: float) -> list[Trade]:
    got: list[Trade] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += stream.poll_trades(symbols, 0)
        time.sleep(0.1)
    return got


def first_trades(
    stream: CcxtTradeStream, symbols: list[str], timeout_s: float = 20.0
) -> list[Trade]:
    """The first trades the stream hands over (a connection, ccxt's load_markets and the
    subscription come first: seconds on a loaded machine); [] if none within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = stream.poll_trades(symbols, 0)
        if got:
            return got
        time.sleep(0.1)
    return []


def test_streamed_trades_are_the_recorded_ones(venue: Venue, server: BinanceStreamStandIn) -> None:
    recorded = [m.data for m in load_recording() if m.stream == "btcusdt@trade"]
    with stream_for(venue, server) as stream:
        got = collect(stream, [BTC], 3.0)
    assert len(got) >= 50
    by_id = {venue.trade_id(d): d for d in recorded}
    for trade in got:
        raw = by_id[trade.trade_id]
        assert trade.exchange == venue.name
        assert trade.symbol == BTC and trade.market_type is MarketType.PERP
        assert trade.ts_ms == raw["T"]
        assert trade.price == float(raw["p"]) and trade.amount == float(raw["q"])
        # m = buyer is maker → the taker (aggressor) sold
        assert trade.side is (Side.SELL if raw["m"] else Side.BUY)
    # exactly the recording's first trades: none skipped (at the start or between), no
    # repeats, in time order (poll_trades orders one time's trades by id, not as recorded)
    position = {tid: i for i, tid in enumerate(by_id)}
    seen = [position[t.trade_id] for t in got]
    assert sorted(seen) == list(range(len(seen))), "the recorded prefix, once each"
    assert [t.ts_ms for t in got] == sorted(t.ts_ms for t in got)


def test_symbol_added_while_running_is_followed_within_one_cycle(
    venue: Venue, server: BinanceStreamStandIn
) -> None:
    with stream_for(venue, server) as stream:
        assert first_trades(stream, [BTC])
        # a position on ETH opens: the next cycles ask for both symbols
        stream.poll_trades([BTC, ETH], 0)
        time.sleep(CYCLE_S)
        nxt = stream.poll_trades([BTC, ETH], 0)
        assert any(t.symbol == ETH for t in nxt), "ETH followed within one cycle"
        assert [venue.topic("BTCUSDT"), venue.topic("ETHUSDT")] in server.subscriptions_seen
        # and dropped again when its position closes
        stream.poll_trades([BTC], 0)
        assert set(stream.status()) == {BTC}


def test_a_dropped_connection_reconnects_and_trades_resume(
    venue: Venue, server: BinanceStreamStandIn
) -> None:
    with stream_for(venue, server, backoff_s=(0.1, 1.0)) as stream:
        assert first_trades(stream, [BTC])
        opened = server.connections_opened
        server.drop()
        assert wait_until(lambda: server.connections_opened > opened, timeout=30)
        assert wait_until(lambda: bool(stream.poll_trades([BTC], 0)), timeout=30), (
            "trades flow again after the reconnect"
        )
        assert stream.connects >= 2


class RecordingRest:
    """A REST trade source (the Exchange port's fetch_trades) that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def fetch_trades(self, symbol: str, since_ms: int, limit: int = 1000) -> list[Trade]:
        self.calls.append((symbol, since_ms))
        return [
            Trade(
                exchange="binance",
                market_type=MarketType.PERP,
                symbol=symbol,
                ts_ms=since_ms + 1,
                trade_id=f"rest-{len(self.calls)}",
                price=61_000.0,
                amount=0.01,
                side=Side.BUY,
            )
        ]


def test_a_silent_feed_raises_the_stale_alert_and_polls_rest(
    venue: Venue, server: BinanceStreamStandIn
) -> None:
    alerts: list[tuple[str, float]] = []
    rest = RecordingRest()
    stale_after = 1.0
    with stream_for(
        venue,
        server,
        stale_after_s=stale_after,
        on_stale=lambda s, q: alerts.append((s, q)),
        rest=rest,
    ) as stream:
        # streaming first (on a loaded machine the connect can outlast stale_after: that
        # early episode is the rule working, not what this test is about)
        first: list[Trade] = []
        assert wait_until(
            lambda: (
                bool(first.extend(stream.poll_trades([BTC], 0)) or first)
                and not stream.status()[BTC].stale
            ),
            timeout=30,
        )
        alerts.clear()
        rest.calls.clear()
        last_ms = max(t.ts_ms for t in first if not t.trade_id.startswith("rest-"))
        server.silence()
        silenced_at = time.monotonic()
        assert wait_until(lambda: bool(stream.status()[BTC].stale), timeout=stale_after + 3)
        assert time.monotonic() - silenced_at < stale_after + 3
        assert [s for s, _ in alerts] == [BTC], "one alert per stale episode"
        polled = stream.poll_trades([BTC], 0)
        assert rest.calls and rest.calls[0][0] == BTC
        assert rest.calls[0][1] >= last_ms, "REST resumes from the last streamed trade"
        assert any(t.trade_id.startswith("rest-") for t in polled)
        server.silence(False)
        assert wait_until(lambda: not stream.status()[BTC].stale, timeout=30)


class _Idle:
    """A ccxt.pro client that never delivers (the test hands the stream its messages)."""

    async def watch_trades_for_symbols(self, symbols: list[str]) -> list[dict[str, object]]:
        import asyncio

        await asyncio.Event().wait()
        return []

    async def close(self) -> None:
        return None


def test_poll_ticks_merges_streamed_and_rest_trades_in_time_order_without_repeats() -> None:
    now = [0.0]
    rest = RecordingRest()
    unified = [
        {"symbol": BTC, "timestamp": t, "id": str(t), "price": 61_000.0 + t, "amount": 0.5,
         "side": "buy" if t % 2 else "sell"}
        for t in (100, 101, 103)
    ]  # fmt: skip
    with CcxtTradeStream(
        _Idle, exchange_id="binance", stale_after_s=5.0, rest=rest, monotonic=lambda: now[0]
    ) as stream:
        stream.follow([BTC])
        assert stream.accept_unified(unified) == 3
        assert stream.accept_unified(unified[1:]) == 0, "a replayed overlap is dropped"
        batches = stream.poll_ticks([BTC], 0)
        assert list(batches) == [BTC] and list(batches[BTC].trade_ids) == ["100", "101", "103"]
        assert batches[BTC].is_buy.tolist() == [False, True, True]
        assert stream.accept_unified([{**unified[0], "timestamp": 104, "id": "104"}]) == 1
        now[0] = 10.0  # silent for longer than stale_after_s: REST fills in
        batches = stream.poll_ticks([BTC], 0)
        # REST asked from the last streamed trade on; its trade is merged in time order
        assert rest.calls == [(BTC, 105)]
        assert list(batches[BTC].trade_ids) == ["104", "rest-1"]
        assert batches[BTC].ts_ms.tolist() == [104, 106]
