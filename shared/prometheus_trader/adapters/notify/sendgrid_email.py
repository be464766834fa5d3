"""SendGrid email through the ``sendgrid`` library: critical events at once, the rest in a
digest (a persisted queue flushed on a schedule), the daily report as its HTML.

Each email carries the notification(s) as a ``notification(s).json`` attachment so mail
rules and tests can read them without parsing prose. ``host`` points the library at a
stand-in of the v3 API in tests (the client's own ``host`` parameter).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
import urllib.error
from collections.abc import Callable, Sequence
from typing import Any

from python_http_client.exceptions import HTTPError  # type: ignore[import-untyped]
from sendgrid import SendGridAPIClient  # type: ignore[import-untyped]
from sendgrid.helpers.mail import (  # type: ignore[import-untyped]
    Attachment,
    Content,
    Disposition,
    FileContent,
    FileName,
    FileType,
    Mail,
)

from prometheus_trader.adapters.embedded.console_notifier import notification_to_dict
from prometheus_trader.adapters.notify.delivery import (
    RETRYABLE,
    DeadLetters,
    DeliveryFailed,
    MissingCredential,
    PermanentStatus,
    RetryableStatus,
    RetryPolicy,
    Sleep,
    TransientError,
    call_with_retries,
    delivery_id,
    notification_from_dict,
    short_hash,
)
from prometheus_trader.domain.events import EventType, Severity
from prometheus_trader.ports import BlobStore, Clock, Notification, SecretNotFound, StateStore
from prometheus_trader.usecases.names import labels
from prometheus_trader.usecases.notify import NotifyCollections

log = logging.getLogger(__name__)
CHANNEL = "email"
DIGEST_SEVERITIES = frozenset({Severity.INFO.value, Severity.WARNING.value})


class SendGridNotifier:
    """``Notifier`` that emails through SendGrid's v3 ``/mail/send``.

    ``recipient`` is fixed or chosen per notification (None: no email for it). Severities
    in ``digest_severities`` are queued in the StateStore (``notify_digest_queue``) and sent
    by ``flush_digests``; a daily summary and everything else go out at once. A send that
    fails every attempt is dead-lettered; a digest that fails stays queued for the next
    flush. The API key is read through ``api_key`` (a SecretStore lookup) when first needed.
    """

    def __init__(
        self,
        *,
        api_key: Callable[[], str],
        recipient: str | Callable[[Notification], str | None],
        from_email: str,
        state: StateStore,
        clock: Clock,
        dead_letters: DeadLetters,
        host: str = "https://api.sendgrid.com",
        blobs: BlobStore | None = None,
        digest_severities: frozenset[str] = DIGEST_SEVERITIES,
        policy: RetryPolicy | None = None,
        sleep: Sleep = time.sleep,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._api_key = api_key
        self._recipient = recipient
        self._from = from_email
        self._state = state
        self._clock = clock
        self._dead = dead_letters
        self._host = host
        self._blobs = blobs
        self._digest = digest_severities
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._timeout = timeout_seconds
        self._client: SendGridAPIClient | None = None

    def __repr__(self) -> str:
        return f"SendGridNotifier(host={self._host!r})"

    def send(self, notification: Notification) -> None:
        """Email at once, or queue for the digest."""
        to = self._recipient if isinstance(self._recipient, str) else self._recipient(notification)
        if to is not None:
            self.send_to(to, notification)

    def send_to(self, to: str, notification: Notification) -> None:
        """Email one recipient (or queue it for their digest)."""
        summary = notification.event_type == EventType.DAILY_SUMMARY.value
        if notification.severity in self._digest and not summary:
            doc_id = f"{short_hash(to)}-{short_hash(delivery_id(notification))}"
            # create, not set: a redelivered event keeps its first place in the digest
            self._state.create(
                NotifyCollections.DIGEST_QUEUE,
                doc_id,
                {
                    "id": doc_id,
                    "recipient": to,
                    "queued_at": self._clock.now().isoformat(),
                    "seq": time.time_ns(),  # order within one clock instant
                    "notification": notification_to_dict(notification),
                },
            )
            return
        body = self._report_html(notification) if summary else None
        subject = f"[{notification.severity.upper()}] {notification.title}"
        try:
            self._deliver(
                to, subject, body or _render([notification]), [notification], "notification.json"
            )
        except DeliveryFailed as failed:
            self._dead.add(
                CHANNEL, to, notification, attempts=failed.attempts, reason=failed.reason
            )

    def flush_digests(self) -> int:
        """One digest email per recipient with everything queued; returns emails sent."""
        queued = sorted(
            self._state.query(NotifyCollections.DIGEST_QUEUE),
            key=lambda d: (str(d["queued_at"]), int(d.get("seq", 0)), str(d["id"])),
        )
        by_recipient: dict[str, list[dict[str, Any]]] = {}
        for doc in queued:
            by_recipient.setdefault(str(doc["recipient"]), []).append(doc)
        sent = 0
        for to, docs in sorted(by_recipient.items()):
            items = [notification_from_dict(d["notification"]) for d in docs]
            subject = f"Prometheus digest: {len(items)} notification{'s' * (len(items) != 1)}"
            try:
                self._deliver(to, subject, _render(items), items, "notifications.json")
            except DeliveryFailed as failed:
                # kept queued: the next flush tries again, nothing is lost
                log.warning(
                    "digest not sent (%s); %d kept queued",
                    failed.reason,
                    len(items),
                    extra=labels(stage="notify", channel=CHANNEL),
                )
                continue
            for doc in docs:
                self._state.delete(NotifyCollections.DIGEST_QUEUE, str(doc["id"]))
            sent += 1
        return sent

    # ------------------------------------------------------------------ internals
    def _report_html(self, notification: Notification) -> str | None:
        """The stored daily report's HTML (its key is in the event's ``reports``)."""
        keys = notification.body.get("reports") or []
        html_keys = [k for k in keys if isinstance(k, str) and k.endswith(".html")]
        if self._blobs is None or not html_keys:
            return None
        try:
            return self._blobs.get(html_keys[0]).decode("utf-8")
        except KeyError:
            return None

    def _sendgrid(self) -> SendGridAPIClient:
        if self._client is None:
            try:
                key = self._api_key()
            except SecretNotFound:
                raise MissingCredential from None
            self._client = SendGridAPIClient(api_key=key, host=self._host)
            self._client.client.timeout = self._timeout  # the library waits forever by default
        return self._client

    def _deliver(
        self,
        to: str,
        subject: str,
        html_body: str,
        items: Sequence[Notification],
        attachment_name: str,
    ) -> None:
        data = [notification_to_dict(n) for n in items]
        payload = data[0] if attachment_name == "notification.json" else data
        mail = Mail(from_email=self._from, to_emails=to, subject=subject)
        mail.add_content(Content("text/plain", _plain(items)))
        mail.add_content(Content("text/html", html_body))
        mail.add_attachment(
            Attachment(
                FileContent(
                    base64.b64encode(
                        json.dumps(payload, sort_keys=True, default=str).encode()
                    ).decode()
                ),
                FileName(attachment_name),
                FileType("application/json"),
                Disposition("attachment"),
            )
        )

        def attempt() -> None:
            try:
                response = self._sendgrid().send(mail)
            except HTTPError as exc:
                status = int(exc.status_code)
                if status in RETRYABLE or status >= 500:
                    raise RetryableStatus(status, _retry_after(exc.headers)) from None
                raise PermanentStatus(status) from None
            except (urllib.error.URLError, OSError) as exc:
                raise TransientError(type(exc).__name__) from None
            if not 200 <= int(response.status_code) < 300:
                raise PermanentStatus(int(response.status_code))

        call_with_retries(attempt, self._policy, self._sleep)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    return float(value) if isinstance(value, str) and value.strip().isdigit() else None


def _plain(items: Sequence[Notification]) -> str:
    return "\n".join(f"[{n.severity}] {n.event_type}: {n.title}" for n in items)


def _render(items: Sequence[Notification]) -> str:
    """A small, escaped HTML body: one section per notification."""
    sections = []
    for n in items:
        rows = "".join(
            f"<tr><th align='left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in sorted(n.body.items())
        )
        sections.append(
            f"<h3>{html.escape(n.title)}</h3>"
            f"<p>{html.escape(n.event_type)} · {html.escape(n.severity)}</p><table>{rows}</table>"
        )
    return "<html><body>" + "".join(sections) + "</body></html>"
