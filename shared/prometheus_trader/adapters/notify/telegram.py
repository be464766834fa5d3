"""Telegram messages through the Bot API (``<api_base>/bot<token>/sendMessage``).

The token is part of the URL, so no URL, request or httpx error text is ever logged or
recorded here: failures are described by status code or exception type only.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable

import httpx

from prometheus_trader.adapters.notify.delivery import (
    DeadLetters,
    DeliveryFailed,
    MissingCredential,
    RateLimiter,
    RetryPolicy,
    Sleep,
    call_with_retries,
    check_status,
    retry_after_header,
)
from prometheus_trader.ports import Clock, Notification, SecretNotFound

CHANNEL = "telegram"
MAX_TEXT = 4096  # Telegram's limit per message
ICONS = {"critical": "🔴", "warning": "🟠", "info": "🔵"}


def render(notification: Notification) -> str:
    """The message (HTML parse mode): title, type and severity, the body as JSON."""
    head = (
        f"{ICONS.get(notification.severity, '•')} <b>{html.escape(notification.title)}</b>\n"
        f"<i>{html.escape(notification.event_type)} · {html.escape(notification.severity)}</i>\n"
    )
    body = json.dumps(dict(notification.body), indent=1, sort_keys=True, default=str)
    text = f"{head}<pre>{html.escape(body)}</pre>"
    if len(text) > MAX_TEXT:  # keep the head; the event id is in the body's first lines
        text = f"{head}<pre>{html.escape(body[: MAX_TEXT - len(head) - 40])}…</pre>"
    return text


def _retry_after(response: httpx.Response, fallback: float | None) -> float | None:
    """Telegram says how long to wait in ``parameters.retry_after`` of a 429 body."""
    try:
        data = response.json()
    except ValueError:
        return fallback
    value = data.get("parameters", {}).get("retry_after") if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) else fallback


class TelegramNotifier:
    """``Notifier`` that sends a Telegram message to a chat.

    ``chat`` is fixed or chosen per notification (None: no Telegram for it). Retries,
    the per-chat rate limit and the dead letter work as for webhooks.
    """

    def __init__(
        self,
        *,
        token: Callable[[], str],
        chat: int | Callable[[Notification], int | None],
        dead_letters: DeadLetters,
        clock: Clock,
        api_base: str = "https://api.telegram.org",
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        client: httpx.Client | None = None,
        sleep: Sleep = time.sleep,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._token = token
        self._chat = chat
        self._dead = dead_letters
        self._clock = clock
        self._base = api_base.rstrip("/")
        self._limiter = limiter
        self._policy = policy or RetryPolicy()
        self._client = client or httpx.Client(timeout=timeout_seconds)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"TelegramNotifier(api_base={self._base!r})"

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def send(self, notification: Notification) -> None:
        """Message the notification's chat (or dead-letter it)."""
        chat = self._chat if isinstance(self._chat, int) else self._chat(notification)
        if chat is not None:
            self.send_to(chat, notification)

    def send_to(self, chat_id: int, notification: Notification) -> None:
        """Message one chat."""
        self.send_text(chat_id, render(notification), notification)

    def send_text(self, chat_id: int, text: str, notification: Notification) -> None:
        """Send ``text``; ``notification`` is what a failure dead-letters."""
        if self._limiter is not None and not self._limiter.acquire(f"{CHANNEL}:{chat_id}"):
            self._dead.add(CHANNEL, str(chat_id), notification, attempts=0, reason="rate limited")
            return
        payload = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }

        def attempt() -> None:
            try:
                token = self._token()
            except SecretNotFound:
                raise MissingCredential from None
            url = f"{self._base}/bot{token}/sendMessage"
            response = self._client.post(url, json=payload)
            check_status(
                response, _retry_after(response, retry_after_header(response, self._clock.now()))
            )

        try:
            call_with_retries(attempt, self._policy, self._sleep)
        except DeliveryFailed as failed:
            self._dead.add(
                CHANNEL, str(chat_id), notification, attempts=failed.attempts, reason=failed.reason
            )
