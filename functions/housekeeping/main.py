"""Housekeeping (Cloud Scheduler, every minute): expire signals and watchlist entries,
"expires in 1 h" notices, the daily top-liquid list, email digests."""

from __future__ import annotations

from typing import Any

import functions_framework

from prometheus_trader.app import triggers
from prometheus_trader.app.cloud import get_runtime


@functions_framework.http
def housekeeping(request: triggers.HttpRequest) -> triggers.JsonResponse:
    """One housekeeping pass; the body must be empty or {}."""

    def job(body: dict[str, Any]) -> object:
        triggers.no_body(body)
        return get_runtime().housekeeping.run()

    return triggers.scheduled(request, job, stage="housekeeping")
