"""Where a user's notifications go: endpoints per channel and routes by event and severity."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.events import EventType, Severity

OPERATOR = "_operator"  # the preferences document of notifications with no user
SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class Channel(StrEnum):
    """Delivery channels."""

    WEBHOOK = "webhook"
    EMAIL = "email"
    TELEGRAM = "telegram"


class Route(BaseModel):
    """Send events of ``event_types`` (empty: all) at ``min_severity`` or above to a channel."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    min_severity: Severity = Severity.INFO
    event_types: list[EventType] = Field(default_factory=list)

    def matches(self, event_type: str, severity: str) -> bool:
        """True if this route takes the event."""
        try:
            rank = SEVERITY_RANK[Severity(severity)]
        except ValueError:
            rank = SEVERITY_RANK[Severity.CRITICAL]  # an unknown severity is not dropped
        if rank < SEVERITY_RANK[self.min_severity]:
            return False
        return not self.event_types or event_type in {t.value for t in self.event_types}


def default_routes() -> list[Route]:
    """Everything to every configured channel (email digests the non-critical)."""
    return [Route(channel=c) for c in Channel]


class NotificationPreferences(BaseModel):
    """A user's endpoints (no secrets: the webhook signing secret is in the SecretStore)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    telegram_chat_id: int | None = None
    routes: list[Route] = Field(default_factory=default_routes)

    def destinations(self, event_type: str, severity: str) -> dict[Channel, str | int]:
        """The configured channels whose routes take this event, with their address."""
        address: dict[Channel, str | int | None] = {
            Channel.WEBHOOK: self.webhook_url,
            Channel.EMAIL: self.email,
            Channel.TELEGRAM: self.telegram_chat_id,
        }
        out: dict[Channel, str | int] = {}
        for route in self.routes:
            target = address[route.channel]
            if target is not None and route.matches(event_type, severity):
                out[route.channel] = target
        return out
