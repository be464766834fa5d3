"""Reporter (Cloud Scheduler, 00:00 UTC): each active user's daily report."""

from __future__ import annotations

from typing import Any

import functions_framework

from prometheus_trader.app import triggers
from prometheus_trader.app.cloud import get_runtime


@functions_framework.http
def reporter(request: triggers.HttpRequest) -> triggers.JsonResponse:
    """Build the reports of {"day": "YYYY-MM-DD"} (default: yesterday, UTC)."""

    def job(body: dict[str, Any]) -> object:
        runtime = get_runtime()
        return runtime.reporter.run(triggers.report_day(body, runtime.clock.now().date()))

    return triggers.scheduled(request, job, stage="reporter")
