"""Notifier adapters wired to loopback stand-ins, for the ``Notifier`` contract suite.

Each factory returns the notifier and ``delivered()``: what reached the channel, turned
back into the notification's JSON-ready fields (webhook: the POSTed body; SendGrid: the
JSON attachment; Telegram: the rendered message parsed back, the chat mapped to its user).
"""

from __future__ import annotations

import contextlib
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.encrypted_secret_store import EncryptedFileSecretStore
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.adapters.notify.delivery import DeadLetters, RetryPolicy
from prometheus_trader.adapters.notify.routing import RoutingNotifier
from prometheus_trader.adapters.notify.sendgrid_email import SendGridNotifier
from prometheus_trader.adapters.notify.telegram import TelegramNotifier
from prometheus_trader.adapters.notify.webhook import (
    WebhookEndpoint,
    WebhookNotifier,
    webhook_secret_name,
)
from prometheus_trader.domain.notifications import OPERATOR, NotificationPreferences
from prometheus_trader.ports import Notifier
from prometheus_trader.usecases.notify import NotifyCollections
from tests.standins.notify_sendgrid import SendGridStandIn
from tests.standins.notify_telegram import TelegramStandIn
from tests.standins.notify_webhook import WebhookReceiver

FAST = RetryPolicy(max_attempts=3, backoff_seconds=0.001, max_backoff_seconds=0.01)
START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SENDGRID_KEY = "SG.test-key"
BOT_TOKEN = "123456:TEST-token"
CHATS = {"u1": 1001, None: 9009}  # user → chat (None: the operator)


@dataclass
class NotifierHarness:
    """A notifier plus what actually reached the channel, as JSON-ready dicts."""

    notifier: Notifier
    delivered: Callable[[], list[dict[str, Any]]]


@dataclass
class Base:
    clock: SimulatedClock
    state: SqliteStateStore
    secrets: EncryptedFileSecretStore
    dead: DeadLetters


def base(tmp: Path, stack: contextlib.ExitStack) -> Base:
    clock = SimulatedClock(START)
    state = SqliteStateStore(tmp / "state.sqlite")
    stack.callback(state.close)
    secrets = EncryptedFileSecretStore(tmp / "secrets.enc", key=Fernet.generate_key())
    for user in ("u1", None):
        secrets.put_secret(webhook_secret_name(user), f"secret-{user}")
    return Base(clock, state, secrets, DeadLetters(state, clock))


def webhook_notifier(b: Base) -> WebhookNotifier:
    return WebhookNotifier(
        WebhookEndpoint("http://unused.invalid", "unused"),
        secrets=b.secrets,
        dead_letters=b.dead,
        clock=b.clock,
        policy=FAST,
        sleep=lambda _s: None,
        allow_private_hosts=True,
    )


def webhook(tmp: Path, stack: contextlib.ExitStack) -> NotifierHarness:
    b = base(tmp, stack)
    receiver = stack.enter_context(WebhookReceiver())
    notifier = WebhookNotifier(
        lambda n: WebhookEndpoint(receiver.url + "/hook", webhook_secret_name(n.user_id)),
        secrets=b.secrets,
        dead_letters=b.dead,
        clock=b.clock,
        policy=FAST,
        sleep=lambda _s: None,
        allow_private_hosts=True,
    )
    return NotifierHarness(notifier, lambda: [r.json() for r in receiver.accepted])


def sendgrid(tmp: Path, stack: contextlib.ExitStack) -> NotifierHarness:
    b = base(tmp, stack)
    standin = stack.enter_context(SendGridStandIn(SENDGRID_KEY))
    notifier = SendGridNotifier(
        api_key=lambda: SENDGRID_KEY,
        recipient=lambda n: f"{n.user_id or 'operator'}@example.com",
        from_email="alerts@example.com",
        state=b.state,
        clock=b.clock,
        dead_letters=b.dead,
        host=standin.url,
        digest_severities=frozenset(),  # the suite checks order: everything at once
        policy=FAST,
        sleep=lambda _s: None,
    )
    return NotifierHarness(notifier, standin.attachments)


MESSAGE = re.compile(
    r"^\S+ <b>(?P<title>.*)</b>\n<i>(?P<type>.*) · (?P<sev>.*)</i>\n<pre>(?P<body>.*)</pre>$", re.S
)


def parse_telegram(message: dict[str, Any]) -> dict[str, Any]:
    """A rendered Telegram message back into the notification's fields."""
    match = MESSAGE.match(message["text"])
    assert match is not None, message["text"]
    user = {chat: user for user, chat in CHATS.items()}[message["chat_id"]]
    return {
        "event_type": html.unescape(match["type"]),
        "severity": html.unescape(match["sev"]),
        "title": html.unescape(match["title"]),
        "body": json.loads(html.unescape(match["body"])),
        "user_id": user,
    }


def telegram(tmp: Path, stack: contextlib.ExitStack) -> NotifierHarness:
    b = base(tmp, stack)
    standin = stack.enter_context(TelegramStandIn(BOT_TOKEN))
    notifier = TelegramNotifier(
        token=lambda: BOT_TOKEN,
        chat=lambda n: CHATS.get(n.user_id),
        dead_letters=b.dead,
        clock=b.clock,
        api_base=standin.url,
        policy=FAST,
        sleep=lambda _s: None,
    )
    stack.callback(notifier.close)
    return NotifierHarness(notifier, lambda: [parse_telegram(m) for m in standin.messages])


def routing(tmp: Path, stack: contextlib.ExitStack) -> NotifierHarness:
    """The router over a webhook receiver configured for u1 and for the operator."""
    b = base(tmp, stack)
    receiver = stack.enter_context(WebhookReceiver())
    for user in ("u1", OPERATOR):
        prefs = NotificationPreferences(user_id=user, webhook_url=receiver.url + f"/{user}")
        b.state.set(NotifyCollections.PREFERENCES, user, prefs.model_dump(mode="json"))
    notifier = RoutingNotifier(b.state, webhook=webhook_notifier(b))
    return NotifierHarness(notifier, lambda: [r.json() for r in receiver.accepted])
