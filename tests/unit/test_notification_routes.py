"""Routes pick channels by event type and severity; unset endpoints get nothing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prometheus_trader.domain.notifications import Channel, NotificationPreferences, Route

pytestmark = pytest.mark.unit


def test_severity_threshold_and_event_types() -> None:
    route = Route(channel=Channel.EMAIL, min_severity="warning", event_types=["risk_breach"])
    assert route.matches("risk_breach", "critical")
    assert route.matches("risk_breach", "warning")
    assert not route.matches("risk_breach", "info")
    assert not route.matches("trade_executed", "critical")
    assert route.matches("risk_breach", "bogus")  # an unknown severity is not dropped


def test_only_configured_channels_are_destinations() -> None:
    prefs = NotificationPreferences(user_id="u1", telegram_chat_id=5)
    assert prefs.destinations("trade_executed", "info") == {Channel.TELEGRAM: 5}
    assert NotificationPreferences(user_id="u1").destinations("x", "critical") == {}


@pytest.mark.parametrize(
    "fields",
    [
        {"webhook_url": "ftp://example.com/x"},
        {"webhook_url": "javascript:alert(1)"},
        {"email": "not-an-address"},
        {"user_id": "bad id"},
        {"secret": "no extra fields"},
    ],
)
def test_bad_preferences_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        NotificationPreferences.model_validate({"user_id": "u1", **fields})
