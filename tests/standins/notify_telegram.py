"""A loopback stand-in of the Telegram Bot API's ``sendMessage``: checks the token in the
path, requires ``chat_id`` and ``text``, answers like Telegram (``{"ok": true, "result":
Message}``; 429 with ``parameters.retry_after``) and records every message."""

from __future__ import annotations

import json
from typing import Any

from tests.standins.notify_http import LoopbackServer, Recorded, Reply


class TelegramStandIn(LoopbackServer):
    """``/bot<token>/sendMessage``; ``fail_first`` requests get 429 (retry after 1 s)."""

    def __init__(self, token: str, fail_first: int = 0) -> None:
        super().__init__()
        self.token = token
        self.fail_first = fail_first
        self.messages: list[dict[str, Any]] = []

    def answer(self, request: Recorded) -> Reply:
        if request.path != f"/bot{self.token}/sendMessage":
            return Reply(
                404 if request.path.startswith(f"/bot{self.token}/") else 401,
                {"ok": False, "error_code": 401, "description": "Unauthorized"},
            )
        if len(self.requests) <= self.fail_first:
            return Reply(
                429,
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                },
            )
        try:
            data = json.loads(request.body)
        except ValueError:
            return Reply(400, {"ok": False, "error_code": 400, "description": "Bad Request"})
        if not isinstance(data, dict) or "chat_id" not in data or not data.get("text"):
            return Reply(
                400,
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: message text is empty",
                },
            )
        self.messages.append(data)
        return Reply(
            200,
            {
                "ok": True,
                "result": {
                    "message_id": len(self.messages),
                    "chat": {"id": data["chat_id"], "type": "private"},
                    "date": 1716278400,
                    "text": data["text"],
                },
            },
        )
