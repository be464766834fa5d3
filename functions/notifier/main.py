"""Notifier (Pub/Sub `events`): user notifications for user-facing events.

Serves both an Eventarc trigger and our own push subscription (functions-framework turns
a raw Pub/Sub push body into a CloudEvent). Poison messages are logged and acked; any
other error propagates (500) so Pub/Sub redelivers.
"""

from __future__ import annotations

import functions_framework

from prometheus_trader.app import triggers
from prometheus_trader.app.cloud import get_runtime


@functions_framework.cloud_event
def notifier(cloud_event: triggers.CloudEvent) -> None:
    """Handle one message."""
    triggers.deliver(
        cloud_event, lambda message: get_runtime().notify.handle(message), stage="notifier"
    )
