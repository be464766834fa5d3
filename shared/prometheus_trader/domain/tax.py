"""The tax export: one row per closed trade in quote currency, and a yearly summary. Pure.

A trade runs from the fill that opens a flat (account, symbol) to the fill that brings it
back to flat. For a long, the cost basis is what the buys cost and the proceeds what the
sells brought; for a short, the reverse. ``realized_pnl = proceeds − cost_basis − fees −
funding``, so the rows add up to the exchange's realized PnL net of fees.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.formatting import cents, qty, to_cents
from prometheus_trader.domain.metrics import ClosedTrade

_DUST = 1e-9  # relative: a position smaller than this share of the trade is flat


class TaxFill(BaseModel):
    """The fields of a fill the export needs (ledger fills carry more; ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    account: str
    symbol: str
    side: Literal["buy", "sell"]
    ts_ms: int
    price: float
    amount: float = Field(gt=0)
    fee: float = 0.0
    funding: float = Field(0.0, description="funding paid on this position since the last fill")


class TaxRow(BaseModel):
    """One closed trade."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: str
    symbol: str
    side: Literal["long", "short"]
    opened_ms: int
    closed_ms: int
    quantity: float
    proceeds: float
    cost_basis: float
    fees: float
    funding: float
    realized_pnl: float
    currency: str = "USDT"


CSV_COLUMNS = (
    "open_time_utc",
    "close_time_utc",
    "account",
    "symbol",
    "side",
    "quantity",
    "proceeds",
    "cost_basis",
    "fees",
    "funding",
    "realized_pnl",
    "currency",
)
YEAR_COLUMNS = (
    "year",
    "trades",
    "proceeds",
    "cost_basis",
    "fees",
    "funding",
    "gains",
    "losses",
    "realized_pnl",
    "currency",
)


def rows_from_fills(
    fills: Iterable[TaxFill | dict[str, Any]], currency: str = "USDT"
) -> list[TaxRow]:
    """Closed trades rebuilt from an exchange's fills (any order; open trades omitted)."""
    parsed = [f if isinstance(f, TaxFill) else TaxFill.model_validate(f) for f in fills]
    parsed.sort(key=lambda f: (f.account, f.symbol, f.ts_ms))
    rows: list[TaxRow] = []
    book: dict[tuple[str, str], _Open] = {}
    for f in parsed:
        key = (f.account, f.symbol)
        sign = 1 if f.side == "buy" else -1
        remaining = f.amount
        fee_per_unit = f.fee / f.amount
        funding = f.funding
        while remaining > 0:
            trade = book.get(key)
            if trade is None:
                trade = book[key] = _Open(f.ts_ms, "long" if sign > 0 else "short")
            closing = trade.size if trade.size * sign < 0 else 0.0
            part = min(remaining, abs(closing)) if closing else remaining
            trade.add(sign, part, f.price, fee_per_unit * part, funding)
            funding = 0.0
            remaining -= part
            if abs(trade.size) <= _DUST * trade.opened_qty:
                rows.append(trade.row(f.account, f.symbol, f.ts_ms, currency))
                del book[key]
            if remaining <= _DUST * f.amount:
                break
    rows.sort(key=lambda r: (r.closed_ms, r.account, r.symbol))
    return rows


def row_from_trade(
    trade: ClosedTrade, account: str | None = None, currency: str = "USDT"
) -> TaxRow:
    """The row of one closed trade given with its entry and exit prices (one fill each)."""
    buy = trade.quantity * (trade.entry_price if trade.direction == "long" else trade.exit_price)
    sell = trade.quantity * (trade.exit_price if trade.direction == "long" else trade.entry_price)
    return TaxRow(
        account=account or trade.user_id,
        symbol=trade.symbol,
        side=trade.direction,
        opened_ms=trade.opened_ms,
        closed_ms=trade.closed_ms,
        quantity=trade.quantity,
        proceeds=sell,
        cost_basis=buy,
        fees=trade.fees,
        funding=trade.funding,
        realized_pnl=sell - buy - trade.fees - trade.funding,
        currency=currency,
    )


def tax_csv(rows: Sequence[TaxRow]) -> str:
    """The per-trade CSV (amounts to the cent, times in UTC ISO 8601)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    pnl_cents = cents_summing_to_total([r.realized_pnl for r in rows])
    for r, pnl in zip(rows, pnl_cents, strict=True):
        writer.writerow(
            [
                _iso(r.opened_ms),
                _iso(r.closed_ms),
                r.account,
                r.symbol,
                r.side,
                qty(r.quantity),
                cents(r.proceeds),
                cents(r.cost_basis),
                cents(r.fees),
                cents(r.funding),
                pnl,
                r.currency,
            ]
        )
    return buffer.getvalue()


def cents_summing_to_total(values: Sequence[float]) -> list[str]:
    """Each value to the cent such that the column adds up to the rounded exact total
    (largest remainder: no row moves by more than one cent from its own rounding)."""
    rounded = [to_cents(v) for v in values]
    target = to_cents(math.fsum(values))
    step = Decimal("0.01") if target > sum(rounded, Decimal(0)) else Decimal("-0.01")
    # the rows whose rounding moved them furthest from their value absorb the difference
    order = sorted(
        range(len(values)), key=lambda i: (-(Decimal(repr(values[i])) - rounded[i]) * step, i)
    )
    for i in order[: int(abs(target - sum(rounded, Decimal(0))) / Decimal("0.01"))]:
        rounded[i] += step
    return [str(r) for r in rounded]


def yearly_summary_csv(rows: Sequence[TaxRow]) -> str:
    """One line per calendar year of the close time (UTC)."""
    years: dict[tuple[int, str], list[TaxRow]] = {}
    for r in rows:
        years.setdefault(
            (datetime.fromtimestamp(r.closed_ms / 1000, UTC).year, r.currency), []
        ).append(r)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(YEAR_COLUMNS)
    for (year, currency), rs in sorted(years.items()):
        pnls = [r.realized_pnl for r in rs]
        writer.writerow(
            [
                year,
                len(rs),
                cents(sum(r.proceeds for r in rs)),
                cents(sum(r.cost_basis for r in rs)),
                cents(sum(r.fees for r in rs)),
                cents(sum(r.funding for r in rs)),
                cents(sum(p for p in pnls if p > 0)),
                cents(sum(p for p in pnls if p < 0)),
                cents(sum(pnls)),
                currency,
            ]
        )
    return buffer.getvalue()


class _Open:
    """A trade being built from fills."""

    def __init__(self, opened_ms: int, side: Literal["long", "short"]) -> None:
        self.opened_ms = opened_ms
        self.side: Literal["long", "short"] = side
        self.size = 0.0  # signed
        self.opened_qty = 0.0
        self.bought = 0.0  # quote paid for buys
        self.sold = 0.0  # quote received for sells
        self.fees = 0.0
        self.funding = 0.0

    def add(self, sign: int, amount: float, price: float, fee: float, funding: float) -> None:
        if self.size * sign >= 0:
            self.opened_qty += amount
        self.size += sign * amount
        if sign > 0:
            self.bought += amount * price
        else:
            self.sold += amount * price
        self.fees += fee
        self.funding += funding

    def row(self, account: str, symbol: str, closed_ms: int, currency: str) -> TaxRow:
        return TaxRow(
            account=account,
            symbol=symbol,
            side=self.side,
            opened_ms=self.opened_ms,
            closed_ms=closed_ms,
            quantity=self.opened_qty,
            proceeds=self.sold,
            cost_basis=self.bought,
            fees=self.fees,
            funding=self.funding,
            realized_pnl=self.sold - self.bought - self.fees - self.funding,
            currency=currency,
        )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
