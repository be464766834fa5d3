"""A loopback stand-in of SendGrid's v3 ``POST /v3/mail/send``: checks the bearer key and
the required fields as SendGrid does (400 with an ``errors`` list), answers 202 with an
empty body, and records every accepted payload."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.standins.notify_http import LoopbackServer, Recorded, Reply


class SendGridStandIn(LoopbackServer):
    """Accepts mail for ``api_key``; ``fail_first`` requests get ``fail_status``."""

    def __init__(self, api_key: str, fail_first: int = 0, fail_status: int = 503) -> None:
        super().__init__()
        self.api_key = api_key
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.mails: list[dict[str, Any]] = []

    def answer(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return Reply(404, {"errors": [{"message": "not found"}]})
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return Reply(401, {"errors": [{"message": "authorization required"}]})
        if len(self.requests) <= self.fail_first:
            return Reply(self.fail_status, {"errors": [{"message": "unavailable"}]})
        try:
            mail = json.loads(request.body)
        except ValueError:
            return Reply(400, {"errors": [{"message": "invalid JSON"}]})
        errors = _missing(mail)
        if errors:
            return Reply(400, {"errors": [{"message": m, "field": f} for f, m in errors]})
        self.mails.append(mail)
        return Reply(202)

    def attachments(self) -> list[Any]:
        """The decoded JSON attachment of every accepted mail, in order."""
        return [
            json.loads(base64.b64decode(a["content"]))
            for mail in self.mails
            for a in mail.get("attachments", [])
            if a.get("type") == "application/json"
        ]


def _missing(mail: Any) -> list[tuple[str, str]]:
    errors = []
    if not isinstance(mail, dict):
        return [("", "body must be an object")]
    people = mail.get("personalizations")
    if not people or not all(
        p.get("to") and all("@" in t.get("email", "") for t in p["to"]) for p in people
    ):
        errors.append(("personalizations", "at least one recipient is required"))
    if "@" not in (mail.get("from") or {}).get("email", ""):
        errors.append(("from.email", "a from address is required"))
    if not mail.get("subject"):
        errors.append(("subject", "a subject is required"))
    content = mail.get("content") or []
    if not content or not all(c.get("type") and c.get("value") for c in content):
        errors.append(("content", "content needs a type and a value"))
    return errors
