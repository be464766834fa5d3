"""Request body limits, as plain ASGI middleware (before any route parses anything).

A body is read only for methods that carry one (POST, PUT, PATCH): a GET announcing a
chunked body it never sends is answered without waiting for it. A body larger than the
limit is a 413 as soon as its size is known (``Content-Length`` or the bytes so far);
a client that stalls mid-body gets a 408 after ``read_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def send_error(send: Send, status: int, detail: str) -> None:
    """A JSON error response (the API's ``{"detail": ...}`` shape)."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Buffer at most ``max_bytes`` of body, then hand the app one complete message."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float = 5.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        if scope["method"] in BODY_METHODS:
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length", b"")
            if length and (not length.isdigit() or int(length) > self.max_bytes):
                await send_error(send, 413, f"body larger than {self.max_bytes} bytes")
                return
            more = True
            while more:
                try:
                    message = await asyncio.wait_for(receive(), self.read_timeout_s)
                except TimeoutError:
                    await send_error(send, 408, "timed out reading the request body")
                    return
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = bool(message.get("more_body", False))
                if len(body) > self.max_bytes:
                    await send_error(send, 413, f"body larger than {self.max_bytes} bytes")
                    return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # only a disconnect can follow

        await self.app(scope, replay, send)
