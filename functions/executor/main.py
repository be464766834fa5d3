"""Executor (Pub/Sub `executions`): plan, risk gate, orders, positions for a bucket of users
(or one user): the batched executor, docs/execution.md.

Serves our push subscription and an Eventarc trigger alike (a raw push body or a
CloudEvent, decoded by ``triggers.push``). A body that is not a push is a 4xx; poison
messages are logged and acked; an unknown schema version is dead-lettered; any other
error propagates (500) so Pub/Sub redelivers.
"""

from __future__ import annotations

import functions_framework

from prometheus_trader.app import triggers
from prometheus_trader.app.cloud import get_runtime


@functions_framework.http
def executor(request: triggers.HttpRequest) -> triggers.JsonResponse:
    """Handle one push."""
    return triggers.push(request, lambda message: get_runtime().execute(message), stage="executor")
