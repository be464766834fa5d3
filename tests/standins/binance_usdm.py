"""A local Binance USD-M futures REST stand-in (the subset ccxt's ``binanceusdm`` calls).

It speaks Binance's own JSON (field names and string-encoded numbers as the exchange sends
them), checks the ``X-MBX-APIKEY`` header, the HMAC-SHA256 ``signature`` over the query
string plus body and the ``timestamp``/``recvWindow`` window, and refuses a duplicate
client order id with -4116. Conditional orders (STOP_MARKET / TAKE_PROFIT_MARKET) go
through the algo-order endpoints as on Binance since late 2025. Faults from the engine's
plan hit order-changing requests (POST/DELETE order and algoOrder).

Use: ``with serve_binance(keys) as stand: ...``; ``stand.urls`` is what to put in
``exchange.urls['api']``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_trader.domain.market import TIMEFRAME_MS
from tests.standins.engine import Engine, Order, VenueError

Handler = Callable[["Request"], Any]


@dataclass
class Request:
    """A parsed request: method, path, merged params, the authenticated account."""

    method: str
    path: str
    params: dict[str, str]
    account: str = ""


def market_id(symbol: str) -> str:
    """``BTC/USDT:USDT`` → ``BTCUSDT``."""
    base, rest = symbol.split("/")
    return base + rest.split(":")[0]


def _num(x: float) -> str:
    return format(x, ".10f").rstrip("0").rstrip(".") or "0"


class BinanceUsdm:
    """The route table over an ``Engine``."""

    def __init__(
        self,
        engine: Engine,
        *,
        timeout_s: float = 0.5,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        seed: int = 0,
        nodelay: bool = True,
    ) -> None:
        self.engine = engine
        # TCP_NODELAY on the answers (default): http.server writes the headers and the
        # body in two sends, so with Nagle on, the body waits for the client's delayed ACK
        # (~40 ms on Linux loopback) and every request takes ~44 ms, which no real venue
        # adds (the fault-injection acceptance runs took 4-6x longer with it)
        self.nodelay = nodelay
        self.timeout_s = timeout_s  # how long a "timeout"/"lost" fault holds the response
        # a venue's round trip: every request waits latency_s plus a seeded uniform
        # [0, jitter_s) before it is handled (0: answer at once). Mutable: a run may open
        # positions fast and then slow the venue down
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.by_id = {market_id(s): s for s in engine.instruments}
        e = engine
        self.public: dict[tuple[str, str], Handler] = {
            ("GET", "/fapi/v1/time"): lambda r: {"serverTime": int(time.time() * 1000)},
            ("GET", "/fapi/v1/ping"): lambda r: {},
            ("GET", "/fapi/v1/exchangeInfo"): self.exchange_info,
            ("GET", "/fapi/v1/ticker/24hr"): self.ticker_24hr,
            ("GET", "/fapi/v1/ticker/bookTicker"): self.book_ticker,
            ("GET", "/fapi/v1/klines"): self.klines,
            ("GET", "/fapi/v1/premiumIndex"): self.premium_index,
            ("GET", "/fapi/v1/fundingRate"): self.funding_history,
            ("GET", "/fapi/v1/openInterest"): self.open_interest,
            ("GET", "/fapi/v1/aggTrades"): self.agg_trades,
            ("GET", "/futures/data/openInterestHist"): self.open_interest_hist,
        }
        self.private: dict[tuple[str, str], Handler] = {
            ("POST", "/fapi/v1/order"): self.new_order,
            ("GET", "/fapi/v1/order"): self.get_order,
            ("DELETE", "/fapi/v1/order"): self.cancel_order,
            ("POST", "/fapi/v1/algoOrder"): self.new_order,
            ("GET", "/fapi/v1/algoOrder"): self.get_order,
            ("DELETE", "/fapi/v1/algoOrder"): self.cancel_order,
            ("GET", "/fapi/v1/openOrders"): lambda r: self.open_orders(r, False),
            ("GET", "/fapi/v1/openAlgoOrders"): lambda r: self.open_orders(r, True),
            ("GET", "/fapi/v1/allOrders"): self.all_orders,
            ("GET", "/fapi/v2/positionRisk"): self.position_risk,
            ("GET", "/fapi/v3/positionRisk"): self.position_risk,
            ("GET", "/fapi/v2/balance"): self.balance,
            ("GET", "/fapi/v3/balance"): self.balance,
            ("GET", "/fapi/v2/account"): self.account_info,
            ("GET", "/fapi/v3/account"): self.account_info,
            ("POST", "/fapi/v1/leverage"): self.leverage,
            ("POST", "/fapi/v1/marginType"): self.margin_type,
            ("GET", "/fapi/v1/leverageBracket"): self.leverage_bracket,
            ("GET", "/sapi/v1/account/apiRestrictions"): self.api_restrictions,
        }
        del e

    # ---------------------------------------------------------------- plumbing
    def delay_s(self) -> float:
        """This request's wait (latency plus its jitter draw)."""
        if self.jitter_s <= 0:
            return self.latency_s
        with self._rng_lock:
            return self.latency_s + self._rng.uniform(0.0, self.jitter_s)

    def _symbol(self, r: Request) -> str:
        sid = r.params.get("symbol", "")
        if sid not in self.by_id:
            raise VenueError("-1121", "Invalid symbol.")
        return self.by_id[sid]

    def authenticate(self, r: Request, api_key: str | None, query: str, body: str) -> None:
        secret = self.engine.keys.get(api_key or "")
        if secret is None:
            raise VenueError("-2015", "Invalid API-key, IP, or permissions for action.", 401)
        given = r.params.get("signature", "")
        # Binance signs totalParams = query string + body; the signature itself is appended
        payload = re.sub(r"&?signature=[0-9a-fA-F]*", "", query + body)
        want = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, given):
            raise VenueError("-1022", "Signature for this request is not valid.")
        ts = int(r.params.get("timestamp", "0"))
        window = int(r.params.get("recvWindow", "5000"))
        now = int(time.time() * 1000)
        if not (now - window <= ts <= now + 1000):
            raise VenueError("-1021", "Timestamp for this request is outside of the recvWindow.")
        r.account = api_key or ""

    # ------------------------------------------------------------- market data
    def exchange_info(self, r: Request) -> Any:
        symbols = []
        for s, inst in sorted(self.engine.instruments.items()):
            symbols.append(
                {
                    "symbol": market_id(s),
                    "pair": market_id(s),
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "baseAsset": inst.base,
                    "quoteAsset": inst.quote,
                    "marginAsset": inst.settle or inst.quote,
                    "pricePrecision": 8,
                    "quantityPrecision": 8,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "settlePlan": 0,
                    "triggerProtect": "0.0500",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _num(inst.price_step),
                            "maxPrice": "4529764",
                            "tickSize": _num(inst.price_step),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "stepSize": _num(inst.amount_step),
                            "maxQty": "1000000",
                            "minQty": _num(inst.amount_step),
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "stepSize": _num(inst.amount_step),
                            "maxQty": "1000000",
                            "minQty": _num(inst.amount_step),
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": _num(inst.min_notional)},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "futuresType": "U_MARGINED",
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [],
            "symbols": symbols,
        }

    def _ticker(self, symbol: str) -> dict[str, Any]:
        now = self.engine.now_ms
        bars = self.engine.bars(symbol, now - 86_400_000, now)
        last, first = float(bars.close[-1]), float(bars.open[0])
        return {
            "symbol": market_id(symbol),
            "priceChange": _num(last - first),
            "priceChangePercent": _num(round((last / first - 1) * 100, 3)),
            "weightedAvgPrice": _num(last),
            "lastPrice": _num(last),
            "lastQty": "0.001",
            "openPrice": _num(first),
            "highPrice": _num(float(bars.high.max())),
            "lowPrice": _num(float(bars.low.min())),
            "volume": _num(float(bars.volume.sum())),
            "quoteVolume": _num(float((bars.close * bars.volume).sum())),
            "openTime": int(bars.ts_ms[0]),
            "closeTime": int(bars.ts_ms[-1]) + 59_999,
            "firstId": 1,
            "lastId": 2,
            "count": len(bars),
        }

    def ticker_24hr(self, r: Request) -> Any:
        if "symbol" in r.params:
            return self._ticker(self._symbol(r))
        return [self._ticker(s) for s in sorted(self.engine.instruments)]

    def book_ticker(self, r: Request) -> Any:
        def one(s: str) -> dict[str, Any]:
            last, step = self.engine.last_price(s), self.engine.instruments[s].price_step
            return {
                "symbol": market_id(s),
                "bidPrice": _num(last - step),
                "bidQty": "1",
                "askPrice": _num(last + step),
                "askQty": "1",
                "time": self.engine.now_ms,
            }

        if "symbol" in r.params:
            return one(self._symbol(r))
        return [one(s) for s in sorted(self.engine.instruments)]

    def klines(self, r: Request) -> Any:
        symbol = self._symbol(r)
        interval = r.params.get("interval", "1m")
        if interval not in TIMEFRAME_MS:
            raise VenueError("-1120", "Invalid interval.")
        step = TIMEFRAME_MS[interval]
        now = self.engine.now_ms
        limit = int(r.params.get("limit", "500"))
        start = int(r.params.get("startTime", now - limit * step))
        start -= start % step
        end = min(int(r.params.get("endTime", now)), now)
        bars = self.engine.served_bars(symbol, start, end)
        if interval != "1m":
            bars = bars.resample(interval)
        rows = []
        for i in range(len(bars))[:limit]:
            ts = int(bars.ts_ms[i])
            rows.append(
                [
                    ts,
                    _num(float(bars.open[i])),
                    _num(float(bars.high[i])),
                    _num(float(bars.low[i])),
                    _num(float(bars.close[i])),
                    _num(float(bars.volume[i])),
                    ts + step - 1,
                    _num(float(bars.close[i] * bars.volume[i])),
                    100,
                    "0",
                    "0",
                    "0",
                ]
            )
        return rows

    def premium_index(self, r: Request) -> Any:
        symbol = self._symbol(r)
        now = self.engine.now_ms
        rates = self.engine.market.funding(symbol, now - 86_400_000, now)
        rate = rates[-1].rate if rates else 0.0
        last = self.engine.last_price(symbol)
        return {
            "symbol": market_id(symbol),
            "markPrice": _num(last),
            "indexPrice": _num(last),
            "estimatedSettlePrice": _num(last),
            "lastFundingRate": _num(rate),
            "interestRate": "0.00010000",
            "nextFundingTime": now - now % 28_800_000 + 28_800_000,
            "time": now,
        }

    def funding_history(self, r: Request) -> Any:
        symbol = self._symbol(r)
        now = self.engine.now_ms
        start = int(r.params.get("startTime", now - 7 * 86_400_000))
        end = min(int(r.params.get("endTime", now)), now)
        rates = self.engine.market.funding(symbol, start, end)[: int(r.params.get("limit", 100))]
        return [
            {
                "symbol": market_id(symbol),
                "fundingTime": f.ts_ms,
                "fundingRate": _num(f.rate),
                "markPrice": "",
            }
            for f in rates
        ]

    def open_interest(self, r: Request) -> Any:
        symbol = self._symbol(r)
        # the sample has no recorded open interest: a stated proxy (24 h volume)
        return {
            "symbol": market_id(symbol),
            "openInterest": _num(self.engine.open_interest_proxy(symbol, self.engine.now_ms)),
            "time": self.engine.now_ms,
        }

    def open_interest_hist(self, r: Request) -> Any:
        """``/futures/data/openInterestHist``: one point per ``period`` boundary (the same
        24 h-volume proxy as ``openInterest``), oldest first, at most ``limit`` (≤ 500)."""
        symbol = self._symbol(r)
        period = r.params.get("period", "")
        if period not in ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"):
            raise VenueError("-1130", "Invalid data sent for a parameter.")
        step = TIMEFRAME_MS.get(period) or {"30m": 1_800_000, "2h": 7_200_000}.get(
            period, int(period[:-1]) * 3_600_000
        )
        limit = min(int(r.params.get("limit", "30")), 500)
        now = self.engine.now_ms
        end = min(int(r.params.get("endTime", now)), now)
        start = int(r.params.get("startTime", end - limit * step))
        first = start + (-start) % step
        out = []
        for ts in range(first, end + 1, step):
            amount = self.engine.open_interest_proxy(symbol, ts)
            out.append(
                {
                    "symbol": market_id(symbol),
                    "sumOpenInterest": _num(amount),
                    "sumOpenInterestValue": _num(amount * self._close_before(symbol, ts)),
                    "CMCCirculatingSupply": "0",
                    "timestamp": ts,
                }
            )
        return out[:limit]

    def _close_before(self, symbol: str, ts: int) -> float:
        bars = self.engine.bars(symbol, ts - 3_600_000, ts)
        return float(bars.close[-1]) if len(bars) else 0.0

    def agg_trades(self, r: Request) -> Any:
        symbol = self._symbol(r)
        now = self.engine.now_ms
        start = int(r.params.get("startTime", now - 3_600_000))
        bars = self.engine.bars(symbol, start - start % 60_000, now)
        out = []
        for i in range(len(bars)):
            ts = int(bars.ts_ms[i])
            if ts >= start:
                out.append(
                    {
                        "a": ts // 1000,
                        "p": _num(float(bars.close[i])),
                        "q": _num(float(bars.volume[i])),
                        "f": 1,
                        "l": 1,
                        "T": ts + 59_000,
                        "m": bool(bars.close[i] < bars.open[i]),
                    }
                )
        return out[: int(r.params.get("limit", "500"))]

    # ------------------------------------------------------------------- orders
    def order_json(self, o: Order) -> dict[str, Any]:
        if o.conditional:
            out: dict[str, Any] = {
                "algoId": o.id,
                "clientAlgoId": o.client_id,
                "algoType": "CONDITIONAL",
                "orderType": o.type,
                "symbol": market_id(o.symbol),
                "side": o.side,
                "positionSide": "BOTH",
                "timeInForce": "GTC",
                "quantity": _num(o.qty),
                "algoStatus": {"NEW": "NEW"}.get(o.status, o.status),
                "triggerPrice": _num(o.trigger or 0),
                "price": "0",
                "icebergQuantity": None,
                "selfTradePreventionMode": "EXPIRE_MAKER",
                "workingType": "CONTRACT_PRICE",
                "priceMatch": "NONE",
                "closePosition": False,
                "priceProtect": False,
                "reduceOnly": o.reduce_only,
                "createTime": o.created_ms,
                "updateTime": o.updated_ms,
                "triggerTime": 0,
                "goodTillDate": 0,
            }
            if o.actual_order_id is not None:
                out["actualOrderId"] = str(o.actual_order_id)
                out["actualPrice"] = _num(self.engine.orders[o.actual_order_id].avg)
            return out
        return {
            "orderId": o.id,
            "symbol": market_id(o.symbol),
            "status": o.status,
            "clientOrderId": o.client_id,
            "price": _num(o.price or 0),
            "avgPrice": _num(o.avg),
            "origQty": _num(o.qty),
            "executedQty": _num(o.filled),
            "cumQty": _num(o.filled),
            "cumQuote": _num(o.filled * o.avg),
            "timeInForce": "GTC",
            "type": o.type,
            "reduceOnly": o.reduce_only,
            "closePosition": False,
            "side": o.side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": o.type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": o.created_ms,
            "updateTime": o.updated_ms,
        }

    def new_order(self, r: Request, fault: str | None = None) -> Any:
        p = r.params
        algo = r.path.endswith("algoOrder")
        kind = p.get("type", "")
        if algo != (kind in ("STOP_MARKET", "TAKE_PROFIT_MARKET")):
            raise VenueError("-4120", "Order type not supported for this endpoint.")
        spec = {
            "symbol": self._symbol(r),
            "side": p.get("side"),
            "type": kind,
            "qty": p.get("quantity", "0"),
            "client_id": p.get("clientAlgoId" if algo else "newClientOrderId")
            or f"x-{time.time_ns()}",
            "price": float(p["price"]) if "price" in p and kind == "LIMIT" else None,
            "trigger": float(p["triggerPrice"]) if "triggerPrice" in p else None,
            "reduce_only": p.get("reduceOnly", "false").lower() == "true",
        }
        return self.order_json(self.engine.place(r.account, spec, fault))

    def _lookup(self, r: Request) -> Order:
        algo = "algo" in r.path.lower()
        p = r.params
        oid = p.get("algoId") if algo else p.get("orderId")
        cid = p.get("clientAlgoId") if algo else p.get("origClientOrderId")
        if oid is None and cid is None:
            raise VenueError("-1102", "Mandatory parameter 'orderid' was not sent.")
        return self.engine.find(
            r.account, order_id=int(oid) if oid else None, client_id=cid, conditional=algo
        )

    def get_order(self, r: Request) -> Any:
        return self.order_json(self._lookup(r))

    def cancel_order(self, r: Request, fault: str | None = None) -> Any:
        o = self.engine.cancel(self._lookup(r))
        if o.conditional:
            return {"algoId": o.id, "clientAlgoId": o.client_id, "code": "200", "msg": "success"}
        return self.order_json(o)

    def open_orders(self, r: Request, algo: bool) -> Any:
        symbol = self._symbol(r) if "symbol" in r.params else None
        return [
            self.order_json(o)
            for o in self.engine.live_orders(r.account)
            if o.conditional == algo and symbol in (None, o.symbol)
        ]

    def all_orders(self, r: Request) -> Any:
        symbol = self._symbol(r)
        with self.engine.lock:
            return [
                self.order_json(o)
                for o in self.engine.orders.values()
                if o.account == r.account and o.symbol == symbol and not o.conditional
            ]

    # ---------------------------------------------------------------- account
    def position_risk(self, r: Request) -> Any:
        out = []
        acct = self.engine.account(r.account)
        for s, (q, entry) in self.engine.positions(r.account).items():
            mark = self.engine.last_price(s)
            lev = acct.leverage.get(s, 20)
            out.append(
                {
                    "symbol": market_id(s),
                    "positionSide": "BOTH",
                    "positionAmt": _num(q),
                    "entryPrice": _num(entry),
                    "breakEvenPrice": _num(entry),
                    "markPrice": _num(mark),
                    "unRealizedProfit": _num(q * (mark - entry)),
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": _num(q * mark),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": _num(abs(q) * mark / lev),
                    "maintMargin": "0",
                    "positionInitialMargin": _num(abs(q) * mark / lev),
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": self.engine.now_ms,
                    "leverage": str(lev),
                    "marginType": acct.margin_mode.get(s, "cross"),
                }
            )
        return out

    def _usdt(self, r: Request) -> dict[str, Any]:
        acct = self.engine.account(r.account)
        upnl = self.engine._upnl(r.account)
        avail = self.engine._available(r.account)
        return {
            "accountAlias": "SgsR",
            "asset": "USDT",
            "balance": _num(acct.wallet),
            "crossWalletBalance": _num(acct.wallet),
            "crossUnPnl": _num(upnl),
            "availableBalance": _num(avail),
            "maxWithdrawAmount": _num(avail),
            "marginAvailable": True,
            "updateTime": self.engine.now_ms,
            "walletBalance": _num(acct.wallet),
            "unrealizedProfit": _num(upnl),
            "marginBalance": _num(acct.wallet + upnl),
            "initialMargin": _num(acct.wallet + upnl - avail),
        }

    def balance(self, r: Request) -> Any:
        return [self._usdt(r)]

    def account_info(self, r: Request) -> Any:
        u = self._usdt(r)
        return {
            "totalInitialMargin": u["initialMargin"],
            "totalMaintMargin": "0",
            "totalWalletBalance": u["walletBalance"],
            "totalUnrealizedProfit": u["unrealizedProfit"],
            "totalMarginBalance": u["marginBalance"],
            "totalPositionInitialMargin": u["initialMargin"],
            "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": u["walletBalance"],
            "totalCrossUnPnl": u["unrealizedProfit"],
            "availableBalance": u["availableBalance"],
            "maxWithdrawAmount": u["maxWithdrawAmount"],
            "assets": [u],
            "positions": [],
        }

    def leverage(self, r: Request) -> Any:
        symbol = self._symbol(r)
        lev = int(r.params.get("leverage", "0"))
        if not 1 <= lev <= 125:
            raise VenueError("-4028", "Leverage is not valid.")
        self.engine.account(r.account).leverage[symbol] = lev
        return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": market_id(symbol)}

    def leverage_bracket(self, r: Request) -> Any:
        symbols = [self._symbol(r)] if "symbol" in r.params else sorted(self.engine.instruments)
        return [
            {
                "symbol": market_id(s),
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": int(self.engine.instruments[s].max_leverage),
                        "notionalCap": 50_000,
                        "notionalFloor": 0,
                        "maintMarginRatio": 0.004,
                        "cum": 0.0,
                    },
                    {
                        "bracket": 2,
                        "initialLeverage": 10,
                        "notionalCap": 1_000_000,
                        "notionalFloor": 50_000,
                        "maintMarginRatio": 0.01,
                        "cum": 300.0,
                    },
                ],
            }
            for s in symbols
        ]

    def margin_type(self, r: Request) -> Any:
        symbol = self._symbol(r)
        mode = r.params.get("marginType", "").lower()
        acct = self.engine.account(r.account)
        if acct.margin_mode.get(symbol, "cross") == mode:
            raise VenueError("-4046", "No need to change margin type.")
        acct.margin_mode[symbol] = mode
        return {"code": 200, "msg": "success"}

    def api_restrictions(self, r: Request) -> Any:
        return {
            "ipRestrict": False,
            "createTime": 1698645219000,
            "enableReading": True,
            "enableWithdrawals": r.account in self.engine.withdraw_keys,
            "enableInternalTransfer": False,
            "enableMargin": False,
            "enableSpotAndMarginTrading": False,
            "enableFutures": True,
            "permitsUniversalTransfer": False,
            "enableVanillaOptions": False,
            "enablePortfolioMarginTrading": False,
        }


ORDER_CHANGING = {"/fapi/v1/order", "/fapi/v1/algoOrder"}


def _make_handler(venue: BinanceUsdm) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = venue.nodelay

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
                self.close_connection = True  # the client gave up waiting (its timeout)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            params.update(parse_qsl(body, keep_blank_values=True))
            r = Request(self.command, parts.path, params)
            engine = venue.engine
            wait = venue.delay_s()
            if wait > 0:  # the round trip (handled after it: a slow venue's answer)
                time.sleep(wait)
            with engine.lock:
                engine.requests.append((self.command, parts.path))
            key = (self.command, parts.path)
            try:
                if key in venue.public:
                    with engine.lock:
                        engine.market_requests.append((time.monotonic(), parts.path, params))
                        fault = engine.market_faults.draw()
                    if fault == "429":  # the venue's answer to too many requests
                        self._send(
                            429,
                            {"code": -1003, "msg": "Too many requests; please use websocket."},
                            {"Retry-After": str(engine.market_faults.retry_after_s)},
                        )
                        return
                    self._send(200, venue.public[key](r))
                    return
                if key not in venue.private:
                    self._send(404, {"code": -5000, "msg": f"Path {parts.path} not found"})
                    return
                venue.authenticate(r, self.headers.get("X-MBX-APIKEY"), parts.query, body)
                fault = None
                if parts.path in ORDER_CHANGING and self.command in ("POST", "DELETE"):
                    with engine.lock:
                        fault = engine.faults.draw()
                        if fault:
                            engine.log.append(
                                {
                                    "seq": len(engine.log),
                                    "action": "fault",
                                    "fault": fault,
                                    "path": parts.path,
                                    "method": self.command,
                                    "account": r.account,
                                }
                            )
                if fault == "429":
                    self._send(
                        429,
                        {
                            "code": -1003,
                            "msg": "Too many requests; current limit of "
                            "IP is 2400 requests per minute.",
                        },
                        {"Retry-After": str(engine.faults.retry_after_s)},
                    )
                    return
                if fault == "418":
                    self._send(
                        418,
                        {"code": -1003, "msg": "Way too many requests; IP banned."},
                        {"Retry-After": str(engine.faults.retry_after_s)},
                    )
                    return
                if fault == "5xx":
                    self._send(
                        503,
                        {
                            "code": -1001,
                            "msg": "Internal error; unable to process "
                            "your request. Please try again.",
                        },
                    )
                    return
                if fault == "timeout":  # nothing done; the client gives up waiting
                    time.sleep(venue.timeout_s)
                    self._send(503, {"code": -1007, "msg": "Timeout waiting for response."})
                    return
                handler = venue.private[key]
                if parts.path in ORDER_CHANGING and self.command in ("POST", "DELETE"):
                    result = handler(r, fault) if fault in ("margin", "partial") else handler(r)
                else:
                    result = handler(r)
                if fault == "lost":  # done on the exchange, but the answer never arrives
                    time.sleep(venue.timeout_s)
                    self.close_connection = True
                    return
                self._send(200, result)
            except VenueError as err:
                self._send(err.http_status, {"code": int(err.code), "msg": err.msg})
            except (KeyError, ValueError) as err:
                self._send(400, {"code": -1102, "msg": f"Bad parameter: {err}"})

        do_GET = do_POST = do_DELETE = do_PUT = _handle  # noqa: N815 - stdlib names

    return H


@dataclass
class Stand:
    """A running stand-in: its engine, base URL and the ccxt ``urls['api']`` mapping."""

    engine: Engine
    base: str
    venue: BinanceUsdm

    @property
    def urls(self) -> dict[str, str]:
        b = self.base
        return {
            "fapiPublic": f"{b}/fapi/v1",
            "fapiPublicV2": f"{b}/fapi/v2",
            "fapiPublicV3": f"{b}/fapi/v3",
            "fapiPrivate": f"{b}/fapi/v1",
            "fapiPrivateV2": f"{b}/fapi/v2",
            "fapiPrivateV3": f"{b}/fapi/v3",
            "fapiData": f"{b}/futures/data",
            "sapi": f"{b}/sapi/v1",
            "public": f"{b}/api/v3",
            "private": f"{b}/api/v3",
        }


@contextmanager
def serve_binance(
    engine: Engine,
    *,
    timeout_s: float = 0.5,
    latency_s: float = 0.0,
    jitter_s: float = 0.0,
    seed: int = 0,
    nodelay: bool = True,
) -> Iterator[Stand]:
    """Serve the stand-in on 127.0.0.1 (a free port) in a background thread; every
    request waits ``latency_s`` (+ seeded jitter up to ``jitter_s``) first; ``nodelay``:
    answers without Nagle's wait for the client's delayed ACK (see ``BinanceUsdm``)."""
    venue = BinanceUsdm(
        engine,
        timeout_s=timeout_s,
        latency_s=latency_s,
        jitter_s=jitter_s,
        seed=seed,
        nodelay=nodelay,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(venue))
    server.daemon_threads = True
    thread = Thread(target=server.serve_forever, name="binance-standin", daemon=True)
    thread.start()
    try:
        yield Stand(engine, f"http://127.0.0.1:{server.server_address[1]}", venue)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
