"""Signed webhooks against a loopback receiver: retries, signatures, dead letter, limits.

The receiver fails the first two deliveries: the third arrives and its signature verifies
with the user's secret. An endpoint that never succeeds ends in the dead letter with every
event (nothing lost); a 4xx is not retried; Retry-After is honoured; the per-endpoint rate
limit is shared through the state store, so two notifier instances together stay within it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from tests.standins.notify_webhook import WebhookReceiver

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.encrypted_secret_store import EncryptedFileSecretStore
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.adapters.notify.delivery import DeadLetters, RateLimiter, RetryPolicy
from prometheus_trader.adapters.notify.routing import RoutingNotifier
from prometheus_trader.adapters.notify.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookEndpoint,
    WebhookNotifier,
    encode_body,
    verify,
)
from prometheus_trader.ports import Notification
from prometheus_trader.usecases.notify import NotifyCollections

pytestmark = pytest.mark.integration

SECRET = "whsec-u1-0123456789abcdef"
START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
FAST = RetryPolicy(max_attempts=4, backoff_seconds=0.01, max_backoff_seconds=0.05)


class World:
    def __init__(self, tmp: Path) -> None:
        self.clock = SimulatedClock(START)
        self.state = SqliteStateStore(tmp / "state.sqlite")
        self.secrets = EncryptedFileSecretStore(tmp / "s.enc", key=Fernet.generate_key())
        self.secrets.put_secret("notify/u1/webhook", SECRET)
        self.dead = DeadLetters(self.state, self.clock)
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        # the simulated clock moves by exactly the backoff: no wall-clock waiting
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def notifier(
        self, url: str, *, limiter: RateLimiter | None = None, policy: RetryPolicy = FAST
    ) -> WebhookNotifier:
        return WebhookNotifier(
            WebhookEndpoint(url, "notify/u1/webhook"),
            secrets=self.secrets,
            dead_letters=self.dead,
            clock=self.clock,
            limiter=limiter,
            policy=policy,
            sleep=self.sleep,
            allow_private_hosts=True,  # the receiver is on loopback
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.state.close()


def event(n: int) -> Notification:
    return Notification(
        event_type="trade_executed",
        severity="info",
        title=f"ETH/USDT filled #{n}",
        body={"event_id": f"evt-{n}", "symbol": "ETH/USDT:USDT", "n": n},
        user_id="u1",
    )


def test_third_delivery_arrives_and_its_signature_verifies(world: World) -> None:
    with WebhookReceiver(fail_first=2) as receiver:
        world.notifier(receiver.url + "/hook").send(event(1))
    assert len(receiver.requests) == 3
    (got,) = receiver.accepted
    assert got.body == encode_body(event(1))
    assert got.headers[DELIVERY_HEADER] == "evt-1"
    now = world.clock.now_ms() / 1000
    assert verify(
        SECRET, got.headers[TIMESTAMP_HEADER], got.body, got.headers[SIGNATURE_HEADER], now=now
    )
    # a wrong secret or a tampered body does not verify
    assert not verify(
        "other", got.headers[TIMESTAMP_HEADER], got.body, got.headers[SIGNATURE_HEADER], now=now
    )
    assert not verify(
        SECRET,
        got.headers[TIMESTAMP_HEADER],
        got.body + b" ",
        got.headers[SIGNATURE_HEADER],
        now=now,
    )
    # exponential backoff between the three attempts, and nothing dead-lettered
    assert world.sleeps == [0.01, 0.02]
    assert world.dead.list() == []


def test_each_attempt_is_signed_with_its_own_timestamp(world: World) -> None:
    with WebhookReceiver(fail_first=2) as receiver:
        world.notifier(receiver.url).send(event(1))
    stamps = [r.headers[TIMESTAMP_HEADER] for r in receiver.requests]
    signatures = {r.headers[SIGNATURE_HEADER] for r in receiver.requests}
    assert len(signatures) == len(set(stamps))


def test_failing_endpoint_dead_letters_every_event_nothing_lost(world: World) -> None:
    with WebhookReceiver(fail_first=10_000) as receiver:
        notifier = world.notifier(receiver.url)
        for n in range(5):
            notifier.send(event(n))
        # a redelivered event does not duplicate its dead letter
        notifier.send(event(0))
    assert len(receiver.requests) == 6 * FAST.max_attempts
    dead = world.dead.list("webhook")
    assert sorted(d["delivery_id"] for d in dead) == [f"evt-{n}" for n in range(5)]
    for d in dead:
        assert d["attempts"] == FAST.max_attempts
        assert d["reason"] == "HTTP 503"
        assert d["destination"] == receiver.url
        n = d["notification"]["body"]["n"]
        assert d["notification"] == {
            "event_type": "trade_executed",
            "severity": "info",
            "title": f"ETH/USDT filled #{n}",
            "body": {"event_id": f"evt-{n}", "symbol": "ETH/USDT:USDT", "n": n},
            "user_id": "u1",
        }
        assert SECRET not in repr(d)


def test_unreachable_endpoint_is_dead_lettered(world: World) -> None:
    with WebhookReceiver() as receiver:
        url = receiver.url  # closed after the block: connection refused
    world.notifier(url).send(event(7))
    (dead,) = world.dead.list()
    assert dead["attempts"] == FAST.max_attempts
    assert dead["reason"] == "ConnectError"


def test_client_error_is_not_retried(world: World) -> None:
    with WebhookReceiver(fail_first=10, fail_status=410) as receiver:
        world.notifier(receiver.url).send(event(1))
    assert len(receiver.requests) == 1
    (dead,) = world.dead.list()
    assert (dead["attempts"], dead["reason"]) == (1, "HTTP 410")


def test_retry_after_is_honoured(world: World) -> None:
    with WebhookReceiver(fail_first=1, fail_status=429, retry_after="7") as receiver:
        world.notifier(receiver.url).send(event(1))
    assert world.sleeps == [7.0]
    assert len(receiver.accepted) == 1


def test_missing_secret_dead_letters_without_sending(world: World) -> None:
    world.secrets.delete_secret("notify/u1/webhook")
    with WebhookReceiver() as receiver:
        world.notifier(receiver.url).send(event(1))
    assert receiver.requests == []
    (dead,) = world.dead.list()
    assert dead["reason"] == "no signing secret"


def test_rate_limit_is_shared_between_instances(world: World) -> None:
    # two notifiers (two function instances) over one state store, 3 per minute
    limiter_a = RateLimiter(world.state, world.clock, 3, sleep=world.sleep)
    limiter_b = RateLimiter(world.state, world.clock, 3, sleep=world.sleep)
    with WebhookReceiver() as receiver:
        a = world.notifier(receiver.url, limiter=limiter_a)
        b = world.notifier(receiver.url, limiter=limiter_b)
        stamps = []
        for n in range(7):
            (a if n % 2 else b).send(event(n))
            stamps.append(world.clock.now_ms() // 60_000)
    assert len(receiver.accepted) == 7
    minutes = [int(r.headers[TIMESTAMP_HEADER]) // 60 for r in receiver.accepted]
    assert max(minutes.count(m) for m in set(minutes)) == 3
    assert world.dead.list() == []


def test_rate_limited_beyond_the_wait_budget_is_dead_lettered(world: World) -> None:
    limiter = RateLimiter(world.state, world.clock, 1, sleep=world.sleep, max_wait_seconds=0)
    with WebhookReceiver() as receiver:
        notifier = world.notifier(receiver.url, limiter=limiter)
        notifier.send(event(1))
        notifier.send(event(2))
    assert len(receiver.accepted) == 1
    (dead,) = world.dead.list()
    assert (dead["delivery_id"], dead["reason"]) == ("evt-2", "rate limited")


def test_dead_letters_are_replayed_once_the_endpoint_recovers(world: World) -> None:
    with WebhookReceiver(fail_first=10_000) as down:
        url = down.url
        for n in range(3):
            world.notifier(url).send(event(n))
    assert len(world.dead.list()) == 3
    router = RoutingNotifier(world.state, webhook=world.notifier("http://unused.invalid"))
    assert router.replay_dead_letters(world.dead) == (0, 3)  # still down: all kept
    assert len(world.dead.list()) == 3
    with WebhookReceiver() as up:
        for d in world.dead.list():  # the endpoint moved to a working receiver
            world.state.update(NotifyCollections.DEAD_LETTERS, d["id"], {"destination": up.url})
        assert router.replay_dead_letters(world.dead) == (3, 0)
    assert sorted(r.headers[DELIVERY_HEADER] for r in up.accepted) == ["evt-0", "evt-1", "evt-2"]
    assert world.dead.list() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://localhost:{port}/hook",
        "http://169.254.169.254/computeMetadata/v1/",
        "http://10.1.2.3/hook",
        "http://[::1]:{port}/hook",
    ],
)
def test_private_destinations_are_refused_by_default(world: World, url: str) -> None:
    with WebhookReceiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        notifier = WebhookNotifier(
            WebhookEndpoint(url.format(port=port), "notify/u1/webhook"),
            secrets=world.secrets,
            dead_letters=world.dead,
            clock=world.clock,
            policy=FAST,
            sleep=world.sleep,
        )
        notifier.send(event(1))
    assert receiver.requests == []
    (dead,) = world.dead.list()
    assert (dead["reason"], dead["attempts"]) == ("destination not allowed", 0)
