"""The Bybit stream stand-in speaks Bybit's v5 public websocket format, and ccxt.pro's
``bybit`` client keeps a connection to it alive with its own text pings.

Checked with a plain websocket client against the shapes in Bybit's docs ("v5/ws/connect",
"v5/websocket/public/trade") and ccxt's parser (``ccxt/pro/bybit.py``): the subscribe
acknowledgement, an unknown symbol's refusal, ping → pong, and the ``publicTrade`` pushes,
whose trades are the recorded Binance trades re-encoded (``tests/standins/bybit_ws.py``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from tests.standins.binance_ws import load_recording, wait_until
from tests.standins.bybit_ws import BybitStreamStandIn, trade_id

from prometheus_trader.adapters.streaming.ccxt_trade_stream import (
    CcxtTradeStream,
    bybit_linear_client_factory,
)

pytestmark = pytest.mark.integration

BTC = "BTC/USDT:USDT"


@pytest.fixture
def server() -> Iterator[BybitStreamStandIn]:
    with BybitStreamStandIn(speed=8.0) as srv:
        yield srv


async def _talk(url: str, frames: list[dict[str, Any]], pushes: int) -> list[dict[str, Any]]:
    """Send ``frames``, then read until ``pushes`` topic messages arrived; every message."""
    got: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for frame in frames:
            await ws.send_str(json.dumps(frame))
        while sum("topic" in m for m in got) < pushes:
            msg = await asyncio.wait_for(ws.receive(), timeout=10)
            assert msg.type is aiohttp.WSMsgType.TEXT
            got.append(json.loads(msg.data))
    return got


def test_the_wire_format_is_bybits_v5_public_stream(server: BybitStreamStandIn) -> None:
    frames = [
        {"op": "subscribe", "args": ["publicTrade.NOPEUSDT"], "req_id": "a1"},
        {"op": "subscribe", "args": ["publicTrade.BTCUSDT"], "req_id": "a2"},
        {"op": "ping", "req_id": "a3"},
    ]
    got = asyncio.run(_talk(server.ws_url, frames, pushes=40))
    replies = [m for m in got if "op" in m]
    refused, ack, pong = replies
    conn = ack["conn_id"]
    assert refused == {
        "success": False,
        "ret_msg": "error:handler not found,topic:publicTrade.NOPEUSDT",
        "conn_id": conn,
        "req_id": "a1",
        "op": "subscribe",
    }
    assert ack == {
        "success": True,
        "ret_msg": "",
        "conn_id": conn,
        "req_id": "a2",
        "op": "subscribe",
    }
    assert pong == {
        "success": True,
        "ret_msg": "pong",
        "conn_id": conn,
        "req_id": "a3",
        "op": "ping",
    }
    assert server.subscriptions_seen == [["publicTrade.BTCUSDT"]]

    pushes = [m for m in got if "topic" in m]
    recorded = [m.data for m in load_recording() if m.data["s"] == "BTCUSDT"]
    items = [item for push in pushes for item in push["data"]]
    assert len(items) > len(pushes), "one taker order's fills share one push"
    for push in pushes:
        assert set(push) == {"topic", "type", "ts", "data"}
        assert push["topic"] == "publicTrade.BTCUSDT" and push["type"] == "snapshot"
        assert isinstance(push["ts"], int) and push["ts"] >= max(d["T"] for d in push["data"])
        assert len({d["T"] for d in push["data"]}) == 1
    # the pushes are the recording's first BTC trades, in order, re-encoded field by field
    for item, raw in zip(items, recorded, strict=False):
        assert set(item) == {"T", "s", "S", "v", "p", "L", "i", "BT"}
        assert item["T"] == raw["T"] and item["s"] == "BTCUSDT" and item["BT"] is False
        assert item["v"] == raw["q"] and item["p"] == raw["p"]  # strings, as Bybit sends
        assert item["S"] == ("Sell" if raw["m"] else "Buy")
        assert item["i"] == trade_id("BTCUSDT", raw["t"]) and uuid.UUID(item["i"])
        assert item["L"] in {"PlusTick", "ZeroPlusTick", "MinusTick", "ZeroMinusTick"}
    prices = [float(i["p"]) for i in items]
    for before, now, item in zip(prices, prices[1:], items[1:], strict=False):
        if now != before:
            assert item["L"] == ("PlusTick" if now > before else "MinusTick")


def _stream(server: BybitStreamStandIn, keep_alive_ms: int) -> CcxtTradeStream:
    build = bybit_linear_client_factory(ws_url=server.ws_url, rest_url=server.rest_url)

    def client() -> Any:
        c = build()
        c.streaming["keepAlive"] = keep_alive_ms  # ccxt's text ping every keepAlive ms
        return c

    return CcxtTradeStream(client, exchange_id="bybit", stale_after_s=30.0)


@pytest.mark.parametrize("answered", [True, False], ids=["answered", "unanswered"])
def test_ccxt_pings_keep_the_connection_only_when_answered(
    server: BybitStreamStandIn, answered: bool
) -> None:
    server.answer_pings = answered
    with _stream(server, keep_alive_ms=150) as stream:
        assert wait_until(lambda: bool(stream.poll_trades([BTC], 0)), timeout=30)
        if answered:
            assert wait_until(lambda: server.pings_seen >= 8, timeout=30)
            stream.poll_trades([BTC], 0)
            assert wait_until(lambda: bool(stream.poll_trades([BTC], 0)), timeout=10), "flowing"
            assert (stream.errors, server.connections_opened) == (0, 1)
        else:
            # ccxt closes a connection whose pongs stop (2 keepAlive periods); we reconnect
            assert wait_until(lambda: stream.errors > 0, timeout=30), "ccxt timed the socket out"
            assert wait_until(lambda: server.connections_opened > 1, timeout=30)


def test_demo_clients_read_bybits_demo_rest_and_its_public_stream() -> None:
    """``demo=True`` is ccxt's ``enable_demo_trading``: markets from ``api-demo.bybit.com``;
    the public linear stream stays ``stream.bybit.com`` (ccxt's demo table; Bybit's demo
    trading has no public stream of its own). Overrides apply on top (the stand-in)."""
    live = bybit_linear_client_factory()()
    demo = bybit_linear_client_factory(demo=True)()
    local = bybit_linear_client_factory(
        demo=True, ws_url="ws://127.0.0.1:9/x", rest_url="http://127.0.0.1:9"
    )()

    def urls(client: Any) -> tuple[str, str]:
        api = client.urls["api"]
        return (
            client.implode_hostname(api["public"]),
            client.implode_hostname(api["ws"]["public"]["linear"]),
        )

    try:
        assert urls(live) == ("https://api.bybit.com", "wss://stream.bybit.com/v5/public/linear")
        assert urls(demo) == (
            "https://api-demo.bybit.com",
            "wss://stream.bybit.com/v5/public/linear",
        )
        assert (demo.options["enableDemoTrading"], live.options["enableDemoTrading"]) == (
            True,
            False,
        )
        assert urls(local) == ("http://127.0.0.1:9", "ws://127.0.0.1:9/x")
    finally:
        for client in (live, demo, local):
            asyncio.run(client.close())
