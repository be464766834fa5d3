"""The ``api`` Cloud Function: the FastAPI app behind functions-framework.

Cloud Functions run functions-framework's Flask (WSGI) server; its ASGI mode (``--asgi``,
``functions_framework.aio``) exists in the installed version but the managed runtime
starts the WSGI server, so the FastAPI (ASGI) app is bridged with ``a2wsgi``: the Flask
request's WSGI environ goes to the app unchanged and its response comes back whole.
The app is built once per instance, over the process's ``CloudRuntime``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable

from a2wsgi import ASGIMiddleware
from flask import Request
from werkzeug import Response

from prometheus_trader.app.api import ApiDeps, create_app
from prometheus_trader.app.cloud import CloudRuntime, describe, get_runtime
from prometheus_trader.app.inbound import neutralize_bodyless
from prometheus_trader.domain.trading import Balance
from prometheus_trader.ports import ExchangeError
from prometheus_trader.usecases.controls import ExchangeKeys, KeyCheck, KeyCheckFailed

log = logging.getLogger(__name__)
_wsgi: ASGIMiddleware | None = None
_lock = threading.Lock()


def ccxt_key_check(runtime: CloudRuntime) -> KeyCheck | None:
    """The ccxt adapter's key check (a balance read, keys that can withdraw refused), when
    this build has the adapter; None otherwise (keys are then stored unchecked)."""
    try:
        config = importlib.import_module("prometheus_trader.adapters.ccxt.config")
        keys_module = importlib.import_module("prometheus_trader.adapters.ccxt.keys")
    except ImportError:
        return None
    factory = keys_module.default_factory(
        allow_live=bool(getattr(runtime.settings, "allow_live", False))
    )

    def check(user_id: str, keys: ExchangeKeys) -> None:
        creds = config.Credentials(
            exchange=keys.exchange,
            env=keys.env,
            api_key=keys.api_key.get_secret_value(),
            secret=keys.secret.get_secret_value(),
            password=keys.password.get_secret_value() if keys.password else None,
        )
        try:
            keys_module.check_credentials(user_id, creds, factory)
        except (ExchangeError, ValueError) as exc:  # messages carry no key material
            raise KeyCheckFailed(str(exc)) from None

    return check


def exchange_balance(runtime: CloudRuntime) -> Callable[[str], Balance]:
    """Balances through the runtime's exchange. Whatever goes wrong there (the exchange,
    its data, a permission the API does not hold) is an ExchangeError, which the API
    answers with a 409 saying so, not a 500."""

    def read(account: str) -> Balance:
        try:
            return runtime.exchange.fetch_balance(account)
        except ExchangeError:
            raise
        except Exception as exc:  # boundary: the caller gets a 4xx, the log the detail
            log.warning("balance unavailable: %r", exc)
            raise ExchangeError(f"balance unavailable ({type(exc).__name__})") from None

    return read


def api_deps(runtime: CloudRuntime) -> ApiDeps:
    """The API's providers over a runtime (each adapter built on first use)."""
    return ApiDeps(
        state=lambda: runtime.state,
        clock=lambda: runtime.clock,
        secrets=lambda: runtime.secrets,
        blobs=lambda: runtime.blobs,
        balance=exchange_balance(runtime),
        key_check=ccxt_key_check(runtime),
        exchange=runtime.settings.exchange,
        trading_env=runtime.settings.trading_env,
        info=lambda: describe(runtime),
        rate_per_minute=runtime.settings.api_rate_per_minute,
        max_body_bytes=runtime.settings.api_max_body_bytes,
    )


def wsgi_app() -> ASGIMiddleware:
    """This instance's app as a WSGI callable (built on first request)."""
    global _wsgi
    with _lock:
        if _wsgi is None:
            _wsgi = ASGIMiddleware(create_app(api_deps(get_runtime())))  # type: ignore[arg-type]
        return _wsgi


def reset() -> None:
    """Forget the app (tests install another runtime)."""
    global _wsgi
    with _lock:
        _wsgi = None


def serve(request: Request) -> Response:
    """Answer one Flask request with the FastAPI app."""
    neutralize_bodyless(request)  # a GET never waits for a body it announced
    return Response.from_app(wsgi_app(), request.environ)  # type: ignore[arg-type]


__all__ = ["Request", "Response", "api_deps", "reset", "serve", "wsgi_app"]
