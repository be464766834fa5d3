"""A loopback stand-in for Bybit's v5 public linear stream, replaying recorded trades.

It speaks Bybit's v5 websocket wire format so ccxt.pro's own ``bybit`` client and parser
run against it (``ccxt/pro/bybit.py``: ``watch_topics``, ``handle_message``,
``handle_trades``, ``parse_ws_trade``; Bybit's docs: "v5/ws/connect" and
"v5/websocket/public/trade"):

- the websocket is served on ``/v5/public/linear`` (ccxt's
  ``urls['api']['ws']['public']['linear']``); another path is a 404;
- ``{"op": "subscribe", "args": ["publicTrade.BTCUSDT"], "req_id": n}`` is answered
  ``{"success": true, "ret_msg": "", "conn_id": …, "req_id": n, "op": "subscribe"}``
  (an unknown topic: ``success: false``, ``ret_msg: "error:handler not found,topic:<topic>"``,
  as the live linear endpoint answers according to several public client repositories'
  logs and tests; Bybit's docs show no refusal example);
  ``unsubscribe`` the same way with ``op: "unsubscribe"``;
- ``{"op": "ping", "req_id": n}`` (ccxt sends one every 18 s) is answered
  ``{"success": true, "ret_msg": "pong", "conn_id": …, "req_id": n, "op": "ping"}``;
- trades are pushed as ``{"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": …,
  "data": [{"T", "s", "S", "v", "p", "L", "i", "BT"}, …]}``, the trades of one push in
  matching order.

REST (``load_markets``, and the REST fallback's ``recent-trade``) is the existing v5
stand-in, ``tests/standins/bybit.py``, started alongside (``rest_url``).

**The trades are re-encoded, not recorded on Bybit.** No Bybit trade recording exists on
this machine, so the stand-in serves the real Binance USD-M recording
(``tests/fixtures/data/ws/usdm_trades_20240808_60s.txt.gz``, BTCUSDT and ETHUSDT, see
``tests/fixtures/data/README.md``) in Bybit's push format at serve time: consecutive
recorded trades of one symbol with the same trade time ``T`` (the fills of one taker
order) become one push; per trade ``T`` = Binance ``T``, ``s`` = ``s``, ``S`` = ``"Sell"``
when Binance's ``m`` (buyer is maker: the taker sold) else ``"Buy"``, ``v`` = ``q``,
``p`` = ``p`` (strings copied), ``L`` the tick direction against the symbol's previous
trade, ``i`` a UUID derived from symbol and Binance trade id (:func:`trade_id`; Bybit's
linear trade ids are UUIDs), ``BT`` false; the push's ``ts`` is the group's last Binance
event time ``E``. Pacing, looping and the faults are those of
``tests/standins/binance_ws.py`` (:meth:`drop`, :meth:`silence`), plus ``answer_pings``
(False: pings go unanswered, as on a half-dead connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.standins.binance_ws import BinanceStreamStandIn, RecordedMessage
from tests.standins.bybit import BybitStand, serve_bybit
from tests.standins.engine import Engine

WS_PATH = "/v5/public/linear"
_IDS = uuid.UUID("6f1c1d2e-0b7a-4c43-9a52-3a1f0e6d5b11")  # namespace of the derived ids


def trade_id(symbol_id: str, binance_trade_id: int) -> str:
    """The Bybit-style trade id (``i``) the stand-in gives a recorded Binance trade."""
    return str(uuid.uuid5(_IDS, f"{symbol_id}:{binance_trade_id}"))


def tick_directions(recording: list[RecordedMessage]) -> list[str]:
    """Bybit's ``L`` per recorded trade: the price change against the same symbol's
    previous trade (``PlusTick``/``MinusTick``; unchanged: ``ZeroPlusTick`` after a rise,
    ``ZeroMinusTick`` after a fall)."""
    last: dict[str, tuple[float, str]] = {}
    out: list[str] = []
    for message in recording:
        symbol, price = message.data["s"], float(message.data["p"])
        before = last.get(symbol)
        if before is None:
            tick = "ZeroPlusTick"
        elif price > before[0]:
            tick = "PlusTick"
        elif price < before[0]:
            tick = "MinusTick"
        else:
            tick = "ZeroPlusTick" if before[1] in ("PlusTick", "ZeroPlusTick") else "ZeroMinusTick"
        last[symbol] = (price, tick)
        out.append(tick)
    return out


def bybit_trade(data: dict[str, Any], tick: str) -> dict[str, Any]:
    """One recorded Binance ``@trade`` payload as a Bybit v5 ``publicTrade`` data item."""
    return {
        "T": int(data["T"]),
        "s": data["s"],
        "S": "Sell" if data["m"] else "Buy",  # Binance m: buyer is maker → the taker sold
        "v": data["q"],
        "p": data["p"],
        "L": tick,
        "i": trade_id(data["s"], int(data["t"])),
        "BT": False,
    }


@dataclass
class BybitStreamStandIn(BinanceStreamStandIn):
    """The Bybit stand-in; use as a context manager (free loopback ports, REST beside)."""

    answer_pings: bool = True  # False: ``op: ping`` goes unanswered (ccxt must time out)
    pings_seen: int = 0
    _rest: BybitStand | None = None
    _exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __enter__(self) -> BybitStreamStandIn:
        self._rest = self._exits.enter_context(serve_bybit(Engine(keys={})))
        try:
            super().__enter__()
        except BaseException:
            self._exits.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._exits.close()

    @property
    def ws_url(self) -> str:
        """The URL for ccxt's ``urls['api']['ws']['public']['linear']``."""
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    @property
    def rest_url(self) -> str:
        """The v5 REST stand-in, for ccxt's ``urls['api']['public']``."""
        assert self._rest is not None, "not started"
        return self._rest.base

    @property
    def engine(self) -> Engine:
        """The REST stand-in's engine (its recorded bars, the requests it saw)."""
        assert self._rest is not None, "not started"
        return self._rest.engine

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get(WS_PATH, self._websocket)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.connections_opened += 1
        self._sockets.add(ws)
        conn_id = str(uuid.uuid4())
        known = {str(m.data["s"]) for m in self.recording}
        topics: set[str] = set()
        sender: asyncio.Task[None] | None = None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                reply: dict[str, Any] = {"success": True, "ret_msg": "", "conn_id": conn_id}
                reply["req_id"] = frame.get("req_id", "")
                reply["op"] = op
                args = [str(a) for a in frame.get("args") or []]
                if op == "ping":
                    self.pings_seen += 1
                    if not self.answer_pings:
                        continue
                    reply["ret_msg"] = "pong"
                elif op == "subscribe":
                    bad = [t for t in args if t.removeprefix("publicTrade.") not in known]
                    if bad:
                        reply.update(
                            success=False, ret_msg=f"error:handler not found,topic:{bad[0]}"
                        )
                    else:
                        topics.update(args)
                        self.subscriptions_seen.append(sorted(args))
                elif op == "unsubscribe":
                    topics.difference_update(args)
                else:
                    reply.update(success=False, ret_msg="error:invalid op")
                await ws.send_str(json.dumps(reply))
                if sender is None and topics:
                    sender = asyncio.create_task(self._replay(ws, topics))
        finally:
            if sender is not None:
                sender.cancel()
            self._sockets.discard(ws)
        return ws

    async def _replay(self, ws: web.WebSocketResponse, streams: set[str]) -> None:
        """Push the subscribed symbols' recorded trades in Bybit's format, grouped per
        (symbol, trade time), paced and looped as the Binance stand-in does."""
        ticks = tick_directions(self.recording)
        groups = [
            list(g)
            for _, g in itertools.groupby(
                zip(self.recording, ticks, strict=True),
                key=lambda mt: (mt[0].data["s"], mt[0].data["T"]),
            )
        ]
        lap = 0
        span_ms = (self.recording[-1].local_ns - self.recording[0].local_ns) // 1_000_000 + 1
        while not ws.closed:
            previous_ns = self.recording[0].local_ns
            for group in groups:
                first = group[0][0]
                gap = (first.local_ns - previous_ns) / 1e9 / self.speed
                previous_ns = first.local_ns
                if gap > 0:
                    await asyncio.sleep(gap)
                while self._silent and not ws.closed:
                    await asyncio.sleep(0.05)
                if ws.closed:
                    return
                topic = f"publicTrade.{first.data['s']}"
                if topic not in streams:
                    continue
                datas = [(self._lapped(m.data, lap, span_ms), tick) for m, tick in group]
                push = {
                    "topic": topic,
                    "type": "snapshot",
                    "ts": max(int(d["E"]) for d, _ in datas),
                    "data": [bybit_trade(d, tick) for d, tick in datas],
                }
                await ws.send_str(json.dumps(push))
                self.messages_sent += 1
            if not self.loop_recording:
                return
            lap += 1
