"""API (HTTP): a minimal, read-only surface; the full API is a later issue.

``GET /api/v1/health`` and ``GET /api/v1/positions?user_id=U[&status=open|closed]``.
There is no end-user authentication yet: deploy it for IAM-authenticated callers only.
"""

from __future__ import annotations

import functions_framework

from prometheus_trader.app import triggers
from prometheus_trader.app.cloud import describe, get_runtime


@functions_framework.http
def api(request: triggers.HttpRequest) -> triggers.JsonResponse:
    """Route one request."""
    return triggers.api(request, lambda: get_runtime().state, lambda: describe(get_runtime()))
