"""The Telegram bot webhook (``functions/telegram``): authenticate, parse, run a command.

Telegram sends ``X-Telegram-Bot-Api-Secret-Token`` with the secret given to
``setWebhook``; it is compared in constant time with the SecretStore's copy. The reply
goes back in the webhook response itself (``{"method": "sendMessage", …}``), which the
Bot API executes, so answering needs no outbound call. Anything that is not a command
gets an empty 200: a non-2xx makes Telegram redeliver the same update again and again.
"""

from __future__ import annotations

import hmac
import logging
from typing import Protocol

from pydantic import ValidationError

from prometheus_trader.app.inbound import HttpError, json_object, neutralize_bodyless, read_body
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.triggers import HttpRequest, JsonResponse, traced
from prometheus_trader.ports import Clock, SecretNotFound, SecretStore, StateStore
from prometheus_trader.usecases.names import labels
from prometheus_trader.usecases.telegram_commands import HandleTelegramCommand, TelegramUpdate

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY_BYTES = 64 * 1024  # an update with a command is a few hundred bytes


class TelegramRuntime(Protocol):
    """What the webhook needs from the runtime (``CloudRuntime`` has it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def state(self) -> StateStore: ...

    @property
    def secrets(self) -> SecretStore: ...

    @property
    def clock(self) -> Clock: ...


def handle(request: HttpRequest, runtime: TelegramRuntime) -> JsonResponse:
    """Answer one webhook call."""
    with traced(request):
        return _handle(request, runtime)


def _handle(request: HttpRequest, runtime: TelegramRuntime) -> JsonResponse:
    # the body is bounded and parsed before anything else, so a hostile body is a 4xx
    # whatever the deployment's state (a bodyless request never waits on the socket)
    neutralize_bodyless(request)
    if request.method != "POST":
        return {"error": f"method {request.method} not allowed"}, 405
    try:
        data = json_object(read_body(request, MAX_BODY_BYTES), "a Telegram update")
        update = TelegramUpdate.model_validate(data)
    except HttpError as exc:
        return {"error": str(exc)}, exc.status
    except ValidationError as exc:
        log.warning(
            "telegram update rejected: %s", type(exc).__name__, extra=labels(stage="telegram")
        )
        return {"error": "body is not a Telegram update"}, 400
    try:
        expected = runtime.secrets.get_secret(runtime.settings.telegram_webhook_secret_name)
    except SecretNotFound:
        log.error("telegram webhook secret is not configured", extra=labels(stage="telegram"))
        return {"error": "telegram webhook not configured"}, 503
    given = request.headers.get(SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return {"error": "bad or missing secret token"}, 403
    reply = HandleTelegramCommand(runtime.state, runtime.clock).handle(update)
    if reply is None:
        return {}, 200
    return {"method": "sendMessage", "chat_id": reply.chat_id, "text": reply.text}, 200
