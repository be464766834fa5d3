"""The Cloud Functions' main.py, served by functions-framework against the emulators.

A raw Pub/Sub push body and a CloudEvent reach the executor; with a user and a signal in
Firestore (a prefix per test) the executor opens exactly one position however many times
the message arrives; malformed messages are acked without side effects; a missing
signal is a transient error (500, so Pub/Sub redelivers). The dispatcher fans a signal
out to Pub/Sub. Plus: every main.py stays thin, and the scheduler/API functions answer.
"""

from __future__ import annotations

import ast
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from google.cloud import pubsub_v1, storage  # type: ignore[attr-defined]
from tests.support import REPO

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore
from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus
from prometheus_trader.app import cloud
from prometheus_trader.app.emulators import EmulatorStack
from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.signals import Direction, OpportunitySignal, TakeProfitLevel
from prometheus_trader.domain.users import RiskProfile, TradingMode, User
from prometheus_trader.sample import SAMPLE_STORE_DIR
from prometheus_trader.usecases.dispatch import ExecutionRequest
from prometheus_trader.usecases.names import Collections, Subscriptions, Topics

pytestmark = pytest.mark.integration

FUNCTIONS = REPO / "functions"
START = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
SYMBOL = "ETH/USDT:USDT"
ALLOWED_IMPORTS = ("functions_framework", "prometheus_trader.app", "__future__", "typing")


# ----------------------------------------------------------------- thin main.py
@pytest.mark.parametrize("name", sorted(p.parent.name for p in FUNCTIONS.glob("*/main.py")))
def test_main_is_thin(name: str) -> None:
    source = (FUNCTIONS / name / "main.py").read_text()
    tree = ast.parse(source)
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert imported, "a function imports at least functions_framework"
    assert all(str(m).startswith(ALLOWED_IMPORTS) for m in imported), imported
    assert len(source.splitlines()) <= 30
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in functions] == [name]  # the entry point is named after the folder
    # no statement at import time but imports, the docstring and the entry point
    assert all(
        isinstance(n, ast.Import | ast.ImportFrom | ast.FunctionDef)
        or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        for n in tree.body
    )


def test_every_spec_function_has_a_folder() -> None:
    expected = {
        "collector",
        "ranker",
        "dispatcher",
        "executor",
        "evaluator",
        "notifier",
        "reporter",
        "housekeeping",
        "api",
        "telegram",  # the Telegram bot webhook (issue 10)
    }
    assert {p.parent.name for p in FUNCTIONS.glob("*/main.py")} == expected


# --------------------------------------------------------------------- the world
@dataclass
class CloudWorld:
    prefix: str
    bucket: str
    state: FirestoreStateStore
    bus: PubSubBus
    project: str

    def client(self, name: str) -> FlaskClient:
        app = functions_framework.create_app(name, str(FUNCTIONS / name / "main.py"))
        return app.test_client()

    def positions(self) -> list[dict[str, Any]]:
        return self.state.query(Collections.POSITIONS)


def push_body(data: dict[str, Any], message_id: str, attributes: dict[str, str]) -> dict[str, Any]:
    return {
        "message": {
            "data": base64.b64encode(json.dumps(data).encode()).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "publishTime": "2025-05-21T08:00:00Z",
        },
        "subscription": "projects/demo-prometheus/subscriptions/whatever",
    }


@pytest.fixture
def world(
    emulators: EmulatorStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CloudWorld]:
    project = emulators.project
    prefix = f"t{uuid.uuid4().hex[:10]}"
    bucket = f"fn-{prefix}"
    gcs = storage.Client(project=project)
    gcs.create_bucket(bucket)
    # the recorded sample: what the market store and the replay exchange read
    for path in sorted(SAMPLE_STORE_DIR.rglob("*.parquet")):
        rel = path.relative_to(SAMPLE_STORE_DIR).as_posix()
        gcs.bucket(bucket).blob(f"market/{rel}").upload_from_filename(str(path))
    env = {
        "PROMETHEUS_BACKEND": "gcp",
        "PROMETHEUS_GCP_PROJECT": project,
        "PROMETHEUS_STATE_PREFIX": f"{prefix}_",
        "PROMETHEUS_TOPIC_PREFIX": f"{prefix}-",
        "PROMETHEUS_BLOB_BUCKET": bucket,
        "PROMETHEUS_MARKET_PREFIX": "market",
        "PROMETHEUS_REPLAY_SOURCE_PREFIX": "market",
        "PROMETHEUS_MARKET_CACHE_DIR": str(tmp_path / "cache"),
        "PROMETHEUS_CLOCK_START": START.isoformat(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cloud.reset_runtime()
    state = FirestoreStateStore(project=project, prefix=f"{prefix}_")
    bus = PubSubBus(project, topic_prefix=f"{prefix}-")
    yield CloudWorld(prefix, bucket, state, bus, project)
    cloud.reset_runtime()
    bus.close()
    state.close()


def seed_user_and_signal(world: CloudWorld) -> tuple[User, OpportunitySignal]:
    user = User.with_profile("alice", RiskProfile.MODERATE, mode=TradingMode.PAPER, watch_all=True)
    world.state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
    with DuckDBMarketStore(SAMPLE_STORE_DIR, read_only=True) as source:
        price = ReplayExchange(source, SimulatedClock(START)).fetch_tickers([SYMBOL])[0].last
    stop_pct = 1.0
    signal = OpportunitySignal(
        id=f"sig-{world.prefix}",
        symbol=SYMBOL,
        exchange="binance",
        market_type=MarketType.PERP,
        direction=Direction.LONG,
        entry_price=price,
        entry_low=price * 0.999,
        entry_high=price * 1.001,
        stop_loss=price * (1 - stop_pct / 100),
        stop_loss_pct=stop_pct,
        take_profits=[
            TakeProfitLevel(price=price * (1 + r * stop_pct / 100), pct=r, size_fraction=f)
            for r, f in ((3.0, 0.5), (4.0, 0.3), (5.0, 0.2))
        ],
        reward_risk=3.7,
        confidence=0.8,
        created_at=START,
        expires_at=START + timedelta(minutes=20),
        strategy="consensus",
    )
    world.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
    return user, signal


def execution_body(signal_id: str, user_id: str, message_id: str) -> dict[str, Any]:
    request = ExecutionRequest(signal_id=signal_id, user_id=user_id)
    return push_body(
        request.model_dump(mode="json"),
        message_id,
        {"dedupe_key": execution_id(signal_id, user_id)},
    )


# ---------------------------------------------------------------------- executor
def test_executor_opens_one_position_however_often_the_message_arrives(
    world: CloudWorld,
) -> None:
    for topic in (Topics.EVENTS,):  # the executor publishes events
        world.bus.ensure_topic(topic)
    user, signal = seed_user_and_signal(world)
    executor = world.client("executor")

    # the same raw push body three times (a redelivery keeps the message id) ...
    body = execution_body(signal.id, user.user_id, "7")
    for _ in range(3):
        response = executor.post("/", json=body)
        assert response.status_code < 300, response.get_data(as_text=True)
    # ... and once more as a CloudEvent in binary mode (a new publish: a new message id)
    again = execution_body(signal.id, user.user_id, "8")
    response = executor.post(
        "/",
        json={"message": again["message"]},
        headers={
            "ce-id": "8",
            "ce-specversion": "1.0",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-source": f"//pubsub.googleapis.com/projects/{world.project}/topics/x",
        },
    )
    assert response.status_code < 300, response.get_data(as_text=True)

    positions = world.positions()
    assert len(positions) == 1
    assert positions[0]["user_id"] == user.user_id
    assert positions[0]["status"] == "open"
    execution = world.state.get(Collections.EXECUTIONS, execution_id(signal.id, user.user_id))
    assert execution is not None
    assert execution["outcome"] == "accepted"
    assert execution["position_id"] == positions[0]["id"]


def raw_envelope(data: str) -> dict[str, Any]:
    """A Pub/Sub push envelope (as Pub/Sub sends it) around arbitrary ``data``."""
    body = push_body({}, "1", {})
    body["message"]["data"] = data
    return body


@pytest.mark.parametrize(
    "body",
    [
        raw_envelope("%%% not base64 %%%"),
        raw_envelope(base64.b64encode(b"[1, 2]").decode()),  # JSON, but not an object
        # a well-formed envelope around data the executor cannot validate
        push_body({"signal_id": "s"}, "2", {"dedupe_key": "k"}),
    ],
    ids=["bad-base64", "not-an-object", "invalid-request"],
)
def test_poison_message_is_acked_without_side_effects(
    world: CloudWorld, body: dict[str, Any]
) -> None:
    response = world.client("executor").post("/", json=body)
    assert response.status_code < 300, response.get_data(as_text=True)
    assert world.state.query(Collections.EXECUTIONS) == []
    assert world.positions() == []


def test_non_pubsub_body_is_refused_by_the_framework(world: CloudWorld) -> None:
    # Pub/Sub always pushes a full envelope; anything else is refused before any use-case
    # with a 400 (triggers.push)
    response = world.client("executor").post("/", json={"nothing": "here"})
    assert response.status_code == 400
    assert world.state.query(Collections.EXECUTIONS) == []


def test_transient_failure_is_a_500_for_redelivery(world: CloudWorld) -> None:
    user, _ = seed_user_and_signal(world)
    # a signal the executor cannot find yet (e.g. a replica lagging): retry, do not ack
    response = world.client("executor").post(
        "/", json=execution_body("sig-not-there", user.user_id, "3")
    )
    assert response.status_code == 500


# -------------------------------------------------------------------- dispatcher
def test_dispatcher_publishes_one_execution_batch_per_bucket(world: CloudWorld) -> None:
    world.bus.ensure_subscription(Topics.EXECUTIONS, Subscriptions.EXECUTOR)
    user, signal = seed_user_and_signal(world)
    paused = User.with_profile("bob", RiskProfile.MODERATE, paused=True, watch_all=True)
    world.state.create(Collections.USERS, paused.user_id, paused.model_dump(mode="json"))
    body = push_body(signal.model_dump(mode="json"), "11", {"dedupe_key": signal.id})
    response = world.client("dispatcher").post("/", json=body)
    assert response.status_code < 300, response.get_data(as_text=True)

    subscriber = pubsub_v1.SubscriberClient()
    try:
        path = world.bus.subscription_path(Topics.EXECUTIONS, Subscriptions.EXECUTOR)
        pulled = subscriber.pull(subscription=path, max_messages=10, timeout=10)
        requests = [json.loads(m.message.data) for m in pulled.received_messages]
    finally:
        subscriber.close()
    # one admitted user: one bucket's batch message (the batched executor's)
    assert requests == [{"signal_id": signal.id, "user_ids": [user.user_id]}]


# ------------------------------------------------------------- scheduler and API
def test_housekeeping_expires_due_signals_and_refuses_unknown_fields(world: CloudWorld) -> None:
    _, signal = seed_user_and_signal(world)
    client = world.client("housekeeping")
    assert client.post("/", json={"typo": 1}).status_code == 400
    assert world.state.get(Collections.SIGNALS, signal.id)["status"] == "pending"  # type: ignore[index]
    response = client.post("/")  # the clock (08:00) is before expiry (08:20)
    assert response.status_code == 200
    assert response.get_json()["report"]["expired_signals"] == []


def test_api_health_positions_and_errors(world: CloudWorld) -> None:
    from prometheus_trader.app.api import function
    from prometheus_trader.usecases.users import UserAccounts

    user, signal = seed_user_and_signal(world)
    world.bus.ensure_topic(Topics.EVENTS)
    world.client("executor").post("/", json=execution_body(signal.id, user.user_id, "5"))
    accounts = UserAccounts(world.state, SimulatedClock(START))
    accounts.add("bob")
    alice_token, _ = accounts.issue_token(user.user_id)
    bob_token, _ = accounts.issue_token("bob")
    function.reset()  # the app binds to this test's runtime
    api = world.client("api")
    alice = {"Authorization": f"Bearer {alice_token}"}

    health = api.get("/api/v1/health")
    assert (health.status_code, health.get_json()["status"]) == (200, "ok")
    assert api.get("/api/v1/openapi.json").get_json()["openapi"].startswith("3.")
    mine = api.get("/api/v1/users/me/positions", headers=alice)
    assert mine.status_code == 200, mine.get_data(as_text=True)
    assert [p["signal_id"] for p in mine.get_json()["positions"]] == [signal.id]
    # no token, another user's token, bad input, unknown path, wrong method
    assert api.get(f"/api/v1/users/{user.user_id}/positions").status_code == 401
    bob = {"Authorization": f"Bearer {bob_token}"}
    assert api.get(f"/api/v1/users/{user.user_id}/positions", headers=bob).status_code == 403
    assert api.get("/api/v1/users/me/positions", headers=bob).get_json()["positions"] == []
    assert api.get("/api/v1/users/bad%20id/positions", headers=alice).status_code == 422
    assert api.get("/api/v1/users/me/positions?status=maybe", headers=alice).status_code == 422
    assert api.get("/api/v1/nope").status_code == 404
    assert api.post("/api/v1/health").status_code == 405
    function.reset()


# ------------------------------------------------------------ unknown schema version
def test_unknown_schema_version_is_dead_lettered_not_dropped(world: CloudWorld) -> None:
    world.bus.ensure_subscription(Topics.SIGNALS, Subscriptions.DISPATCHER)  # + dead letter
    world.bus.ensure_subscription(Topics.EXECUTIONS, Subscriptions.EXECUTOR)
    user, signal = seed_user_and_signal(world)
    future = {**signal.model_dump(mode="json"), "schema_version": 2}
    body = push_body(future, "21", {"dedupe_key": signal.id, "k": "v"})
    response = world.client("dispatcher").post("/", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "schema_version" in response.get_json()["dead_lettered"]

    subscriber = pubsub_v1.SubscriberClient()
    try:
        kept_path = world.bus.dead_letter_keep_path(Topics.SIGNALS)
        kept = subscriber.pull(subscription=kept_path, max_messages=10, timeout=10)
        executions = subscriber.pull(
            subscription=world.bus.subscription_path(Topics.EXECUTIONS, Subscriptions.EXECUTOR),
            max_messages=10,
            timeout=5,
        )
    finally:
        subscriber.close()
    dead = [m.message for m in kept.received_messages]
    assert len(dead) == 1
    assert json.loads(dead[0].data) == future  # the whole message, for a later replay
    assert dead[0].attributes["dedupe_key"] == signal.id
    assert dead[0].attributes["k"] == "v"
    assert dead[0].attributes["dead_letter_source_topic"] == Topics.SIGNALS
    assert "schema_version 2" in dead[0].attributes["dead_letter_reason"]
    assert list(executions.received_messages) == []  # nobody acted on it
    assert user.user_id  # the user was there to be dispatched to, had it been understood


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b"[" * 20_000, b'"just a string"', b'{"message": []}'],
    ids=["array", "nested", "string", "message-not-object"],
)
def test_hostile_push_bodies_are_4xx_without_side_effects(world: CloudWorld, body: bytes) -> None:
    response = world.client("executor").post(
        "/", data=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert world.state.query(Collections.EXECUTIONS) == []
