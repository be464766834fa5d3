"""Telegram bot webhook (HTTP): /status /positions /pause /resume /killswitch.

Telegram's secret-token header is checked, the chat is mapped to its linked user and the
reply is returned in the response (app/telegram_webhook.py; docs/notifications.md).
"""

from __future__ import annotations

import functions_framework

from prometheus_trader.app import telegram_webhook, triggers
from prometheus_trader.app.cloud import get_runtime


@functions_framework.http
def telegram(request: triggers.HttpRequest) -> triggers.JsonResponse:
    """Handle one update."""
    return telegram_webhook.handle(request, get_runtime())
