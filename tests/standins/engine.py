"""Venue-neutral core of the exchange stand-ins: recorded market data, accounts, an order
book with resting limits and conditional (stop / take-profit) orders, an append-only order
log and a fault plan. The HTTP layers (``binance_usdm``, ``bybit``) only translate wire
formats; every rule lives here once.

Prices come from the bundled sample store (real Binance USD-M 1m bars): the stand-in's
market clock ``now_ms`` is set by the test; a market order fills at the last closed bar's
close, a resting order or trigger fires when a later bar trades through its price.
"""

from __future__ import annotations

import functools
import itertools
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import prometheus_trader.sample
from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.domain.market import (
    MINUTE_MS,
    CandleSeries,
    FundingRate,
    Instrument,
    MarketType,
)
from prometheus_trader.ports import SeriesKey

SAMPLE_STORE = Path(prometheus_trader.sample.__file__).parent / "store"
# 2025-05-21 06:00:30 UTC: inside the bundled sample's recorded range
DEFAULT_NOW_MS = int(datetime(2025, 5, 21, 6, 0, 30, tzinfo=UTC).timestamp() * 1000)
FAULT_KINDS = ("429", "418", "5xx", "timeout", "lost", "margin", "partial")


class VenueError(Exception):
    """A business rejection the HTTP layer renders in the venue's own error format."""

    def __init__(self, code: str, msg: str, http_status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.http_status = code, msg, http_status


@dataclass
class Order:
    """One order as the stand-in keeps it (venue-neutral)."""

    id: int
    account: str
    symbol: str  # ccxt unified symbol
    side: str  # BUY / SELL
    type: str  # MARKET LIMIT STOP_MARKET TAKE_PROFIT_MARKET
    qty: float
    client_id: str
    price: float | None = None
    trigger: float | None = None
    reduce_only: bool = False
    status: str = "NEW"  # NEW PARTIALLY_FILLED FILLED CANCELED EXPIRED FINISHED
    filled: float = 0.0
    avg: float = 0.0
    created_ms: int = 0
    updated_ms: int = 0
    actual_order_id: int | None = None  # the market order a triggered stop became

    @property
    def conditional(self) -> bool:
        return self.type in ("STOP_MARKET", "TAKE_PROFIT_MARKET")

    @property
    def live(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")


@dataclass
class Account:
    """One API key's account: wallet, net positions, leverage and margin mode by symbol."""

    wallet: float
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)  # signed qty, entry
    leverage: dict[str, int] = field(default_factory=dict)
    margin_mode: dict[str, str] = field(default_factory=dict)


@dataclass
class FaultPlan:
    """Faults injected on order-changing requests: queued ones first, then at ``rate``."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 7
    queue: list[str] = field(default_factory=list)
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        if self.queue:
            return self.queue.pop(0)
        if self.rate and self._rng.random() < self.rate:
            return self._rng.choice(self.kinds)
        return None


@dataclass(frozen=True)
class RecordedMarket:
    """The bundled sample: store, instruments and every symbol's 1m bars in memory."""

    store: DuckDBMarketStore
    instruments: dict[str, Instrument]
    series: dict[str, CandleSeries]
    funding_rates: dict[str, list[FundingRate]]

    def funding(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingRate]:
        """Recorded funding rates in [start_ms, end_ms]."""
        return [f for f in self.funding_rates[symbol] if start_ms <= f.ts_ms <= end_ms]

    def bars(self, symbol: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Bars with ``start_ms <= ts`` that closed by ``end_ms``."""
        s = self.series[symbol]
        lo = int(np.searchsorted(s.ts_ms, start_ms, side="left"))
        hi = int(np.searchsorted(s.ts_ms, end_ms - MINUTE_MS, side="right"))
        sl = slice(lo, max(lo, hi))
        return CandleSeries(
            s.symbol,
            s.timeframe,
            s.ts_ms[sl],
            s.open[sl],
            s.high[sl],
            s.low[sl],
            s.close[sl],
            s.volume[sl],
            s.taker_buy_volume[sl],
        )


@functools.cache
def recorded_market() -> RecordedMarket:
    """The bundled sample store and its instruments (precision inferred as the replay
    exchange does), loaded once per process."""
    store = DuckDBMarketStore(SAMPLE_STORE)
    clock = SimulatedClock(datetime.fromtimestamp(DEFAULT_NOW_MS / 1000, UTC))
    instruments = {i.symbol: i for i in ReplayExchange(store, clock).load_markets()}
    series, funding = {}, {}
    for symbol in instruments:
        key = SeriesKey("binance", MarketType.PERP, symbol)
        first, last = store.candle_range(key, "1m") or (0, 0)
        series[symbol] = store.candles(key, "1m", first, last + MINUTE_MS)
        funding[symbol] = store.funding(key, first, last + MINUTE_MS)
    return RecordedMarket(store, instruments, series, funding)


class Engine:
    """Accounts, orders and recorded prices behind every stand-in; thread-safe."""

    def __init__(
        self,
        *,
        keys: dict[str, str],
        now_ms: int = DEFAULT_NOW_MS,
        starting_balance: float = 10_000.0,
        slippage_bps: float = 2.0,
        duplicate_scope: str = "open",
        withdraw_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.lock = threading.RLock()
        self.keys = dict(keys)  # api key -> secret (the key is also the account name)
        self.withdraw_keys = withdraw_keys
        self.now_ms = now_ms
        self.slippage = slippage_bps / 10_000
        # Binance documents newClientOrderId as unique among open orders; "all" also refuses
        # reusing the id of a finished order (Bybit's orderLinkId behaviour)
        self.duplicate_scope = duplicate_scope
        self.starting_balance = starting_balance
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, Order] = {}
        self.log: list[dict[str, Any]] = []  # append-only: every accepted change, in order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request seen
        self.faults = FaultPlan()
        # market data (issue 9 collectors): faults on public GETs, their arrival times, and
        # 1m bar ranges the venue does not serve (a gap its klines skip, as after an outage)
        self.market_faults = FaultPlan()
        self.market_requests: list[tuple[float, str, dict[str, str]]] = []
        self.dropped_bars: dict[str, list[tuple[int, int]]] = {}
        self._ids = itertools.count(8_389_765_000)
        self.market = recorded_market()
        self.store = self.market.store
        self.instruments: dict[str, Instrument] = dict(self.market.instruments)

    # ---------------------------------------------------------------- market data
    def key(self, symbol: str) -> SeriesKey:
        return SeriesKey("binance", MarketType.PERP, symbol)

    def bars(self, symbol: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Recorded 1m bars closed by ``end_ms``."""
        if symbol not in self.instruments:
            raise VenueError("-1121", "Invalid symbol.")
        return self.market.bars(symbol, start_ms, end_ms)

    def served_bars(self, symbol: str, start_ms: int, end_ms: int) -> CandleSeries:
        """``bars()`` less the ranges in ``dropped_bars`` (what the klines endpoints serve)."""
        bars = self.bars(symbol, start_ms, end_ms)
        holes = self.dropped_bars.get(symbol)
        if not holes:
            return bars
        keep = np.ones(len(bars), dtype=bool)
        for lo, hi in holes:  # [lo, hi) open times
            keep &= ~((bars.ts_ms >= lo) & (bars.ts_ms < hi))
        return CandleSeries(
            bars.symbol,
            bars.timeframe,
            bars.ts_ms[keep],
            bars.open[keep],
            bars.high[keep],
            bars.low[keep],
            bars.close[keep],
            bars.volume[keep],
            bars.taker_buy_volume[keep],
        )

    def open_interest_proxy(self, symbol: str, at_ms: int) -> float:
        """Open interest at ``at_ms``: the recorded sample has none, so a stated proxy from
        the real bars (the base volume traded in the 24 h before ``at_ms``)."""
        return float(self.bars(symbol, at_ms - 86_400_000, at_ms).volume.sum())

    def last_price(self, symbol: str) -> float:
        bars = self.bars(symbol, self.now_ms - 3_600_000, self.now_ms)
        return float(bars.close[-1])

    def account(self, name: str) -> Account:
        with self.lock:
            if name not in self.accounts:
                self.accounts[name] = Account(self.starting_balance)
            return self.accounts[name]

    # --------------------------------------------------------------------- orders
    def _record(self, action: str, order: Order, **extra: Any) -> None:
        self.log.append(
            {
                "seq": len(self.log),
                "action": action,
                "account": order.account,
                "order_id": order.id,
                "client_id": order.client_id,
                "symbol": order.symbol,
                "side": order.side,
                "type": order.type,
                "qty": order.qty,
                "reduce_only": order.reduce_only,
                "status": order.status,
                "filled": order.filled,
                **extra,
            }
        )

    def find(
        self,
        account: str,
        *,
        order_id: int | None = None,
        client_id: str | None = None,
        conditional: bool | None = None,
    ) -> Order:
        with self.lock:
            for o in self.orders.values():
                if o.account != account:
                    continue
                if conditional is not None and o.conditional != conditional:
                    continue
                if (order_id is not None and o.id == order_id) or (
                    client_id is not None and o.client_id == client_id
                ):
                    return o
        raise VenueError("-2013", "Order does not exist.")

    def place(self, account: str, spec: dict[str, Any], fault: str | None = None) -> Order:
        """Validate and accept one order (fills market orders at once)."""
        with self.lock:
            symbol = spec["symbol"]
            inst = self.instruments.get(symbol)
            if inst is None:
                raise VenueError("-1121", "Invalid symbol.")
            cid = spec["client_id"]
            for o in self.orders.values():
                if (
                    o.account == account
                    and o.client_id == cid
                    and (self.duplicate_scope == "all" or o.live)
                ):
                    raise VenueError("-4116", "ClientOrderId is duplicated.")
            qty = float(spec["qty"])
            if qty <= 0 or abs(round(qty / inst.amount_step) * inst.amount_step - qty) > 1e-9:
                raise VenueError("-1111", "Precision is over the maximum defined for this asset.")
            acct = self.account(account)
            pos_qty = acct.positions.get(symbol, (0.0, 0.0))[0]
            sign = 1 if spec["side"] == "BUY" else -1
            last = self.last_price(symbol)
            if (
                spec.get("reduce_only")
                and spec["type"]
                not in (
                    "STOP_MARKET",
                    "TAKE_PROFIT_MARKET",
                )
                and (pos_qty == 0 or (pos_qty > 0) == (sign > 0))
            ):
                raise VenueError("-2022", "ReduceOnly Order is rejected.")
            if spec["type"] in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                trig = float(spec["trigger"])
                # a trigger already crossed would fire at once: Binance refuses it (-2021)
                crossed = (
                    (trig >= last)
                    if (spec["type"] == "STOP_MARKET") == (sign < 0)
                    else (trig <= last)
                )
                if crossed:
                    raise VenueError("-2021", "Order would immediately trigger.")
            if not spec.get("reduce_only"):
                lev = acct.leverage.get(symbol, 20)
                notional = qty * (float(spec.get("price") or 0) or last)
                if fault == "margin" or notional / lev > self._available(account):
                    raise VenueError("-2019", "Margin is insufficient.")
            now = self.now_ms
            order = Order(
                id=next(self._ids),
                account=account,
                symbol=symbol,
                side=spec["side"],
                type=spec["type"],
                qty=qty,
                client_id=cid,
                price=spec.get("price"),
                trigger=spec.get("trigger"),
                reduce_only=bool(spec.get("reduce_only")),
                created_ms=now,
                updated_ms=now,
            )
            self.orders[order.id] = order
            self._record("create", order, price=order.price, trigger=order.trigger)
            if order.type == "MARKET":
                # a partial fill is on the amount grid, like every real fill
                half = inst.round_amount(qty / 2) if fault == "partial" else 0.0
                self._fill(order, last, half or None)
                if half and order.live:
                    order.status = "EXPIRED"  # the rest found no liquidity (IOC-like)
                    self._record("expire", order)
            elif order.type == "LIMIT" and fault == "partial":
                self._fill(order, float(order.price or last), inst.round_amount(qty / 2) or None)
            return order

    def _available(self, account: str) -> float:
        acct = self.account(account)
        used = sum(
            abs(q) * e / acct.leverage.get(s, 20) for s, (q, e) in acct.positions.items() if q
        )
        return acct.wallet + self._upnl(account) - used

    def _upnl(self, account: str) -> float:
        acct = self.account(account)
        return sum(q * (self.last_price(s) - e) for s, (q, e) in acct.positions.items() if q)

    def _fill(self, order: Order, ref: float, qty: float | None = None) -> None:
        """Fill (part of) an order; market fills pay slippage; reduce-only never flips."""
        acct = self.account(order.account)
        sign = 1 if order.side == "BUY" else -1
        pos_qty, entry = acct.positions.get(order.symbol, (0.0, 0.0))
        want = order.qty - order.filled if qty is None else qty
        if order.reduce_only:
            if pos_qty == 0 or (pos_qty > 0) == (sign > 0):
                order.status = "EXPIRED"  # nothing left to reduce
                order.updated_ms = self.now_ms
                self._record("expire", order)
                return
            want = min(want, abs(pos_qty))
        price = ref * (1 + sign * self.slippage) if order.type != "LIMIT" else ref
        new_qty = pos_qty + sign * want
        if pos_qty == 0 or (pos_qty > 0) == (sign > 0):
            entry = (abs(pos_qty) * entry + want * price) / (abs(pos_qty) + want)
        else:
            closed = min(abs(pos_qty), want)
            acct.wallet += closed * (price - entry) * (1 if pos_qty > 0 else -1)
            if abs(new_qty) > 1e-12 and (new_qty > 0) != (pos_qty > 0):
                entry = price
        acct.positions[order.symbol] = (0.0, 0.0) if abs(new_qty) < 1e-12 else (new_qty, entry)
        order.avg = (order.avg * order.filled + price * want) / (order.filled + want)
        order.filled += want
        order.status = "FILLED" if order.filled >= order.qty - 1e-12 else "PARTIALLY_FILLED"
        if order.reduce_only and abs(new_qty) < 1e-12:
            order.status = "FILLED"
        order.updated_ms = self.now_ms
        self._record("fill", order, price=price, amount=want)

    def cancel(self, order: Order) -> Order:
        with self.lock:
            if order.live:
                order.status = "CANCELED"
                order.updated_ms = self.now_ms
                self._record("cancel", order)
                return order
            raise VenueError("-2011", "Unknown order sent.")

    def advance(self, ms: int) -> None:
        """Move the market clock; resting limits and triggers fire on the bars that closed."""
        with self.lock:
            start, self.now_ms = self.now_ms, self.now_ms + ms
            for symbol in {o.symbol for o in self.orders.values() if o.live and o.type != "MARKET"}:
                bars = self.bars(symbol, start - start % MINUTE_MS, self.now_ms)
                for i in range(len(bars)):
                    lo, hi = float(bars.low[i]), float(bars.high[i])
                    for o in sorted(self.orders.values(), key=lambda x: x.id):
                        if o.symbol != symbol or not o.live or o.type == "MARKET":
                            continue
                        self._maybe_fire(o, lo, hi, int(bars.ts_ms[i]))

    def _maybe_fire(self, o: Order, lo: float, hi: float, ts: int) -> None:
        buy = o.side == "BUY"
        if o.type == "LIMIT":
            level = float(o.price or 0)
            if (buy and lo < level) or (not buy and hi > level):
                self._fill(o, level)
            return
        trig = float(o.trigger or 0)
        stop = o.type == "STOP_MARKET"
        hit = (hi >= trig) if (stop == buy) else (lo <= trig)
        if not hit:
            return
        market = Order(
            id=next(self._ids),
            account=o.account,
            symbol=o.symbol,
            side=o.side,
            type="MARKET",
            qty=o.qty,
            client_id=f"trig-{o.id}",
            reduce_only=o.reduce_only,
            created_ms=self.now_ms,
            updated_ms=self.now_ms,
        )
        self.orders[market.id] = market
        o.status, o.actual_order_id, o.updated_ms = "FINISHED", market.id, self.now_ms
        self._record("trigger", o, actual_order_id=market.id)
        self._fill(market, trig)

    # -------------------------------------------------------------- inspection
    def live_orders(self, account: str | None = None) -> list[Order]:
        with self.lock:
            return [o for o in self.orders.values() if o.live and account in (None, o.account)]

    def positions(self, account: str) -> dict[str, tuple[float, float]]:
        with self.lock:
            return {s: p for s, p in self.account(account).positions.items() if p[0]}
