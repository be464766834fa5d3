"""ccxt's unified dicts → our pydantic domain models, at the edge and nowhere else."""

from __future__ import annotations

from typing import Any

from prometheus_trader.domain.market import (
    Candle,
    FundingRate,
    Instrument,
    MarketType,
    OpenInterest,
    Side,
    Ticker,
    Trade,
)
from prometheus_trader.domain.signals import Direction
from prometheus_trader.domain.trading import ExchangePosition, Order, OrderStatus, OrderType
from prometheus_trader.ports import ExchangeError

_STATUS = {
    "open": OrderStatus.OPEN,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "cancelled": OrderStatus.CANCELED,
    "expired": OrderStatus.CANCELED,
    "rejected": OrderStatus.REJECTED,
}
# order ids carry what the port's fetch/cancel need and ccxt asks for: kind and symbol
_KIND = {"o": False, "t": True}


def encode_order_id(exchange_order_id: str, symbol: str, conditional: bool) -> str:
    """Our order id: ``<o|t>|<symbol>|<exchange id>`` (t = conditional/trigger order)."""
    return f"{'t' if conditional else 'o'}|{symbol}|{exchange_order_id}"


def decode_order_id(order_id: str) -> tuple[str, str, bool]:
    """(exchange id, symbol, conditional) of one of our order ids."""
    parts = order_id.split("|")
    if len(parts) != 3 or parts[0] not in _KIND or not parts[1] or not parts[2]:
        raise ExchangeError(f"order {order_id!r} not found (not an id of this adapter)")
    return parts[2], parts[1], _KIND[parts[0]]


def _f(value: Any, default: float = 0.0) -> float:
    return default if value is None else float(value)


def instrument(exchange_id: str, m: dict[str, Any], default_max_leverage: float) -> Instrument:
    """One ccxt market (precision mode TICK_SIZE: steps, not decimals)."""
    precision, limits = m.get("precision") or {}, m.get("limits") or {}
    amount_step = _f(precision.get("amount"), 1.0)
    max_lev = (limits.get("leverage") or {}).get("max")
    return Instrument(
        exchange=exchange_id,
        market_type=MarketType.PERP if m.get("swap") else MarketType.SPOT,
        symbol=m["symbol"],
        base=m["base"],
        quote=m["quote"],
        settle=m.get("settle"),
        price_step=_f(precision.get("price"), 1e-8),
        amount_step=amount_step,
        min_amount=_f((limits.get("amount") or {}).get("min"), amount_step),
        min_notional=_f((limits.get("cost") or {}).get("min")),
        max_leverage=max(1.0, _f(max_lev, default_max_leverage)),
        taker_fee=_f(m.get("taker"), 0.0005),
        maker_fee=_f(m.get("maker"), 0.0002),
        active=m.get("active") is not False,
    )


def ticker(exchange_id: str, t: dict[str, Any], now_ms: int) -> Ticker:
    """One ccxt ticker."""
    return Ticker(
        exchange=exchange_id,
        market_type=MarketType.PERP,
        symbol=t["symbol"],
        ts_ms=int(t.get("timestamp") or now_ms),
        last=_f(t.get("last") or t.get("close")),
        bid=t.get("bid"),
        ask=t.get("ask"),
        quote_volume_24h=t.get("quoteVolume"),
        change_24h_pct=t.get("percentage"),
    )


def candle(exchange_id: str, symbol: str, timeframe: str, row: list[Any]) -> Candle:
    """One ccxt OHLCV row ``[ts, o, h, l, c, v]``."""
    return Candle(
        exchange=exchange_id,
        market_type=MarketType.PERP,
        symbol=symbol,
        timeframe=timeframe,
        ts_ms=int(row[0]),
        open=float(row[1]),
        high=float(row[2]),
        low=float(row[3]),
        close=float(row[4]),
        volume=_f(row[5]),
    )


def funding(exchange_id: str, f: dict[str, Any]) -> FundingRate | None:
    """One ccxt funding rate (None when the exchange gave none)."""
    if f.get("fundingRate") is None:
        return None
    return FundingRate(
        exchange=exchange_id,
        market_type=MarketType.PERP,
        symbol=f["symbol"],
        ts_ms=int(f.get("timestamp") or f.get("fundingTimestamp") or 0),
        rate=float(f["fundingRate"]),
    )


def open_interest(exchange_id: str, oi: dict[str, Any]) -> OpenInterest | None:
    """One ccxt open-interest point."""
    amount = oi.get("openInterestAmount")
    if amount is None:
        return None
    return OpenInterest(
        exchange=exchange_id,
        market_type=MarketType.PERP,
        symbol=oi["symbol"],
        ts_ms=int(oi.get("timestamp") or 0),
        amount=float(amount),
        value=oi.get("openInterestValue"),
    )


def trade(exchange_id: str, t: dict[str, Any]) -> Trade:
    """One ccxt public trade (``side`` is the taker's)."""
    return Trade(
        exchange=exchange_id,
        market_type=MarketType.PERP,
        symbol=t["symbol"],
        ts_ms=int(t["timestamp"]),
        trade_id=str(t["id"]),
        price=float(t["price"]),
        amount=_f(t.get("amount")),
        side=Side(t["side"]),
    )


def order_type(o: dict[str, Any]) -> OrderType:
    """Our order type; ccxt reports a stop-market as ``market`` with a trigger price."""
    info = o.get("info") or {}
    raw = str(info.get("orderType") or info.get("type") or info.get("stopOrderType") or "").upper()
    if raw in ("STOP_MARKET", "STOPLOSS", "STOP_LOSS"):
        return OrderType.STOP_MARKET
    if raw in ("TAKE_PROFIT_MARKET", "TAKEPROFIT", "TAKE_PROFIT"):
        return OrderType.TAKE_PROFIT_MARKET
    if o.get("triggerPrice"):
        return OrderType.TAKE_PROFIT_MARKET if o.get("takeProfitPrice") else OrderType.STOP_MARKET
    return OrderType.LIMIT if o.get("type") == "limit" else OrderType.MARKET


def order(account: str, o: dict[str, Any], conditional: bool) -> Order:
    """One ccxt order."""
    kind = order_type(o)
    created = int(o.get("timestamp") or 0)
    fee = o.get("fee") or {}
    return Order(
        id=encode_order_id(str(o["id"]), o["symbol"], conditional),
        client_order_id=str(o.get("clientOrderId") or ""),
        account=account,
        symbol=o["symbol"],
        side=Side(o["side"]),
        type=kind,
        amount=_f(o.get("amount")),
        price=o.get("price") if kind is OrderType.LIMIT else None,
        stop_price=o.get("triggerPrice") if conditional else None,
        reduce_only=bool(o.get("reduceOnly")),
        status=_STATUS.get(str(o.get("status")), OrderStatus.OPEN),
        filled=_f(o.get("filled")),
        average=o.get("average") or None,
        fee=_f(fee.get("cost")),
        created_ms=created,
        updated_ms=int(o.get("lastUpdateTimestamp") or o.get("lastTradeTimestamp") or created),
    )


def position(account: str, p: dict[str, Any]) -> ExchangePosition | None:
    """One ccxt position (None when flat)."""
    contracts = _f(p.get("contracts")) * _f(p.get("contractSize"), 1.0)
    if contracts <= 0 or p.get("side") not in ("long", "short"):
        return None
    return ExchangePosition(
        account=account,
        symbol=p["symbol"],
        direction=Direction.LONG if p["side"] == "long" else Direction.SHORT,
        amount=contracts,
        entry_price=_f(p.get("entryPrice")),
    )


def wallet_upnl(info: Any) -> tuple[float | None, float]:
    """Wallet balance and unrealized PnL from the venue's raw account (Binance
    ``fapi/v3/account``, Bybit ``v5/account/wallet-balance``); ccxt's unified ``total``
    means wallet on one venue and equity on the other."""
    if not isinstance(info, dict):
        return None, 0.0
    result = info.get("result")
    if isinstance(result, dict) and result.get("list"):
        info = result["list"][0]
    wallet = info.get("totalWalletBalance")
    upnl = info.get("totalUnrealizedProfit", info.get("totalPerpUPL"))
    return (
        float(str(wallet)) if wallet not in (None, "") else None,
        float(str(upnl)) if upnl not in (None, "") else 0.0,
    )
