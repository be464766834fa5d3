"""``CcxtExchange``: the ``Exchange`` port on ccxt's unified API (Binance USD-M, Bybit).

One instance serves one venue and one environment (``demo`` or ``live``) for many
accounts; an account is a user id whose keys come from ``keys`` (the secret store). Each
account gets its own ccxt client (ccxt clients keep per-request state), every client's
requests are host-checked against the environment, and every call goes through
``errors.call`` (the one error mapping and retry policy).

``create_order`` is idempotent on the client order id: it looks the id up first, sends
once, and after a transient failure (a response that may have been lost) looks the id up
again before anything is re-sent; a duplicate-id refusal returns the existing order. With
``claims`` (a state store shared by every instance) only one instance ever sends a given
client order id, which Binance's own duplicate check (open orders only) does not ensure.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import ccxt

from prometheus_trader.adapters.ccxt import market_data, parse
from prometheus_trader.adapters.ccxt.claims import OrderClaims
from prometheus_trader.adapters.ccxt.config import (
    Credentials,
    Env,
    LiveTradingRefused,
    allowed_hosts,
    guard_hosts,
    point_at,
    venue,
)
from prometheus_trader.adapters.ccxt.errors import (
    NotPlaced,
    OrderMissing,
    RetryPolicy,
    TransientFailure,
    call,
    is_duplicate_client_id,
    scrub,
    translate,
)
from prometheus_trader.adapters.ccxt.weight_budget import (
    DEFAULT_FRACTION,
    WeightBudget,
    install,
    shared_budget,
)
from prometheus_trader.adapters.exchange_batch import balances_one_by_one, orders_one_by_one
from prometheus_trader.domain.market import (
    TIMEFRAME_MS,
    Candle,
    FundingRate,
    Instrument,
    OpenInterest,
    Ticker,
    Trade,
)
from prometheus_trader.domain.trading import (
    Balance,
    ExchangePosition,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
)
from prometheus_trader.ports import Clock, ExchangeError, OrderRejected

_CONDITIONAL = (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET)


class _SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


class CcxtExchange:
    """``Exchange`` port over ccxt for one venue and environment."""

    def __init__(
        self,
        exchange: str,
        env: Env,
        keys: Callable[[str], Credentials],
        *,
        allow_live: bool = False,
        user_allows_live: Callable[[str], bool] = lambda _account: False,
        urls: Mapping[str, str] | None = None,
        margin_mode: str = "isolated",
        retry: RetryPolicy | None = None,
        timeout_ms: int = 10_000,
        rate_limit: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock | Any = None,
        claims: OrderClaims | None = None,
        public_only: bool = False,
        rate_limit_ms: float | None = None,
        weight_budget: WeightBudget | None = None,
        weight_budget_fraction: float = DEFAULT_FRACTION,
    ) -> None:
        self.spec = venue(exchange)
        # public_only (the collector): market data, never an account call, so the live
        # trading switch does not apply (no keys are ever loaded)
        self._public_only = public_only
        self._rate_limit_ms = rate_limit_ms  # None: ccxt's own per-venue spacing
        if env == "live" and not allow_live and not public_only:
            raise LiveTradingRefused(
                "live trading is off for this deployment (PROMETHEUS_ALLOW_LIVE=false)"
            )
        self.env: Env = env
        self._keys = keys
        self._user_allows_live = user_allows_live
        self._urls = dict(urls) if urls else None
        self._allowed = allowed_hosts(self.spec, env, self._urls)
        self._margin_mode = margin_mode
        self._retry = retry or RetryPolicy()
        self._timeout_ms = timeout_ms
        self._rate_limit = rate_limit  # ccxt's client-side throttle (off only for stand-ins)
        self._sleep = sleep
        self._clock = clock or _SystemClock()
        self._claims = claims  # one sender per client order id across processes
        self._lock = threading.RLock()
        self._clients: dict[str, tuple[Any, threading.Lock, tuple[str, ...]]] = {}
        self._prepared: dict[tuple[str, str], tuple[str, int]] = {}
        # the venue's per-IP weight budget, shared by every client of this venue and
        # environment in the process (weight_budget.py); fraction 0 = off. A client pointed
        # at overridden (loopback) URLs is not on the venue's IP budget: only an injected one
        self._budget = weight_budget
        venue_ip = self._urls is None and self.spec.ip_budget > 0
        if weight_budget is None and weight_budget_fraction > 0 and venue_ip:
            self._budget = shared_budget(
                (self.spec.exchange_id, env),
                self.spec.ip_budget * weight_budget_fraction,
                self.spec.ip_window_s,
            )
        self._public = self._new_client(None)
        self._markets: dict[str, Instrument] | None = None

    # ---------------------------------------------------------------- clients
    @property
    def exchange_id(self) -> str:
        """Our exchange name."""
        return self.spec.exchange_id

    def _new_client(self, creds: Credentials | None) -> Any:
        config: dict[str, Any] = {
            "timeout": self._timeout_ms,
            "enableRateLimit": self._rate_limit,
        }
        if creds is not None:
            config |= {"apiKey": creds.api_key, "secret": creds.secret}
            if creds.password:
                config["password"] = creds.password
        client = self.spec.new_client(config)
        if self._rate_limit_ms is not None:
            client.rateLimit = self._rate_limit_ms  # ms per unit of request weight
        if self.env == "demo":
            client.enable_demo_trading(True)
        if self._urls:
            point_at(client, self._urls)
        guard_hosts(client, self._allowed, f"{self.spec.exchange_id} {self.env}")
        if self._budget is not None:
            by_cost = self.spec.ip_weight_is_cost
            install(client, self._budget, lambda cost: cost if by_cost else 1.0)
        return client

    def _account(self, account: str) -> tuple[Any, threading.Lock, tuple[str, ...]]:
        with self._lock:
            found = self._clients.get(account)
            if found is not None:
                return found
        if self._public_only:
            raise LiveTradingRefused("this exchange instance serves market data only")
        if self.env == "live" and not self._user_allows_live(account):
            raise LiveTradingRefused(f"user {account!r} has not switched live trading on")
        creds = self._keys(account)
        if creds.env != self.env or creds.exchange != self.spec.exchange_id:
            raise LiveTradingRefused(
                f"keys of {account!r} are {creds.env} keys for {creds.exchange}, "
                f"not {self.env} keys for {self.spec.exchange_id}"
            )
        client = self._new_client(creds)
        self._load(client)
        entry = (client, threading.Lock(), (creds.api_key, creds.secret))
        with self._lock:
            return self._clients.setdefault(account, entry)

    def _load(self, client: Any) -> None:
        """Share the public client's markets (one exchangeInfo per process)."""
        self._instruments()
        client.set_markets(self._public.markets, self._public.currencies)

    def _run(
        self,
        fn: Callable[[], Any],
        *,
        placing: bool = False,
        client: Any = None,
        secrets: tuple[str, ...] = (),
        changing: bool = False,
    ) -> Any:
        return call(
            client or self._public,
            fn,
            self._retry,
            self._sleep,
            placing=placing,
            secrets=secrets,
            changing=changing,
        )

    def _private(
        self,
        account: str,
        fn: Callable[[Any], Any],
        *,
        placing: bool = False,
        changing: bool = False,
    ) -> Any:
        client, lock, secrets = self._account(account)
        with lock:  # a ccxt client is not thread-safe (last response headers, nonce)
            return self._run(
                lambda: fn(client),
                placing=placing,
                client=client,
                secrets=secrets,
                changing=changing,
            )

    # ------------------------------------------------------------ market data
    def _instruments(self) -> dict[str, Instrument]:
        with self._lock:
            if self._markets is None:
                markets = self._run(lambda: self._public.load_markets())
                out: dict[str, Instrument] = {}
                for m in markets.values():
                    if m.get("swap") and m.get("linear") and m.get("settle") == "USDT":
                        inst = parse.instrument(
                            self.spec.exchange_id, m, self.spec.default_max_leverage
                        )
                        if inst.active:
                            out[inst.symbol] = inst
                self._markets = out
            return self._markets

    def _instrument(self, symbol: str) -> Instrument:
        inst = self._instruments().get(symbol)
        if inst is None:
            raise ExchangeError(f"unknown symbol {symbol!r} on {self.spec.exchange_id}")
        return inst

    def instrument(self, symbol: str) -> Instrument:
        """One active instrument (ExchangeError if the venue has no such symbol)."""
        return self._instrument(symbol)

    def run_public(self, fn: Callable[[Any], Any]) -> Any:
        """One call on the public client through the error mapping and retry policy."""
        return self._run(lambda: fn(self._public))

    def fetch_open_interest_history(
        self, symbol: str, since_ms: int, timeframe: str = "5m", limit: int | None = None
    ) -> list[OpenInterest]:
        """Open-interest history (``MarketHistory`` port; see ``market_data``)."""
        return market_data.open_interest_history(self, symbol, since_ms, timeframe, limit)

    def fetch_funding_history(
        self, symbol: str, since_ms: int, limit: int | None = None
    ) -> list[FundingRate]:
        """Settled funding rates (``MarketHistory`` port; see ``market_data``)."""
        return market_data.funding_history(self, symbol, since_ms, limit)

    def load_markets(self) -> list[Instrument]:
        """Active USDT-settled linear perpetuals, by symbol."""
        return sorted(self._instruments().values(), key=lambda i: i.symbol)

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> list[Ticker]:
        """Latest tickers with best bid/ask where the venue serves them separately."""
        wanted = sorted(self._instruments()) if symbols is None else sorted(set(symbols))
        for s in wanted:
            self._instrument(s)
        raw = self._run(lambda: self._public.fetch_tickers(wanted))
        if self._public.has.get("fetchBidsAsks") and any(
            raw.get(s, {}).get("bid") is None for s in wanted
        ):
            books = self._run(lambda: self._public.fetch_bids_asks(wanted))
            for s, b in books.items():
                if s in raw:
                    raw[s] = {**raw[s], "bid": b.get("bid"), "ask": b.get("ask")}
        now = self._clock.now_ms()
        return [parse.ticker(self.spec.exchange_id, raw[s], now) for s in wanted if s in raw]

    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int = 1000
    ) -> list[Candle]:
        """Closed candles only: the venue's forming bar is dropped. With ``since_ms``, more
        than the venue's page (1000 bars through ccxt) is fetched page by page."""
        self._instrument(symbol)
        page = market_data.OHLCV_PAGE.get(self.spec.exchange_id, 1000) - 1
        if since_ms is not None and limit > page:
            rows = market_data.ohlcv_pages(self, symbol, timeframe, since_ms, limit, page)
        else:
            rows = self._run(
                lambda: self._public.fetch_ohlcv(symbol, timeframe, since_ms, limit + 1)
            )
        step = TIMEFRAME_MS.get(timeframe)
        now = self._clock.now_ms()
        candles = [parse.candle(self.spec.exchange_id, symbol, timeframe, r) for r in rows]
        if step is not None:
            candles = [c for c in candles if c.ts_ms + step <= now]
        if since_ms is not None:
            candles = [c for c in candles if c.ts_ms >= since_ms]
            return candles[:limit]
        return candles[-limit:]

    def fetch_funding_rate(self, symbol: str) -> FundingRate | None:
        """The venue's current funding rate."""
        self._instrument(symbol)
        return parse.funding(
            self.spec.exchange_id, self._run(lambda: self._public.fetch_funding_rate(symbol))
        )

    def fetch_open_interest(self, symbol: str) -> OpenInterest | None:
        """The venue's open interest."""
        self._instrument(symbol)
        return parse.open_interest(
            self.spec.exchange_id, self._run(lambda: self._public.fetch_open_interest(symbol))
        )

    def fetch_trades(self, symbol: str, since_ms: int, limit: int = 1000) -> list[Trade]:
        """Public trades since ``since_ms``, oldest first."""
        self._instrument(symbol)
        rows = self._run(lambda: self._public.fetch_trades(symbol, since_ms, limit))
        trades = [parse.trade(self.spec.exchange_id, t) for t in rows]
        return sorted(
            (t for t in trades if t.ts_ms >= since_ms), key=lambda t: (t.ts_ms, t.trade_id)
        )

    def poll_trades(self, symbols: Sequence[str], after_ms: int) -> list[Trade]:
        """Trades of ``symbols`` after ``after_ms`` (REST polling of the public trades)."""
        out: list[Trade] = []
        for s in symbols:
            out += [t for t in self.fetch_trades(s, after_ms + 1) if t.ts_ms > after_ms]
        return sorted(out, key=lambda t: (t.ts_ms, t.symbol, t.trade_id))

    # ----------------------------------------------------------------- account
    def fetch_balance(self, account: str) -> Balance:
        """USDT balance: equity, margin in use, unrealized PnL."""
        raw = self._private(account, lambda c: c.fetch_balance())
        usdt = raw.get("USDT") or {}
        wallet, upnl = parse.wallet_upnl(raw.get("info") or {})
        if wallet is None:
            wallet = float(usdt.get("total") or 0.0) - upnl
        return Balance(
            currency="USDT",
            wallet=wallet,
            unrealized_pnl=upnl,
            used_margin=float(usdt.get("used") or 0.0),
        )

    def fetch_positions(self, account: str) -> list[ExchangePosition]:
        """Open net positions."""
        raw = self._private(account, lambda c: c.fetch_positions())
        out = [parse.position(account, p) for p in raw]
        return sorted((p for p in out if p is not None), key=lambda p: p.symbol)

    def withdrawals_enabled(self, account: str) -> bool | None:
        """Whether the account's key may withdraw; None where the venue does not say
        (Binance reports it on the spot API only, which demo trading does not serve)."""

        def ask(c: Any) -> bool | None:
            if self.spec.ccxt_id.startswith("binance"):
                if "sapi" not in c.urls["api"]:
                    return None
                return bool(c.sapiGetAccountApiRestrictions().get("enableWithdrawals"))
            if self.spec.ccxt_id == "bybit":
                info = c.privateGetV5UserQueryApi().get("result") or {}
                wallet = (info.get("permissions") or {}).get("Wallet") or []
                return "Withdraw" in wallet
            return None

        result: bool | None = self._private(account, ask)
        return result

    # ------------------------------------------------------------------ orders
    def _params(self, conditional: bool) -> dict[str, Any]:
        return dict(self.spec.trigger_params) if conditional else {}

    def _lookup_raw(self, c: Any, request: OrderRequest, conditional: bool) -> dict[str, Any]:
        """The venue's order under ``request.client_order_id`` (ccxt's unified dict)."""
        if self.spec.ccxt_id == "bybit":
            # ccxt's bybit fetchOrder needs the exchange id; the v5 order endpoints also
            # answer by orderLinkId: open and recent orders first, then the history
            market = c.market(request.symbol)
            query = {
                "category": "linear",
                "symbol": market["id"],
                "orderLinkId": request.client_order_id,
            }
            for endpoint in (c.privateGetV5OrderRealtime, c.privateGetV5OrderHistory):
                rows = ((endpoint(query) or {}).get("result") or {}).get("list") or []
                if rows:
                    parsed: dict[str, Any] = c.parse_order(rows[0], market)
                    return parsed
            raise ccxt.OrderNotFound(f"order {request.client_order_id} not found")
        params = {**self._params(conditional), "clientOrderId": request.client_order_id}
        found: dict[str, Any] = c.fetch_order(None, request.symbol, params)
        return found

    def _to_order(self, account: str, client: Any, raw: dict[str, Any], conditional: bool) -> Order:
        """Parse; a triggered conditional order reports the fill of the order it became."""
        info = raw.get("info") or {}
        actual = info.get("actualOrderId")
        if conditional and actual and str(raw.get("status")) == "closed":
            filled = client.fetch_order(str(actual), raw["symbol"])
            raw = {
                **raw,
                "filled": filled.get("filled"),
                "average": filled.get("average"),
                "fee": filled.get("fee"),
                "lastUpdateTimestamp": filled.get("lastUpdateTimestamp"),
            }
        return parse.order(account, raw, conditional)

    def fetch_order_by_client_id(self, account: str, request: OrderRequest) -> Order | None:
        """The order placed under ``request.client_order_id``, or None if there is none."""
        conditional = request.type in _CONDITIONAL

        def fetch(c: Any) -> Order:
            return self._to_order(
                account, c, self._lookup_raw(c, request, conditional), conditional
            )

        try:
            found: Order = self._private(account, fetch)
            return found
        except OrderMissing:
            return None

    def _prepare(self, account: str, request: OrderRequest) -> None:
        """Margin mode and leverage before an opening order (cached per account/symbol)."""
        if request.leverage is None or request.reduce_only:
            return
        lev = max(1, math.ceil(request.leverage))
        key = (account, request.symbol)
        if self._prepared.get(key) == (self._margin_mode, lev):
            return

        def setup(c: Any) -> None:
            try:
                c.set_margin_mode(self._margin_mode, request.symbol)
            except (ccxt.MarginModeAlreadySet, ccxt.NoChange):
                pass  # already in this mode: what we wanted
            except ccxt.ExchangeError as exc:
                if "-4046" not in str(exc) and "not modified" not in str(exc).lower():
                    raise
            try:
                c.set_leverage(lev, request.symbol)
            except (ccxt.NoChange, ccxt.OperationRejected) as exc:
                if "not modified" not in str(exc).lower():
                    raise

        self._private(account, setup, placing=True)
        self._prepared[key] = (self._margin_mode, lev)

    def create_order(self, account: str, request: OrderRequest) -> Order:
        """Place once per client order id (see the module docstring)."""
        inst = self._instruments().get(request.symbol)
        if inst is None:
            raise OrderRejected(
                f"order {request.client_order_id}: unknown symbol {request.symbol!r}"
            )
        existing = self.fetch_order_by_client_id(account, request)
        if existing is not None:
            return existing
        if self._claims is None:
            return self._send(account, request)
        return self._claims.run(
            f"{self.spec.exchange_id}:{self.env}",
            account,
            request.client_order_id,
            lambda: self._send(account, request),
            lambda: self.fetch_order_by_client_id(account, request),
        )

    def create_orders(
        self, requests: Sequence[tuple[str, OrderRequest]]
    ) -> list[Order | OrderRejected]:
        """``create_order`` one by one: the venues' batch endpoints take one account per
        request and have their own failure modes; a refusal in its place."""
        return orders_one_by_one(self.create_order, requests)

    def fetch_balances(self, accounts: Sequence[str]) -> dict[str, Balance]:
        """``fetch_balance`` of each account (one request each), by account."""
        return balances_one_by_one(self.fetch_balance, accounts)

    def _send(self, account: str, request: OrderRequest) -> Order:
        """Send one order; after an unknown outcome, look it up before sending again."""
        self._prepare(account, request)
        conditional = request.type in _CONDITIONAL
        params: dict[str, Any] = {
            **self._params(False),
            self.spec.client_id_param: request.client_order_id,
        }
        if request.reduce_only:
            params["reduceOnly"] = True
        ccxt_type = "limit" if request.type is OrderType.LIMIT else "market"
        if conditional and self.spec.conditional_style == "sltp":
            key = "stopLossPrice" if request.type is OrderType.STOP_MARKET else "takeProfitPrice"
            params[key] = request.stop_price
        elif conditional:
            ccxt_type = request.type.value.upper()
            params["stopPrice"] = request.stop_price
        client, lock, secrets = self._account(account)
        last_error: Exception | None = None
        for attempt in range(self._retry.attempts):
            try:
                with lock:
                    raw = client.create_order(
                        request.symbol,
                        ccxt_type,
                        request.side.value,
                        request.amount,
                        request.price if request.type is OrderType.LIMIT else None,
                        params,
                    )
                    if not raw.get("side") or not raw.get("status"):
                        # an acknowledgement only (Bybit: ids): read the order itself
                        raw = self._lookup_raw(client, request, conditional)
                    order = self._to_order(account, client, raw, conditional)
                if not order.client_order_id:
                    order = order.model_copy(update={"client_order_id": request.client_order_id})
                return order
            except ccxt.BaseError as exc:
                if is_duplicate_client_id(exc):
                    found = self.fetch_order_by_client_id(account, request)
                    if found is not None:
                        return found
                err = translate(exc, client, placing=True, secrets=secrets)
                if not isinstance(err, TransientFailure):
                    if isinstance(err, OrderRejected):
                        raise OrderRejected(f"order {request.client_order_id}: {err}") from None
                    raise err from None
                last_error = err
                if attempt + 1 < self._retry.attempts:
                    self._sleep(self._retry.wait_after(attempt, err))
                # the request may have been applied with its answer lost: look before resending
                found = self.fetch_order_by_client_id(account, request)
                if found is not None:
                    return found
        raise NotPlaced(
            f"order {request.client_order_id} not placed after {self._retry.attempts} attempts: "
            f"{last_error}"
        )

    def fetch_order(self, account: str, order_id: str) -> Order:
        """One order by our id."""
        ex_id, symbol, conditional = parse.decode_order_id(order_id)

        def fetch(c: Any) -> Order:
            params = {**self.spec.fetch_params, **self._params(conditional)}
            return self._to_order(account, c, c.fetch_order(ex_id, symbol, params), conditional)

        try:
            found: Order = self._private(account, fetch)
            return found
        except OrderMissing:
            raise ExchangeError(f"order {order_id!r} not found") from None

    def fetch_open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        """Resting orders, plain and conditional."""

        def fetch(c: Any) -> list[Order]:
            plain = c.fetch_open_orders(symbol, None, None, dict(self.spec.plain_params))
            out = [parse.order(account, o, False) for o in plain]
            out += [
                parse.order(account, o, True)
                for o in c.fetch_open_orders(symbol, None, None, self._params(True))
            ]
            return out

        orders: list[Order] = self._private(account, fetch)
        return sorted(orders, key=lambda o: (o.created_ms, o.id))

    def fetch_open_orders_on(self, account: str, symbols: Collection[str]) -> list[Order]:
        """Resting orders on ``symbols``: one listing per symbol while that weighs less
        than one account-wide listing (``VenueSpec.account_listing_weight``), else the
        account's listing kept to ``symbols``."""
        if not symbols:
            return []
        if len(symbols) >= self.spec.account_listing_weight:
            wanted = set(symbols)
            return [o for o in self.fetch_open_orders(account) if o.symbol in wanted]
        orders = [o for symbol in sorted(symbols) for o in self.fetch_open_orders(account, symbol)]
        return sorted(orders, key=lambda o: (o.created_ms, o.id))

    def cancel_order(self, account: str, order_id: str) -> Order:
        """Cancel; a filled or already cancelled order is returned as it is."""
        ex_id, symbol, conditional = parse.decode_order_id(order_id)
        try:
            self._private(
                account,
                lambda c: c.cancel_order(ex_id, symbol, self._params(conditional)),
                changing=True,  # an unknown outcome: cancelling again is harmless
            )
        except OrderMissing:
            pass  # not resting any more (filled, cancelled): report its state below
        except ExchangeError as exc:
            if "-2011" not in str(exc) and "Unknown order" not in str(exc):
                raise
        order = self.fetch_order(account, order_id)
        if order.status is OrderStatus.OPEN:
            raise ExchangeError(f"order {order_id} is still open after cancel")
        return order


__all__ = ["CcxtExchange", "scrub"]
