"""The services' wiring: with ``PROMETHEUS_NOTIFIER=routed`` the runtime's notifier sends an
event to the user's webhook, email and Telegram (stand-ins on loopback, endpoints from
settings), credentials from the SecretStore; a redelivered event is not sent again."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.standins.notify_harnesses import parse_telegram
from tests.standins.notify_sendgrid import SendGridStandIn
from tests.standins.notify_telegram import TelegramStandIn
from tests.standins.notify_webhook import WebhookReceiver

from prometheus_trader.adapters.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from prometheus_trader.app import cloud
from prometheus_trader.domain.events import Event, EventType, Severity
from prometheus_trader.domain.notifications import NotificationPreferences
from prometheus_trader.ports import BusMessage
from prometheus_trader.usecases.names import Topics
from prometheus_trader.usecases.notify import NotifyCollections

pytestmark = pytest.mark.integration


def test_routed_runtime_delivers_to_every_channel_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.ExitStack() as stack:
        hook = stack.enter_context(WebhookReceiver())
        sendgrid = stack.enter_context(SendGridStandIn("SG.live-key"))
        telegram = stack.enter_context(TelegramStandIn("42:bot-token"))
        for key, value in {
            "PROMETHEUS_BACKEND": "embedded",
            "PROMETHEUS_VAR_DIR": str(tmp_path / "var"),
            "PROMETHEUS_NOTIFIER": "routed",
            "PROMETHEUS_SENDGRID_HOST": sendgrid.url,
            "PROMETHEUS_TELEGRAM_API_BASE": telegram.url,
            "PROMETHEUS_WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",  # the receiver is on loopback
        }.items():
            monkeypatch.setenv(key, value)
        cloud.reset_runtime()
        stack.callback(cloud.reset_runtime)
        rt = cloud.get_runtime()
        rt.secrets.put_secret(rt.settings.sendgrid_api_key_secret, "SG.live-key")
        rt.secrets.put_secret(rt.settings.telegram_bot_token_secret, "42:bot-token")
        rt.secrets.put_secret("notify/alice/webhook", "whsec-alice")
        prefs = NotificationPreferences(
            user_id="alice",
            webhook_url=hook.url + "/alice",
            email="alice@example.com",
            telegram_chat_id=777,
        )
        rt.state.set(NotifyCollections.PREFERENCES, "alice", prefs.model_dump(mode="json"))
        event = Event(
            id="evt-breach-1",
            type=EventType.CIRCUIT_BREAKER,
            created_at=datetime(2025, 5, 21, 9, 0, tzinfo=UTC),
            user_id="alice",
            severity=Severity.CRITICAL,
            payload={"breaker": "daily_loss", "realized_today_pct": -3.2},
        )
        message = BusMessage(Topics.EVENTS, "m1", event.model_dump(mode="json"))
        assert rt.notify.handle(message) is not None
        assert rt.notify.handle(message) is None  # redelivered: already sent
        assert rt.state.query(NotifyCollections.DEAD_LETTERS) == []

    (got,) = hook.accepted
    now = datetime.now(UTC).timestamp()
    assert verify(
        "whsec-alice",
        got.headers[TIMESTAMP_HEADER],
        got.body,
        got.headers[SIGNATURE_HEADER],
        now=now,
    )
    assert got.json()["body"]["event_id"] == "evt-breach-1"
    (mail,) = sendgrid.mails
    assert mail["personalizations"][0]["to"] == [{"email": "alice@example.com"}]
    assert mail["from"] == {"email": rt.settings.notify_from_email}
    (tg,) = telegram.messages
    assert tg["chat_id"] == 777
    assert parse_telegram({**tg, "chat_id": 1001})["event_type"] == "circuit_breaker"
