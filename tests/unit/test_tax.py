"""Tax export: every column on a hand-built ledger; sums to the real run's realized PnL."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from prometheus_trader.domain.tax import (
    row_from_trade,
    rows_from_fills,
    tax_csv,
    yearly_summary_csv,
)
from prometheus_trader.usecases.trades import closed_trades

pytestmark = pytest.mark.unit
RUN = Path(__file__).parents[1] / "fixtures" / "run"
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def _fill(side: str, ts: int, price: float, amount: float, fee: float, **kw: object) -> dict:
    return {
        "account": "alice",
        "symbol": "BTC/USDT:USDT",
        "side": side,
        "ts_ms": ts,
        "price": price,
        "amount": amount,
        "fee": fee,
        "order_id": f"o{ts}",  # ledger fills carry more fields: ignored
        **kw,
    }


def test_every_column_of_a_hand_built_ledger() -> None:
    fills = [
        # long 2 @ 100, closed 1 @ 110 then 1 @ 120 (two exit fills, one trade)
        _fill("buy", T0, 100.0, 2.0, 0.10),
        _fill("sell", T0 + 60_000, 110.0, 1.0, 0.055),
        _fill("sell", T0 + 120_000, 120.0, 1.0, 0.06, funding=0.25),
        # short 0.5 @ 200 covered @ 190, closed in 2026
        _fill("sell", T0 + 365 * 86_400_000, 200.0, 0.5, 0.05),
        _fill("buy", T0 + 365 * 86_400_000 + 3_600_000, 190.0, 0.5, 0.0475),
        # an open trade: not in the export
        _fill("buy", T0 + 400 * 86_400_000, 50.0, 1.0, 0.01, symbol="ETH/USDT:USDT"),
    ]
    rows = list(csv.DictReader(io.StringIO(tax_csv(rows_from_fills(fills)))))
    assert rows == [
        {
            "open_time_utc": "2025-01-01T00:00:00Z",
            "close_time_utc": "2025-01-01T00:02:00Z",
            "account": "alice",
            "symbol": "BTC/USDT:USDT",
            "side": "long",
            "quantity": "2",
            "proceeds": "230.00",
            "cost_basis": "200.00",
            "fees": "0.22",  # 0.10 + 0.055 + 0.06 = 0.215 → 0.22 (half away from zero)
            "funding": "0.25",
            "realized_pnl": "29.54",  # 230 − 200 − 0.215 − 0.25 = 29.535
            "currency": "USDT",
        },
        {
            "open_time_utc": "2026-01-01T00:00:00Z",
            "close_time_utc": "2026-01-01T01:00:00Z",
            "account": "alice",
            "symbol": "BTC/USDT:USDT",
            "side": "short",
            "quantity": "0.5",
            "proceeds": "100.00",
            "cost_basis": "95.00",
            "fees": "0.10",  # 0.05 + 0.0475 = 0.0975
            "funding": "0.00",
            "realized_pnl": "4.90",  # 100 − 95 − 0.0975 = 4.9025
            "currency": "USDT",
        },
    ]
    years = list(csv.DictReader(io.StringIO(yearly_summary_csv(rows_from_fills(fills)))))
    assert [
        (y["year"], y["trades"], y["realized_pnl"], y["gains"], y["losses"]) for y in years
    ] == [
        ("2025", "1", "29.54", "29.54", "0.00"),
        ("2026", "1", "4.90", "4.90", "0.00"),
    ]


def test_a_fill_that_flips_the_position_closes_one_trade_and_opens_another() -> None:
    fills = [
        _fill("buy", T0, 100.0, 1.0, 1.0),
        _fill("sell", T0 + 1, 110.0, 3.0, 3.0),  # closes 1, opens a 2 short
        _fill("buy", T0 + 2, 105.0, 2.0, 2.0),
    ]
    rows = rows_from_fills(fills)
    assert [(r.side, r.quantity, r.realized_pnl) for r in rows] == [
        ("long", 1.0, pytest.approx(110 - 100 - 1 - 1)),
        ("short", 2.0, pytest.approx(220 - 210 - 2 - 2)),
    ]


def test_the_pnl_column_sums_to_the_ledger_realized_pnl_to_the_cent() -> None:
    ledger = json.loads((RUN / "ledger.json").read_text())
    rows = rows_from_fills(ledger["fills"])
    assert len(rows) == len(ledger["positions"]) == 17
    column = [Decimal(r["realized_pnl"]) for r in csv.DictReader(io.StringIO(tax_csv(rows)))]
    realized = sum(Decimal(repr(p["realized_pnl"])) for p in ledger["positions"])
    assert sum(column) == realized.quantize(Decimal("0.01"))
    # and each trade's row matches its position within a cent
    by_close = sorted(ledger["positions"], key=lambda p: (p["closed_ms"], p["user_id"]))
    assert sorted(round(r.realized_pnl, 2) for r in rows) == sorted(
        round(p["realized_pnl"], 2) for p in by_close
    )


def test_rows_from_positions_match_rows_from_the_exchange_fills() -> None:
    """The daily reporter's rows (from positions) and the run's (from fills) agree."""
    ledger = json.loads((RUN / "ledger.json").read_text())
    state = json.loads((RUN / "state.json").read_text())
    from_fills = rows_from_fills(ledger["fills"])
    from_positions = sorted(
        (row_from_trade(t) for t in closed_trades(state["positions"], state["journal"])),
        key=lambda r: (r.closed_ms, r.account, r.symbol),
    )
    assert len(from_fills) == len(from_positions) == 17
    for a, b in zip(from_fills, from_positions, strict=True):
        assert (a.account, a.symbol, a.side, a.opened_ms, a.closed_ms, a.quantity) == (
            b.account,
            b.symbol,
            b.side,
            b.opened_ms,
            b.closed_ms,
            b.quantity,
        )
        for field in ("proceeds", "cost_basis", "fees", "funding", "realized_pnl"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), abs=1e-6), field
