"""SendGrid and Telegram pointed at loopback stand-ins of their APIs, and the routing
notifier: payloads as the real APIs expect them, digests, the daily report as HTML,
retries and dead letters, routes by event type and severity."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.standins.notify_harnesses import BOT_TOKEN, SENDGRID_KEY, Base, base, parse_telegram
from tests.standins.notify_sendgrid import SendGridStandIn
from tests.standins.notify_telegram import TelegramStandIn
from tests.standins.notify_webhook import WebhookReceiver

from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.notify.delivery import RetryPolicy
from prometheus_trader.adapters.notify.routing import RoutingNotifier
from prometheus_trader.adapters.notify.sendgrid_email import SendGridNotifier
from prometheus_trader.adapters.notify.telegram import TelegramNotifier
from prometheus_trader.adapters.notify.webhook import WebhookEndpoint, WebhookNotifier
from prometheus_trader.domain.notifications import NotificationPreferences, Route
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.ports import Notification
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.notify import FlushDigests, NotifyCollections

pytestmark = pytest.mark.integration

W = tuple[Base, contextlib.ExitStack, list[float]]
POLICY = RetryPolicy(max_attempts=3, backoff_seconds=0.5, max_backoff_seconds=4)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Base, contextlib.ExitStack, list[float]]]:
    with contextlib.ExitStack() as stack:
        sleeps: list[float] = []
        yield base(tmp_path, stack), stack, sleeps


def note(
    n: int, severity: str = "info", event_type: str = "trade_executed", user: str | None = "u1"
) -> Notification:
    return Notification(
        event_type=event_type,
        severity=severity,
        title=f"ETH <filled> #{n}",
        body={"event_id": f"evt-{n}", "n": n},
        user_id=user,
    )


def email(
    b: Base, standin: SendGridStandIn, sleeps: list[float], tmp: Path | None = None
) -> SendGridNotifier:
    return SendGridNotifier(
        api_key=lambda: SENDGRID_KEY,
        recipient="u1@example.com",
        from_email="alerts@example.com",
        state=b.state,
        clock=b.clock,
        dead_letters=b.dead,
        host=standin.url,
        blobs=LocalBlobStore(tmp) if tmp is not None else None,
        policy=POLICY,
        sleep=sleeps.append,
    )


# ------------------------------------------------------------------------ SendGrid
def test_critical_email_goes_at_once_with_the_v3_payload(world: W, tmp_path: Path) -> None:
    b, stack, sleeps = world
    standin = stack.enter_context(SendGridStandIn(SENDGRID_KEY))
    email(b, standin, sleeps).send(note(1, "critical", "risk_breach"))
    (mail,) = standin.mails
    assert mail["personalizations"] == [{"to": [{"email": "u1@example.com"}]}]
    assert mail["from"] == {"email": "alerts@example.com"}
    assert mail["subject"] == "[CRITICAL] ETH <filled> #1"
    types = [c["type"] for c in mail["content"]]
    assert types == ["text/plain", "text/html"]
    html_part = mail["content"][1]["value"]
    assert "ETH &lt;filled&gt; #1" in html_part and "<filled>" not in html_part
    assert standin.attachments() == [
        {
            "event_type": "risk_breach",
            "severity": "critical",
            "title": "ETH <filled> #1",
            "body": {"event_id": "evt-1", "n": 1},
            "user_id": "u1",
        }
    ]


def test_info_and_warning_wait_for_one_digest(world: W) -> None:
    b, stack, sleeps = world
    standin = stack.enter_context(SendGridStandIn(SENDGRID_KEY))
    notifier = email(b, standin, sleeps)
    notifier.send(note(1))
    notifier.send(note(2, "warning"))
    notifier.send(note(2, "warning"))  # redelivered: queued once
    assert standin.mails == []
    assert len(b.state.query(NotifyCollections.DIGEST_QUEUE)) == 2
    assert FlushDigests(notifier).run() == 1
    (mail,) = standin.mails
    assert mail["subject"] == "Prometheus digest: 2 notifications"
    assert [n["body"]["n"] for n in standin.attachments()[0]] == [1, 2]
    assert b.state.query(NotifyCollections.DIGEST_QUEUE) == []
    assert FlushDigests(notifier).run() == 0  # nothing left: nothing sent twice


def test_daily_summary_is_the_report_html(world: W, tmp_path: Path) -> None:
    b, stack, sleeps = world
    blobs = LocalBlobStore(tmp_path / "blobs")
    blobs.put(
        "reports/u1/2025-05-21.html",
        b"<html><body><h1>Daily report</h1></body></html>",
        "text/html",
    )
    standin = stack.enter_context(SendGridStandIn(SENDGRID_KEY))
    notifier = email(b, standin, sleeps, tmp_path / "blobs")
    summary = Notification(
        event_type="daily_summary",
        severity="info",
        title="daily summary",
        body={
            "event_id": "e-sum",
            "reports": ["reports/u1/2025-05-21.json", "reports/u1/2025-05-21.html"],
        },
        user_id="u1",
    )
    notifier.send(summary)
    (mail,) = standin.mails  # not held for the digest
    assert mail["content"][1] == {
        "type": "text/html",
        "value": "<html><body><h1>Daily report</h1></body></html>",
    }


def test_sendgrid_outage_retries_then_dead_letters_critical_and_keeps_digest(world: W) -> None:
    b, stack, sleeps = world
    flaky = stack.enter_context(SendGridStandIn(SENDGRID_KEY, fail_first=2))
    email(b, flaky, sleeps).send(note(1, "critical"))
    assert len(flaky.mails) == 1 and sleeps == [0.5, 1.0]
    down = stack.enter_context(SendGridStandIn(SENDGRID_KEY, fail_first=1000))
    notifier = email(b, down, sleeps)
    notifier.send(note(2, "critical"))
    notifier.send(note(3))
    assert notifier.flush_digests() == 0
    (dead,) = b.dead.list("email")
    assert (dead["delivery_id"], dead["attempts"], dead["reason"]) == ("evt-2", 3, "HTTP 503")
    assert [
        d["notification"]["body"]["n"] for d in b.state.query(NotifyCollections.DIGEST_QUEUE)
    ] == [3]
    assert SENDGRID_KEY not in repr(b.state.query(NotifyCollections.DEAD_LETTERS))


def test_wrong_api_key_is_permanent(world: W) -> None:
    b, stack, sleeps = world
    standin = stack.enter_context(SendGridStandIn("SG.other"))
    email(b, standin, sleeps).send(note(1, "critical"))
    assert len(standin.requests) == 1
    (dead,) = b.dead.list()
    assert dead["reason"] == "HTTP 401"


# ------------------------------------------------------------------------ Telegram
def telegram(b: Base, standin: TelegramStandIn, sleeps: list[float]) -> TelegramNotifier:
    notifier = TelegramNotifier(
        token=lambda: BOT_TOKEN,
        chat=lambda n: 1001 if n.user_id == "u1" else None,
        dead_letters=b.dead,
        clock=b.clock,
        api_base=standin.url,
        policy=POLICY,
        sleep=sleeps.append,
    )
    return notifier


def test_telegram_message_payload(world: W) -> None:
    b, stack, sleeps = world
    standin = stack.enter_context(TelegramStandIn(BOT_TOKEN))
    telegram(b, standin, sleeps).send(note(1, "critical", "circuit_breaker"))
    (message,) = standin.messages
    assert message["chat_id"] == 1001
    assert message["parse_mode"] == "HTML"
    assert message["text"].startswith(
        "🔴 <b>ETH &lt;filled&gt; #1</b>\n<i>circuit_breaker · critical</i>"
    )
    assert parse_telegram(message)["body"] == {"event_id": "evt-1", "n": 1}
    assert standin.requests[0].path == f"/bot{BOT_TOKEN}/sendMessage"


def test_telegram_429_retry_after_is_honoured(world: W) -> None:
    b, stack, sleeps = world
    standin = stack.enter_context(TelegramStandIn(BOT_TOKEN, fail_first=1))
    telegram(b, standin, sleeps).send(note(1))
    assert sleeps == [1.0] and len(standin.messages) == 1


def test_telegram_failure_dead_letter_never_holds_the_token(world: W) -> None:
    b, stack, sleeps = world
    standin = stack.enter_context(TelegramStandIn("999:other"))
    telegram(b, standin, sleeps).send(note(1))
    (dead,) = b.dead.list("telegram")
    assert (dead["destination"], dead["reason"], dead["attempts"]) == ("1001", "HTTP 401", 1)
    assert BOT_TOKEN not in repr(dead)


# ------------------------------------------------------------------------- routing
def test_routes_by_event_type_and_severity(world: W) -> None:
    b, stack, sleeps = world
    hook = stack.enter_context(WebhookReceiver())
    sg = stack.enter_context(SendGridStandIn(SENDGRID_KEY))
    tg = stack.enter_context(TelegramStandIn(BOT_TOKEN))
    prefs = NotificationPreferences(
        user_id="u1",
        webhook_url=hook.url + "/u1",
        email="u1@example.com",
        telegram_chat_id=1001,
        routes=[
            Route(channel="webhook"),
            Route(channel="email", min_severity="critical"),
            Route(channel="telegram", event_types=["trade_executed", "position_closed"]),
        ],
    )
    b.state.set(NotifyCollections.PREFERENCES, "u1", prefs.model_dump(mode="json"))
    webhook = WebhookNotifier(
        WebhookEndpoint("http://unused.invalid", "unused"),
        secrets=b.secrets,
        dead_letters=b.dead,
        clock=b.clock,
        policy=POLICY,
        sleep=sleeps.append,
        allow_private_hosts=True,
    )
    router = RoutingNotifier(
        b.state,
        webhook=webhook,
        email=email(b, sg, sleeps),
        telegram=telegram(b, tg, sleeps),
    )
    router.send(note(1, "info", "trade_executed"))
    router.send(note(2, "critical", "risk_breach"))
    router.send(note(3, "info", "signal_published"))
    assert [r.json()["body"]["n"] for r in hook.accepted] == [1, 2, 3]
    assert [a["body"]["n"] for a in sg.attachments()] == [2]
    assert [parse_telegram(m)["body"]["n"] for m in tg.messages] == [1]
    assert b.dead.list() == []


def test_user_fields_are_the_fallback_and_strangers_get_nothing(world: W) -> None:
    b, stack, sleeps = world
    hook = stack.enter_context(WebhookReceiver())
    user = User.with_profile("u1", RiskProfile.MODERATE, notify_webhook=hook.url + "/legacy")
    b.state.set(Collections.USERS, "u1", user.model_dump(mode="json"))
    webhook = WebhookNotifier(
        WebhookEndpoint("http://unused.invalid", "unused"),
        secrets=b.secrets,
        dead_letters=b.dead,
        clock=b.clock,
        policy=POLICY,
        sleep=sleeps.append,
        allow_private_hosts=True,
    )
    router = RoutingNotifier(b.state, webhook=webhook)
    router.send(note(1))
    router.send(note(2, user="u2"))  # no preferences, no user document
    assert [(r.path, r.json()["body"]["n"]) for r in hook.accepted] == [("/legacy", 1)]
