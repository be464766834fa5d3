"""A loopback stand-in for Binance USD-M's market streams, replaying recorded messages.

It speaks the real wire format so ccxt.pro's own client and parser run against it:
- ``GET /fapi/v1/exchangeInfo``: the two recorded perps (enough for ``load_markets``);
- a websocket on any path (ccxt connects to ``…/public/ws/<n>``): a
  ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": n}`` frame is answered
  ``{"result": null, "id": n}``, then the recorded ``@trade`` payloads of the subscribed
  streams are sent in recorded order, paced by their recorded spacing ÷ ``speed``.

The recording is ``tests/fixtures/data/ws/usdm_trades_20240808_60s.txt.gz``: 60 s of the
raw ``<local_ts_ns> <json>`` lines of BTCUSDT and ETHUSDT from
``binance-ticks-2024-08/raw/`` (see ``tests/fixtures/data/README.md``), unmodified.

Faults on demand: :meth:`drop` closes every connection (clients must reconnect),
:meth:`silence` keeps connections open but sends nothing (clients must notice staleness).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

RECORDING = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "data"
    / "ws"
    / "usdm_trades_20240808_60s.txt.gz"
)


@dataclass(frozen=True)
class RecordedMessage:
    """One recorded combined-stream message: its stream name and payload."""

    local_ns: int
    stream: str
    data: dict[str, Any]


def load_recording(path: Path = RECORDING) -> list[RecordedMessage]:
    """The recorded ``@trade`` messages, in recorded order."""
    out: list[RecordedMessage] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            stamp, _, body = line.partition(" ")
            message = json.loads(body)
            out.append(RecordedMessage(int(stamp), message["stream"], message["data"]))
    return out


def _symbol_info(symbol: str, base: str, tick: str, step: str) -> dict[str, Any]:
    """An exchangeInfo symbol entry in Binance's shape (filters as the exchange sends)."""
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.10",
                "maxPrice": "4529764",
                "tickSize": tick,
            },
            {"filterType": "LOT_SIZE", "stepSize": step, "maxQty": "1000", "minQty": step},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": step, "maxQty": "120", "minQty": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


EXCHANGE_INFO: dict[str, Any] = {
    "timezone": "UTC",
    "serverTime": 1723161256000,
    "futuresType": "U_MARGINED",
    "rateLimits": [],
    "exchangeFilters": [],
    "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
    "symbols": [
        _symbol_info("BTCUSDT", "BTC", "0.10", "0.001"),
        _symbol_info("ETHUSDT", "ETH", "0.01", "0.001"),
    ],
}


@dataclass
class BinanceStreamStandIn:
    """The stand-in server; use as a context manager (starts on a free loopback port)."""

    speed: float = 1.0
    loop_recording: bool = True
    recording: list[RecordedMessage] = field(default_factory=load_recording)
    host: str = "127.0.0.1"
    port: int = 0
    subscriptions_seen: list[list[str]] = field(default_factory=list)
    connections_opened: int = 0
    messages_sent: int = 0
    _silent: bool = False
    _sockets: set[web.WebSocketResponse] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> BinanceStreamStandIn:
        if not self.port:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="binance-ws-standin", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stream stand-in did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def ws_url(self) -> str:
        """Base websocket URL to put in ccxt's ``urls['api']['ws']['linear']``."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def rest_url(self) -> str:
        """Base REST URL for ccxt's ``urls['api']['fapiPublic']``."""
        return f"http://{self.host}:{self.port}/fapi/v1"

    # ------------------------------------------------------------------- faults
    def drop(self) -> None:
        """Close every open connection, as a network drop or a server restart would."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(10)

    def silence(self, silent: bool = True) -> None:
        """Keep connections open but send nothing (or resume)."""
        self._silent = silent

    def open_connections(self) -> int:
        """Connections open right now."""
        return len(self._sockets)

    # ------------------------------------------------------------------ server
    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application()
        self._add_routes(app)
        self._runner = web.AppRunner(app)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port)
        loop.run_until_complete(site.start())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _add_routes(self, app: web.Application) -> None:
        """exchangeInfo for ccxt's load_markets; the websocket on every other path."""
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/{tail:.*}", self._websocket)

    async def _shutdown(self) -> None:
        await self._close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _close_all(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        self._sockets.clear()

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(EXCHANGE_INFO)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.connections_opened += 1
        self._sockets.add(ws)
        streams: set[str] = set()
        sender: asyncio.Task[None] | None = None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                params = [str(p) for p in frame.get("params", [])]
                if frame.get("method") == "SUBSCRIBE":
                    streams.update(params)
                    self.subscriptions_seen.append(sorted(params))
                elif frame.get("method") == "UNSUBSCRIBE":
                    streams.difference_update(params)
                await ws.send_str(json.dumps({"result": None, "id": frame.get("id")}))
                if sender is None:
                    sender = asyncio.create_task(self._replay(ws, streams))
        finally:
            if sender is not None:
                sender.cancel()
            self._sockets.discard(ws)
        return ws

    async def _replay(self, ws: web.WebSocketResponse, streams: set[str]) -> None:
        """Send the subscribed recorded messages, paced by the recording, looping with
        fresh trade ids and times so a looped stream still looks live and ordered."""
        lap = 0
        span_ms = (self.recording[-1].local_ns - self.recording[0].local_ns) // 1_000_000 + 1
        while not ws.closed:
            previous_ns = self.recording[0].local_ns
            for message in self.recording:
                gap = (message.local_ns - previous_ns) / 1e9 / self.speed
                previous_ns = message.local_ns
                if gap > 0:
                    await asyncio.sleep(gap)
                while self._silent and not ws.closed:
                    await asyncio.sleep(0.05)
                if ws.closed:
                    return
                if message.stream not in streams:
                    continue
                await ws.send_str(json.dumps(self._lapped(message.data, lap, span_ms)))
                self.messages_sent += 1
            if not self.loop_recording:
                return
            lap += 1

    @staticmethod
    def _lapped(data: dict[str, Any], lap: int, span_ms: int) -> dict[str, Any]:
        if lap == 0:
            return data
        shift = lap * span_ms
        return {
            **data,
            "E": data["E"] + shift,
            "T": data["T"] + shift,
            "t": data["t"] + lap * 1_000_000,
        }


@contextlib.contextmanager
def running(speed: float = 1.0) -> Iterator[BinanceStreamStandIn]:
    """A started stand-in."""
    with BinanceStreamStandIn(speed=speed) as server:
        yield server


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass (for tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
