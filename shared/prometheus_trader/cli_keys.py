"""``prometheus-trader keys add|remove|check USER --exchange … --env demo|live``.

The API key and secret are read from stdin (two lines) when it is not a terminal, else
from hidden prompts; never from the command line (argv is visible to every local user
and kept in shell history). Keys go to the deployment's secret store only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from prometheus_trader.app.settings import Settings
from prometheus_trader.ports import SecretStore

keys_app = typer.Typer(help="A user's exchange API keys (demo or live), kept in the secret store.")
_err = Console(stderr=True, soft_wrap=True)
_out = Console(soft_wrap=True)

ExchangeOption = Annotated[
    str, typer.Option("--exchange", help="binance (USD-M futures) or bybit (linear perps)")
]
EnvOption = Annotated[Literal["demo", "live"], typer.Option("--env", help="demo trading or live")]
EndpointOption = Annotated[
    Path | None,
    typer.Option(
        "--endpoint",
        hidden=True,
        help="JSON file mapping ccxt URL names to a local stand-in (tests only; loopback)",
    ),
]


def _read_key() -> tuple[str, str]:
    if not sys.stdin.isatty():
        lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
        if len(lines) < 2:
            raise typer.BadParameter("stdin must hold two lines: the API key, then the secret")
        return lines[0], lines[1]
    api_key = typer.prompt("API key", hide_input=True)
    secret = typer.prompt("API secret", hide_input=True)
    return api_key.strip(), secret.strip()


def _context(endpoint: Path | None) -> tuple[Settings, SecretStore, dict[str, str] | None]:
    from prometheus_trader.app.cloud import CloudRuntime

    settings = Settings()
    urls = json.loads(endpoint.read_text()) if endpoint else None
    return settings, CloudRuntime(settings).secrets, urls


def _fail(message: str) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


@keys_app.command("add")
def keys_add(
    user: str, exchange: ExchangeOption, env: EnvOption, endpoint: EndpointOption = None
) -> None:
    """Check a key (a balance read; keys that can withdraw are refused), then store it."""
    from prometheus_trader.adapters.ccxt.config import Credentials, venue
    from prometheus_trader.adapters.ccxt.keys import add_keys, default_factory
    from prometheus_trader.ports import ExchangeError

    settings, store, urls = _context(endpoint)
    try:
        venue(exchange)
        api_key, secret = _read_key()
        creds = Credentials(exchange, env, api_key, secret)
        result = add_keys(
            store,
            user,
            creds,
            default_factory(allow_live=settings.allow_live, urls=urls),
        )
    except ExchangeError as exc:
        raise _fail(str(exc)) from None
    _out.print(
        f"stored {env} keys of {user} for {exchange}: equity {result.equity:.2f} USDT, "
        f"withdrawals {'not reported' if result.withdrawals is None else 'off'}"
    )


@keys_app.command("check")
def keys_check(
    user: str, exchange: ExchangeOption, env: EnvOption, endpoint: EndpointOption = None
) -> None:
    """Check the stored key again (a balance read)."""
    from prometheus_trader.adapters.ccxt.keys import check_keys, default_factory
    from prometheus_trader.ports import ExchangeError, SecretNotFound

    settings, store, urls = _context(endpoint)
    try:
        result = check_keys(
            store,
            user,
            exchange,
            env,
            default_factory(allow_live=settings.allow_live, urls=urls),
        )
    except SecretNotFound:
        raise _fail(f"no {env} keys stored for {user} on {exchange}") from None
    except ExchangeError as exc:
        raise _fail(str(exc)) from None
    _out.print(f"{env} keys of {user} for {exchange} work: equity {result.equity:.2f} USDT")


@keys_app.command("remove")
def keys_remove(user: str, exchange: ExchangeOption, env: EnvOption) -> None:
    """Delete the stored key."""
    from prometheus_trader.adapters.ccxt.config import venue
    from prometheus_trader.adapters.ccxt.keys import remove_keys
    from prometheus_trader.ports import ExchangeError

    _settings, store, _urls = _context(None)
    try:
        venue(exchange)
    except ExchangeError as exc:
        raise _fail(str(exc)) from None
    remove_keys(store, user, exchange, env)
    _out.print(f"removed {env} keys of {user} for {exchange}")
