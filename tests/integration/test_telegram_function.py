"""The Telegram bot webhook through ``functions/telegram/main.py`` (functions-framework's
test client, embedded backend): the secret-token header is required and compared, a chat
maps to its linked user, and /pause pauses that user and no other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from tests.support import REPO

from prometheus_trader.app import cloud
from prometheus_trader.domain.trading import Direction
from prometheus_trader.domain.users import RiskProfile, User
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.telegram_commands import link_chat

pytestmark = pytest.mark.integration

SECRET = "tg-hook_secret-0123456789"
CHATS = {"alice": 111, "bob": 222}


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[cloud.CloudRuntime]:
    monkeypatch.setenv("PROMETHEUS_BACKEND", "embedded")
    monkeypatch.setenv("PROMETHEUS_VAR_DIR", str(tmp_path / "var"))
    cloud.reset_runtime()
    rt = cloud.get_runtime()
    rt.secrets.put_secret(rt.settings.telegram_webhook_secret_name, SECRET)
    for user_id, chat in CHATS.items():
        user = User.with_profile(user_id, RiskProfile.MODERATE)
        rt.state.create(Collections.USERS, user_id, user.model_dump(mode="json"))
        link_chat(rt.state, chat, user_id)
    rt.state.set(
        Collections.POSITIONS,
        "p1",
        {
            "id": "p1",
            "user_id": "alice",
            "status": "open",
            "symbol": "ETH/USDT:USDT",
            "direction": Direction.LONG.value,
            "amount": 0.5,
            "entry_price": 2500.0,
        },
    )
    yield rt
    cloud.reset_runtime()


@pytest.fixture
def client(runtime: cloud.CloudRuntime) -> FlaskClient:
    path = REPO / "functions" / "telegram" / "main.py"
    return functions_framework.create_app("telegram", str(path)).test_client()


def update(chat: int, text: str, update_id: int = 1) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1716278400,
            "chat": {"id": chat, "type": "private"},
            "from": {"id": chat, "is_bot": False, "first_name": "A"},
            "text": text,
        },
    }


def post(client: FlaskClient, body: object, secret: str | None = SECRET) -> Any:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/", data=data, headers=headers, content_type="application/json")


def users(rt: cloud.CloudRuntime) -> dict[str, dict[str, Any]]:
    return {d["user_id"]: d for d in rt.state.query(Collections.USERS)}


def test_pause_pauses_that_user_and_no_other(
    client: FlaskClient, runtime: cloud.CloudRuntime
) -> None:
    before = users(runtime)
    response = post(client, update(CHATS["alice"], "/pause"))
    assert response.status_code == 200
    assert response.get_json()["method"] == "sendMessage"
    assert response.get_json()["chat_id"] == CHATS["alice"]
    after = users(runtime)
    assert after["alice"]["paused"] is True
    assert "Telegram" in after["alice"]["paused_reason"]
    assert after["bob"] == before["bob"]
    # the risk gate's view: the stored document still validates as a User
    assert User.model_validate(after["alice"]).paused


def test_resume_and_killswitch(client: FlaskClient, runtime: cloud.CloudRuntime) -> None:
    post(client, update(CHATS["bob"], "/pause"))
    post(client, update(CHATS["bob"], "/killswitch"))
    assert users(runtime)["bob"]["kill_switch"] is True
    reply = post(client, update(CHATS["bob"], "/resume")).get_json()
    assert "kill switch is still on" in reply["text"]
    post(client, update(CHATS["bob"], "/killswitch off"))
    bob = users(runtime)["bob"]
    assert (bob["paused"], bob["paused_reason"], bob["kill_switch"]) == (False, None, False)
    assert users(runtime)["alice"]["kill_switch"] is False


def test_status_and_positions_show_only_the_linked_users_data(client: FlaskClient) -> None:
    alice = post(client, update(CHATS["alice"], "/positions@PrometheusBot")).get_json()
    assert "ETH/USDT:USDT long 0.5 @ 2500.0" in alice["text"]
    bob = post(client, update(CHATS["bob"], "/positions")).get_json()
    assert bob["text"] == "No open positions."
    status = post(client, update(CHATS["alice"], "/status")).get_json()
    assert "alice: active" in status["text"] and "1 open position" in status["text"]


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
def test_bad_secret_is_refused_and_changes_nothing(
    client: FlaskClient, runtime: cloud.CloudRuntime, secret: str | None
) -> None:
    response = post(client, update(CHATS["alice"], "/pause"), secret=secret)
    assert response.status_code == 403
    assert users(runtime)["alice"]["paused"] is False


def test_unlinked_chat_changes_nothing(client: FlaskClient, runtime: cloud.CloudRuntime) -> None:
    before = users(runtime)
    reply = post(client, update(999, "/killswitch")).get_json()
    assert "not linked" in reply["text"]
    assert users(runtime) == before


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b"[" * 5000 + b"]" * 5000, {"update_id": "x"}, {"message": {}}],
    ids=["text", "array", "deep", "bad-id", "no-id"],
)
def test_malformed_bodies_are_4xx(client: FlaskClient, body: object) -> None:
    assert post(client, body).status_code == 400


def test_oversized_body_is_413(client: FlaskClient) -> None:
    assert post(client, b"x" * (65 * 1024)).status_code == 413


def test_non_command_updates_are_acknowledged(client: FlaskClient) -> None:
    response = post(client, update(CHATS["alice"], "hello"))
    assert (response.status_code, response.get_json()) == (200, {})
    assert post(client, {"update_id": 5, "edited_message": {"x": 1}}).status_code == 200


def test_get_is_405(client: FlaskClient) -> None:
    assert client.get("/").status_code == 405
