"""Ranker (Cloud Scheduler, every 5 minutes): rank, analyse, publish signals."""

from __future__ import annotations

from typing import Any

import functions_framework

from prometheus_trader.app import triggers
from prometheus_trader.app.cloud import get_runtime


@functions_framework.http
def ranker(request: triggers.HttpRequest) -> triggers.JsonResponse:
    """One ranking round; the body must be empty or {}."""

    def job(body: dict[str, Any]) -> object:
        triggers.no_body(body)
        return get_runtime().rank()

    return triggers.scheduled(request, job, stage="ranker")
