"""``prometheus-trader collect --exchange binance|bybit [--symbols …] [--rounds N]``.

Runs the live collector (issue 9, docs/collectors.md) against a venue's public market data
into the deployment's market store (embedded: ``<var_dir>/service/market``), one JSON
report line per round. Settings (``PROMETHEUS_COLLECTOR_*``) give the defaults.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from prometheus_trader.app.settings import Settings


def collect(
    exchange: Annotated[
        str | None,
        typer.Option(help="binance (USD-M; also binanceusdm) or bybit; default the setting"),
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="comma-separated ccxt symbols (default: all active)")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="rounds to run")] = 1,
    every: Annotated[float, typer.Option(min=0, help="seconds between rounds")] = 60.0,
    endpoint: Annotated[
        Path | None,
        typer.Option(
            hidden=True, help="JSON file mapping ccxt URL names to a loopback stand-in (tests)"
        ),
    ] = None,
) -> None:
    """Collect market data from a live exchange (ccxt, public endpoints only)."""
    from prometheus_trader.app.cloud import CloudRuntime
    from prometheus_trader.app.collector import venue_name

    overrides: dict[str, Any] = {}
    if exchange:
        overrides["collector_exchange"] = venue_name(exchange)
    if symbols:
        overrides["collector_symbols"] = [s.strip() for s in symbols.split(",") if s.strip()]
    if endpoint:
        overrides["collector_urls"] = json.loads(endpoint.read_text())
    settings = Settings(**overrides)
    if not settings.collector_exchange:
        raise ValueError("no exchange: pass --exchange or set PROMETHEUS_COLLECTOR_EXCHANGE")
    runtime = CloudRuntime(settings)
    try:
        for n in range(rounds):
            if n:
                time.sleep(every)
            report = runtime.collect()
            line = dataclasses.asdict(report) | {"rows": getattr(report, "rows", None)}
            typer.echo(json.dumps({"round": n + 1, **line}, sort_keys=True))
    finally:
        runtime.close()
