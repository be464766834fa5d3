"""Signed webhooks: one JSON POST per notification, HMAC-SHA256 over ``timestamp + "." +
body`` with the user's secret (from the SecretStore), retried with exponential backoff,
rate-limited per endpoint, dead-lettered after the last attempt.

Headers (docs/notifications.md has a receiver's verification snippet)::

    X-Prometheus-Timestamp: 1716278400            (unix seconds, re-signed per attempt)
    X-Prometheus-Signature: sha256=<hex digest>
    X-Prometheus-Event: position_closed
    X-Prometheus-Delivery: <event id>             (receivers dedupe on it)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from prometheus_trader.adapters.embedded.console_notifier import notification_to_dict
from prometheus_trader.adapters.notify.delivery import (
    DeadLetters,
    DeliveryFailed,
    RateLimiter,
    RetryPolicy,
    Sleep,
    call_with_retries,
    check_status,
    delivery_id,
    retry_after_header,
)
from prometheus_trader.ports import Clock, Notification, SecretNotFound, SecretStore

TIMESTAMP_HEADER = "X-Prometheus-Timestamp"
SIGNATURE_HEADER = "X-Prometheus-Signature"
EVENT_HEADER = "X-Prometheus-Event"
DELIVERY_HEADER = "X-Prometheus-Delivery"
CHANNEL = "webhook"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + HMAC-SHA256(secret, timestamp "." body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance_seconds: float = 300.0,
) -> bool:
    """A receiver's check: the signature matches (constant time) and the timestamp is
    within ``tolerance_seconds`` of ``now`` (stops replays of old deliveries)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def is_public_destination(url: str) -> bool:
    """False when the URL's host resolves to a loopback, private, link-local or otherwise
    non-global address: a user's webhook must not reach the metadata server or internal
    services (SSRF). A name that does not resolve is left to fail on connect."""
    host = urlsplit(url).hostname
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return True
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_global for info in infos)


def webhook_secret_name(user_id: str | None) -> str:
    """Where a user's (or the operator's) webhook signing secret lives in the SecretStore."""
    return f"notify/{user_id or '_operator'}/webhook"


@dataclass(frozen=True)
class WebhookEndpoint:
    """A receiver URL and the SecretStore name of its signing secret."""

    url: str
    secret_name: str


def encode_body(notification: Notification) -> bytes:
    """The POSTed JSON: exactly the notification's fields, keys sorted (stable bytes)."""
    return json.dumps(
        notification_to_dict(notification), sort_keys=True, separators=(",", ":"), default=str
    ).encode()


class WebhookNotifier:
    """``Notifier`` that POSTs signed JSON to an endpoint.

    ``endpoint`` is fixed or chosen per notification (None: this notification has no
    webhook). Endpoints on loopback/private/link-local addresses are refused unless
    ``allow_private_hosts`` (tests, a trusted internal receiver). A delivery that fails
    every attempt, hits a permanent status, has no signing secret, is refused or stays
    rate-limited goes to the dead letter and ``send`` returns: the event is kept, and one
    bad endpoint never blocks the user's other channels.
    """

    def __init__(
        self,
        endpoint: WebhookEndpoint | Callable[[Notification], WebhookEndpoint | None],
        *,
        secrets: SecretStore,
        dead_letters: DeadLetters,
        clock: Clock,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        client: httpx.Client | None = None,
        sleep: Sleep = time.sleep,
        timeout_seconds: float = 10.0,
        allow_private_hosts: bool = False,
    ) -> None:
        self._endpoint = endpoint
        self._allow_private = allow_private_hosts
        self._secrets = secrets
        self._dead = dead_letters
        self._clock = clock
        self._limiter = limiter
        self._policy = policy or RetryPolicy()
        self._client = client or httpx.Client(timeout=timeout_seconds, follow_redirects=False)
        self._sleep = sleep

    def __repr__(self) -> str:
        return "WebhookNotifier()"  # the endpoint may embed a token: keep it out of reprs

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def send(self, notification: Notification) -> None:
        """Deliver one notification (or dead-letter it)."""
        endpoint = (
            self._endpoint
            if isinstance(self._endpoint, WebhookEndpoint)
            else self._endpoint(notification)
        )
        if endpoint is not None:
            self.send_to(endpoint, notification)

    def send_to(self, endpoint: WebhookEndpoint, notification: Notification) -> None:
        """Deliver to one endpoint (or dead-letter it)."""
        if not self._allow_private and not is_public_destination(endpoint.url):
            self._dead.add(
                CHANNEL, endpoint.url, notification, attempts=0, reason="destination not allowed"
            )
            return
        try:
            secret = self._secrets.get_secret(endpoint.secret_name)
        except SecretNotFound:
            self._dead.add(
                CHANNEL, endpoint.url, notification, attempts=0, reason="no signing secret"
            )
            return
        if self._limiter is not None and not self._limiter.acquire(f"{CHANNEL}:{endpoint.url}"):
            self._dead.add(CHANNEL, endpoint.url, notification, attempts=0, reason="rate limited")
            return
        body = encode_body(notification)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "prometheus-trader-webhook/1",
            EVENT_HEADER: notification.event_type,
            DELIVERY_HEADER: delivery_id(notification),
        }

        def attempt() -> None:
            timestamp = str(self._clock.now_ms() // 1000)
            signed = {
                **headers,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, body),
            }
            response = self._client.post(endpoint.url, content=body, headers=signed)
            check_status(response, retry_after_header(response, self._clock.now()))

        try:
            call_with_retries(attempt, self._policy, self._sleep)
        except DeliveryFailed as failed:
            self._dead.add(
                CHANNEL, endpoint.url, notification, attempts=failed.attempts, reason=failed.reason
            )
