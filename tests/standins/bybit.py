"""A local Bybit v5 stand-in for linear perpetuals (the subset ccxt's ``bybit`` calls).

Same engine as the Binance stand-in (recorded bars, accounts, order log, faults); Bybit's
wire format: ``{"retCode", "retMsg", "result", "retExtInfo", "time"}`` envelopes, errors
as non-zero ``retCode`` with HTTP 200, HMAC-SHA256 ``X-BAPI-SIGN`` over timestamp + key +
recvWindow + (query string | JSON body), ``orderLinkId`` unique across all orders, and
conditional orders that keep their id when they trigger.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_trader.domain.market import TIMEFRAME_MS
from tests.standins.binance_usdm import _num, market_id
from tests.standins.engine import Engine, Order, VenueError

_CODES = {  # Binance-flavoured engine codes → Bybit retCodes
    "-1121": "10001",
    "-4116": "110072",
    "-1111": "10001",
    "-2022": "110017",
    "-2021": "110092",
    "-2019": "110007",
    "-2013": "110001",
    "-2011": "110001",
    "-4028": "10001",
}
_INTERVALS = {"1": "1m", "5": "5m", "15": "15m", "60": "1h", "240": "4h", "D": "1d"}
_OI_INTERVALS = {  # /v5/market/open-interest intervalTime
    "5min": 300_000,
    "15min": 900_000,
    "30min": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
_STATUS = {
    "NEW": "New",
    "PARTIALLY_FILLED": "PartiallyFilled",
    "FILLED": "Filled",
    "CANCELED": "Cancelled",
    "EXPIRED": "Cancelled",
    "FINISHED": "Filled",
}


@dataclass
class Req:
    method: str
    path: str
    params: dict[str, Any]
    account: str = ""


class Bybit:
    """Routes over an ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.by_id = {market_id(s): s for s in engine.instruments}
        self.routes: dict[tuple[str, str], tuple[bool, Callable[[Req], Any]]] = {
            ("GET", "/v5/market/time"): (False, self.server_time),
            ("GET", "/v5/market/instruments-info"): (False, self.instruments),
            ("GET", "/v5/market/tickers"): (False, self.tickers),
            ("GET", "/v5/market/kline"): (False, self.kline),
            ("GET", "/v5/market/open-interest"): (False, self.open_interest),
            ("GET", "/v5/market/recent-trade"): (False, self.recent_trades),
            ("GET", "/v5/market/funding/history"): (False, self.funding_history),
            ("GET", "/v5/account/wallet-balance"): (True, self.wallet),
            ("GET", "/v5/position/list"): (True, self.positions),
            ("POST", "/v5/position/set-leverage"): (True, self.set_leverage),
            ("POST", "/v5/account/set-margin-mode"): (True, lambda r: {"reasons": []}),
            ("POST", "/v5/position/switch-isolated"): (True, lambda r: {}),
            ("POST", "/v5/order/create"): (True, self.create),
            ("POST", "/v5/order/cancel"): (True, self.cancel),
            ("GET", "/v5/order/realtime"): (True, self.realtime),
            ("GET", "/v5/order/history"): (True, self.history),
            ("GET", "/v5/user/query-api"): (True, self.query_api),
            ("GET", "/v5/account/info"): (True, lambda r: {"unifiedMarginStatus": 6}),
        }

    def _symbol(self, r: Req) -> str:
        sid = str(r.params.get("symbol", ""))
        if sid not in self.by_id:
            raise VenueError("-1121", "params error: symbol invalid")
        return self.by_id[sid]

    # -------------------------------------------------------------- market data
    def server_time(self, r: Req) -> Any:
        now = time.time()
        return {"timeSecond": str(int(now)), "timeNano": str(int(now * 1e9))}

    def instruments(self, r: Req) -> Any:
        rows = []
        for s, inst in sorted(self.engine.instruments.items()):
            rows.append(
                {
                    "symbol": market_id(s),
                    "contractType": "LinearPerpetual",
                    "status": "Trading",
                    "baseCoin": inst.base,
                    "quoteCoin": inst.quote,
                    "launchTime": "1585526400000",
                    "deliveryTime": "0",
                    "deliveryFeeRate": "",
                    "priceScale": "4",
                    "leverageFilter": {
                        "minLeverage": "1",
                        "maxLeverage": _num(inst.max_leverage),
                        "leverageStep": "0.01",
                    },
                    "priceFilter": {
                        "minPrice": _num(inst.price_step),
                        "maxPrice": "1999999",
                        "tickSize": _num(inst.price_step),
                    },
                    "lotSizeFilter": {
                        "maxOrderQty": "1000000",
                        "minOrderQty": _num(inst.amount_step),
                        "qtyStep": _num(inst.amount_step),
                        "postOnlyMaxOrderQty": "1000000",
                        "maxMktOrderQty": "1000000",
                        "minNotionalValue": _num(inst.min_notional),
                    },
                    "unifiedMarginTrade": True,
                    "fundingInterval": 480,
                    "settleCoin": inst.settle or "USDT",
                    "copyTrading": "both",
                    "upperFundingRate": "0.00375",
                    "lowerFundingRate": "-0.00375",
                }
            )
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def _ticker(self, s: str) -> dict[str, Any]:
        e = self.engine
        now = e.now_ms
        bars = e.bars(s, now - 86_400_000, now)
        last, first = float(bars.close[-1]), float(bars.open[0])
        step = e.instruments[s].price_step
        rates = e.market.funding(s, now - 86_400_000, now)
        return {
            "symbol": market_id(s),
            "lastPrice": _num(last),
            "indexPrice": _num(last),
            "markPrice": _num(last),
            "prevPrice24h": _num(first),
            "price24hPcnt": _num(round(last / first - 1, 6)),
            "highPrice24h": _num(float(bars.high.max())),
            "lowPrice24h": _num(float(bars.low.min())),
            "prevPrice1h": _num(last),
            "openInterest": _num(float(bars.volume.sum())),
            "openInterestValue": _num(float(bars.volume.sum()) * last),
            "turnover24h": _num(float((bars.close * bars.volume).sum())),
            "volume24h": _num(float(bars.volume.sum())),
            "fundingRate": _num(rates[-1].rate if rates else 0.0),
            "nextFundingTime": str(now - now % 28_800_000 + 28_800_000),
            "predictedDeliveryPrice": "",
            "basisRate": "",
            "deliveryFeeRate": "",
            "deliveryTime": "0",
            "ask1Size": "1",
            "bid1Price": _num(last - step),
            "ask1Price": _num(last + step),
            "bid1Size": "1",
        }

    def tickers(self, r: Req) -> Any:
        wanted = [self._symbol(r)] if "symbol" in r.params else sorted(self.engine.instruments)
        return {"category": "linear", "list": [self._ticker(s) for s in wanted]}

    def kline(self, r: Req) -> Any:
        s = self._symbol(r)
        tf = _INTERVALS.get(str(r.params.get("interval", "1")))
        if tf is None:
            raise VenueError("-1121", "params error: interval invalid")
        step = TIMEFRAME_MS[tf]
        now = self.engine.now_ms
        limit = int(r.params.get("limit", 200))
        start = int(r.params.get("start", now - limit * step))
        start -= start % step
        end = min(int(r.params.get("end", now)), now)
        bars = self.engine.served_bars(s, start, end)
        if tf != "1m":
            bars = bars.resample(tf)
        rows = [
            [
                str(int(bars.ts_ms[i])),
                _num(float(bars.open[i])),
                _num(float(bars.high[i])),
                _num(float(bars.low[i])),
                _num(float(bars.close[i])),
                _num(float(bars.volume[i])),
                _num(float(bars.close[i] * bars.volume[i])),
            ]
            for i in range(len(bars))
        ][:limit]
        # Bybit lists klines newest first
        return {"symbol": market_id(s), "category": "linear", "list": rows[::-1]}

    def open_interest(self, r: Req) -> Any:
        """Points at ``intervalTime`` boundaries, newest first (the sample has no recorded
        open interest: the engine's stated proxy, 24 h volume)."""
        s = self._symbol(r)
        e = self.engine
        step = _OI_INTERVALS.get(str(r.params.get("intervalTime", "")))
        if step is None:
            raise VenueError("10001", "params error: intervalTime invalid")
        limit = min(int(r.params.get("limit", 50)), 200)
        end = min(int(r.params.get("endTime", e.now_ms)), e.now_ms)
        start = int(r.params.get("startTime", end - (limit - 1) * step))
        stamps = range(start + (-start) % step, end + 1, step)
        points = [
            {"openInterest": _num(e.open_interest_proxy(s, t)), "timestamp": str(t)}
            for t in reversed(stamps)
        ]
        return {
            "symbol": market_id(s),
            "category": "linear",
            "nextPageCursor": "",
            "list": points[:limit],
        }

    def recent_trades(self, r: Req) -> Any:
        s = self._symbol(r)
        e = self.engine
        bars = e.bars(s, e.now_ms - 3_600_000, e.now_ms)
        out = [
            {
                "execId": f"{int(bars.ts_ms[i])}",
                "symbol": market_id(s),
                "price": _num(float(bars.close[i])),
                "size": _num(float(bars.volume[i])),
                "side": "Sell" if bars.close[i] < bars.open[i] else "Buy",
                "time": str(int(bars.ts_ms[i]) + 59_000),
                "isBlockTrade": False,
            }
            for i in range(len(bars))
        ]
        return {"category": "linear", "list": out[::-1][: int(r.params.get("limit", 500))]}

    def funding_history(self, r: Req) -> Any:
        s = self._symbol(r)
        e = self.engine
        rates = e.market.funding(s, e.now_ms - 7 * 86_400_000, e.now_ms)
        return {
            "category": "linear",
            "list": [
                {
                    "symbol": market_id(s),
                    "fundingRate": _num(f.rate),
                    "fundingRateTimestamp": str(f.ts_ms),
                }
                for f in reversed(rates)
            ],
        }

    # ------------------------------------------------------------------ account
    def wallet(self, r: Req) -> Any:
        e = self.engine
        acct = e.account(r.account)
        upnl, avail = e._upnl(r.account), e._available(r.account)
        equity = acct.wallet + upnl
        im = equity - avail
        coin = {
            "coin": "USDT",
            "equity": _num(equity),
            "usdValue": _num(equity),
            "walletBalance": _num(acct.wallet),
            "free": "",
            "locked": "0",
            "availableToWithdraw": _num(avail),
            "unrealisedPnl": _num(upnl),
            "cumRealisedPnl": "0",
            "totalOrderIM": "0",
            "totalPositionIM": _num(im),
            "totalPositionMM": "0",
            "borrowAmount": "0",
            "accruedInterest": "0",
            "bonus": "0",
            "marginCollateral": True,
            "collateralSwitch": True,
            "spotHedgingQty": "0",
        }
        return {
            "list": [
                {
                    "accountType": "UNIFIED",
                    "totalEquity": _num(equity),
                    "totalWalletBalance": _num(acct.wallet),
                    "totalMarginBalance": _num(equity),
                    "totalAvailableBalance": _num(avail),
                    "totalPerpUPL": _num(upnl),
                    "totalInitialMargin": _num(im),
                    "totalMaintenanceMargin": "0",
                    "accountIMRate": "0",
                    "accountMMRate": "0",
                    "accountLTV": "0",
                    "coin": [coin],
                }
            ]
        }

    def positions(self, r: Req) -> Any:
        e = self.engine
        acct = e.account(r.account)
        rows = []
        for s, (q, entry) in e.positions(r.account).items():
            mark = e.last_price(s)
            lev = acct.leverage.get(s, 20)
            rows.append(
                {
                    "positionIdx": 0,
                    "symbol": market_id(s),
                    "side": "Buy" if q > 0 else "Sell",
                    "size": _num(abs(q)),
                    "avgPrice": _num(entry),
                    "positionValue": _num(abs(q) * entry),
                    "tradeMode": 0,
                    "autoAddMargin": 0,
                    "positionStatus": "Normal",
                    "leverage": str(lev),
                    "markPrice": _num(mark),
                    "liqPrice": "",
                    "bustPrice": "",
                    "positionIM": _num(abs(q) * mark / lev),
                    "positionMM": "0",
                    "tpslMode": "Full",
                    "takeProfit": "0",
                    "stopLoss": "0",
                    "trailingStop": "0",
                    "unrealisedPnl": _num(q * (mark - entry)),
                    "cumRealisedPnl": "0",
                    "createdTime": str(e.now_ms),
                    "updatedTime": str(e.now_ms),
                    "riskId": 1,
                    "riskLimitValue": "2000000",
                }
            )
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def set_leverage(self, r: Req) -> Any:
        s = self._symbol(r)
        lev = int(float(r.params.get("buyLeverage", 0)))
        acct = self.engine.account(r.account)
        if acct.leverage.get(s) == lev:
            raise VenueError("110043", "leverage not modified")
        acct.leverage[s] = lev
        return {}

    def query_api(self, r: Req) -> Any:
        wallet = ["AccountTransfer", "SubMemberTransfer"]
        if r.account in self.engine.withdraw_keys:
            wallet.append("Withdraw")
        return {
            "id": "1",
            "note": "stand-in",
            "apiKey": r.account,
            "readOnly": 0,
            "secret": "",
            "permissions": {
                "ContractTrade": ["Order", "Position"],
                "Wallet": wallet,
                "Spot": [],
                "Options": [],
                "Derivatives": [],
                "Exchange": [],
                "NFT": [],
            },
            "ips": ["*"],
            "type": 1,
            "deadlineDay": 83,
            "expiredAt": "",
            "createdAt": "",
            "unified": 0,
            "uta": 1,
            "userID": 1,
            "inviterID": 0,
            "vipLevel": "No VIP",
            "mktMakerLevel": "0",
            "affiliateID": 0,
        }

    # ------------------------------------------------------------------- orders
    def order_json(self, o: Order) -> dict[str, Any]:
        status = _STATUS.get(o.status, o.status)
        if o.conditional and o.status == "NEW":
            status = "Untriggered"
        if o.conditional and o.status == "FINISHED" and o.actual_order_id is not None:
            fill = self.engine.orders[o.actual_order_id]
            filled, avg = fill.filled, fill.avg
        else:
            filled, avg = o.filled, o.avg
        return {
            "orderId": str(o.id),
            "orderLinkId": o.client_id,
            "blockTradeId": "",
            "symbol": market_id(o.symbol),
            "price": _num(o.price or 0),
            "qty": _num(o.qty),
            "side": "Buy" if o.side == "BUY" else "Sell",
            "isLeverage": "",
            "positionIdx": 0,
            "orderStatus": status,
            "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": _num(avg) if filled else "",
            "leavesQty": _num(o.qty - filled),
            "leavesValue": "0",
            "cumExecQty": _num(filled),
            "cumExecValue": _num(filled * avg),
            "cumExecFee": "0",
            "timeInForce": "GTC" if o.type == "LIMIT" else "IOC",
            "orderType": "Limit" if o.type == "LIMIT" else "Market",
            "stopOrderType": "Stop" if o.conditional else "",
            "orderIv": "",
            "triggerPrice": _num(o.trigger or 0),
            "takeProfit": "",
            "stopLoss": "",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": self._direction(o),
            "triggerBy": "LastPrice" if o.conditional else "",
            "lastPriceOnCreated": "",
            "reduceOnly": o.reduce_only,
            "closeOnTrigger": False,
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "tpslMode": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "placeType": "",
            "createdTime": str(o.created_ms),
            "updatedTime": str(o.updated_ms),
        }

    @staticmethod
    def _direction(o: Order) -> int:
        if not o.conditional:
            return 0
        stop = o.type == "STOP_MARKET"
        return 1 if (stop == (o.side == "BUY")) else 2

    def create(self, r: Req, fault: str | None = None) -> Any:
        p = r.params
        trigger = p.get("triggerPrice")
        direction = int(p.get("triggerDirection", 0) or 0)
        side = "BUY" if p.get("side") == "Buy" else "SELL"
        kind = "LIMIT" if p.get("orderType") == "Limit" else "MARKET"
        if trigger:
            # rises to the trigger (1): a buy stop / a sell take-profit; falls (2): the reverse
            rising = direction == 1
            kind = "STOP_MARKET" if rising == (side == "BUY") else "TAKE_PROFIT_MARKET"
        cid = str(p.get("orderLinkId") or f"byb-{time.time_ns()}")
        with self.engine.lock:  # Bybit: an orderLinkId is unique across all orders
            for o in self.engine.orders.values():
                if o.account == r.account and o.client_id == cid:
                    raise VenueError("-4116", "OrderLinkedID is duplicate")
            o = self.engine.place(
                r.account,
                {
                    "symbol": self._symbol(r),
                    "side": side,
                    "type": kind,
                    "qty": p.get("qty", "0"),
                    "client_id": cid,
                    "price": float(p["price"]) if kind == "LIMIT" else None,
                    "trigger": float(trigger) if trigger else None,
                    "reduce_only": bool(p.get("reduceOnly")),
                },
                fault,
            )
        return {"orderId": str(o.id), "orderLinkId": o.client_id}

    def _find(self, r: Req) -> Order:
        oid, cid = r.params.get("orderId"), r.params.get("orderLinkId")
        return self.engine.find(
            r.account, order_id=int(oid) if oid else None, client_id=str(cid) if cid else None
        )

    def cancel(self, r: Req, fault: str | None = None) -> Any:
        o = self.engine.cancel(self._find(r))
        return {"orderId": str(o.id), "orderLinkId": o.client_id}

    def _listing(self, r: Req, live: bool | None) -> Any:
        f = r.params.get("orderFilter")
        sym = self._symbol(r) if "symbol" in r.params else None
        oid, cid = r.params.get("orderId"), r.params.get("orderLinkId")
        with self.engine.lock:
            rows = [
                o
                for o in self.engine.orders.values()
                if o.account == r.account
                and not o.client_id.startswith("trig-")
                and sym in (None, o.symbol)
                and (oid is None or str(o.id) == str(oid))
                and (cid is None or o.client_id == cid)
                and (f is None or oid or cid or (f == "StopOrder") == o.conditional)
                and (live is None or o.live == live)
            ]
        return {
            "category": "linear",
            "nextPageCursor": "",
            "list": [self.order_json(o) for o in sorted(rows, key=lambda o: -o.id)],
        }

    def realtime(self, r: Req) -> Any:
        by_id = r.params.get("orderId") or r.params.get("orderLinkId")
        open_only = str(r.params.get("openOnly", "0")) == "0" and not by_id
        return self._listing(r, True if open_only else None)

    def history(self, r: Req) -> Any:
        return self._listing(r, None)


ORDER_CHANGING = {"/v5/order/create", "/v5/order/cancel"}


def _envelope(result: Any, code: int = 0, msg: str = "OK") -> dict[str, Any]:
    return {
        "retCode": code,
        "retMsg": msg,
        "result": result,
        "retExtInfo": {},
        "time": int(time.time() * 1000),
    }


def _make_handler(venue: Bybit, timeout_s: float) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY: http.server sends headers and body apart, and with Nagle on the body
        # waits for the client's delayed ACK (~40 ms a request on loopback; a real venue's
        # server has no such wait)
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _auth(self, r: Req, query: str, body: str) -> None:
            key = self.headers.get("X-BAPI-API-KEY") or ""
            secret = venue.engine.keys.get(key)
            if secret is None:
                raise VenueError("10003", "API key is invalid.", 401)
            ts = self.headers.get("X-BAPI-TIMESTAMP") or "0"
            window = self.headers.get("X-BAPI-RECV-WINDOW") or "5000"
            payload = ts + key + window + (body if self.command == "POST" else query)
            want = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(want, self.headers.get("X-BAPI-SIGN") or ""):
                raise VenueError("10004", "error sign! origin_string[...]")
            now = int(time.time() * 1000)
            if not (now - int(window) <= int(ts) <= now + 1000):
                raise VenueError("10002", "invalid request, please check your server timestamp")
            r.account = key

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
            if body:
                params.update(json.loads(body))
            r = Req(self.command, parts.path, params)
            e = venue.engine
            with e.lock:
                e.requests.append((self.command, parts.path))
            route = venue.routes.get((self.command, parts.path))
            try:
                if route is None:
                    self._send(404, {"retCode": 10001, "retMsg": f"{parts.path} not found"})
                    return
                private, handler = route
                if private:
                    self._auth(r, parts.query, body)
                else:  # market data: arrival times, for the collector's rate-limit tests
                    with e.lock:
                        e.market_requests.append((time.monotonic(), parts.path, dict(params)))
                fault = None
                if parts.path in ORDER_CHANGING:
                    with e.lock:
                        fault = e.faults.draw()
                        if fault:
                            e.log.append(
                                {
                                    "seq": len(e.log),
                                    "action": "fault",
                                    "fault": fault,
                                    "path": parts.path,
                                    "account": r.account,
                                }
                            )
                if fault in ("429", "418"):
                    # Bybit answers an IP rate limit with HTTP 403, a key limit with 10006
                    self._send(
                        200,
                        _envelope({}, 10006, "Too many visits!"),
                        {"Retry-After": str(e.faults.retry_after_s)},
                    )
                    return
                if fault == "5xx":
                    self._send(503, {"retCode": 10016, "retMsg": "Server error."})
                    return
                if fault == "timeout":
                    time.sleep(timeout_s)
                    self._send(503, {"retCode": 10016, "retMsg": "Timeout."})
                    return
                result = handler(r, fault) if fault in ("margin", "partial") else handler(r)
                if fault == "lost":
                    time.sleep(timeout_s)
                    self.close_connection = True
                    return
                self._send(200, _envelope(result))
            except VenueError as err:
                code = int(_CODES.get(err.code, err.code))
                self._send(
                    200 if err.http_status < 500 else err.http_status, _envelope({}, code, err.msg)
                )
            except (KeyError, ValueError) as err:
                self._send(200, _envelope({}, 10001, f"params error: {err}"))

        do_GET = do_POST = _handle  # noqa: N815 - stdlib names

    return H


@dataclass
class BybitStand:
    engine: Engine
    base: str

    @property
    def urls(self) -> dict[str, str]:
        return {k: self.base for k in ("spot", "futures", "v2", "public", "private")}


@contextmanager
def serve_bybit(engine: Engine, *, timeout_s: float = 0.5) -> Iterator[BybitStand]:
    """Serve on 127.0.0.1 (a free port) in a background thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(Bybit(engine), timeout_s))
    server.daemon_threads = True
    thread = Thread(target=server.serve_forever, name="bybit-standin", daemon=True)
    thread.start()
    try:
        yield BybitStand(engine, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
