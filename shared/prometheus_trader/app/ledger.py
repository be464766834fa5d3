"""The run's canonical trade ledger (``ledger.json``; its sha256 is the run's fingerprint)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_trader.app.wiring import Runtime
from prometheus_trader.usecases.names import Collections

LEDGER_POSITION_FIELDS = (
    "id",
    "user_id",
    "signal_id",
    "symbol",
    "direction",
    "amount",
    "entry_price",
    "stop_loss",
    "stop_order_id",
    "entry_order_id",
    "opened_ms",
    "closed_ms",
    "exit_price",
    "exit_reason",
    "realized_pnl",
    "pnl_pct",
    "status",
)


def build_ledger(rt: Runtime) -> dict[str, Any]:
    """The canonical trade ledger: every order, fill and position, in a stable order."""
    accounts = sorted(u["exchange_account"] for u in rt.state.query(Collections.USERS))
    orders = [
        {"account": a, **o.model_dump(mode="json")} for a in accounts for o in rt.exchange.orders(a)
    ]
    fills = [f.model_dump(mode="json") for a in accounts for f in rt.exchange.fills(a)]
    positions = [
        {f: p.get(f) for f in LEDGER_POSITION_FIELDS}
        for p in sorted(rt.state.query(Collections.POSITIONS), key=lambda d: d["id"])
    ]
    decisions = [
        {
            "signal_id": e["signal_id"],
            "user_id": e["user_id"],
            "outcome": e.get("outcome"),
            "reasons": e.get("reasons", []),
        }
        for e in sorted(
            rt.state.query(Collections.EXECUTIONS), key=lambda d: (d["signal_id"], d["user_id"])
        )
    ]
    return {"orders": orders, "fills": fills, "positions": positions, "decisions": decisions}


def canonical_json(data: Any) -> bytes:
    """Stable serialization for hashing (sorted keys, no whitespace)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
