"""A loopback webhook receiver: fails the first ``fail_first`` deliveries (status
``fail_status``, optional Retry-After), then accepts; records everything it got."""

from __future__ import annotations

from tests.standins.notify_http import LoopbackServer, Recorded, Reply


class WebhookReceiver(LoopbackServer):
    """POST / → ``fail_status`` for the first ``fail_first`` requests, then 204."""

    def __init__(
        self, fail_first: int = 0, fail_status: int = 503, retry_after: str | None = None
    ) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.accepted: list[Recorded] = []

    def answer(self, request: Recorded) -> Reply:
        if len(self.requests) <= self.fail_first:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return Reply(self.fail_status, {"error": "try later"}, headers)
        self.accepted.append(request)
        return Reply(204)
