"""API (HTTP): the users' API under ``/api/v1`` (SPEC §8), FastAPI behind
functions-framework; bearer tokens per user (see docs/api.md)."""

from __future__ import annotations

import functions_framework

from prometheus_trader.app.api import function


@functions_framework.http
def api(request: function.Request) -> function.Response:
    """Route one request."""
    return function.serve(request)
