"""Collector (Cloud Scheduler, every minute): market data into the market store."""

from __future__ import annotations

from typing import Any

import functions_framework

from prometheus_trader.app import triggers
from prometheus_trader.app.cloud import get_runtime


@functions_framework.http
def collector(request: triggers.HttpRequest) -> triggers.JsonResponse:
    """One collection round; the body must be empty or {}."""

    def job(body: dict[str, Any]) -> object:
        triggers.no_body(body)
        return get_runtime().collect()

    return triggers.scheduled(request, job, stage="collector")
