"""The HTTP API over embedded adapters: authentication, one user per token, every route
refusing another user's data, rate limit and body limit, settings all-or-nothing,
watchlist, controls and the exchange-keys secret."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.api_support import ApiWorld, api_world
from tests.support import REPO

from prometheus_trader.domain.users import TradingMode
from prometheus_trader.usecases.controls import exchange_key_secret
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.users import Invalid, UserAccounts, token_sha256

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ApiWorld]:
    w = api_world(tmp_path)
    yield w
    w.close()


@pytest.fixture
def client(world: ApiWorld) -> TestClient:
    return TestClient(world.app())


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


KEYS = {"exchange": "binance", "env": "live", "api_key": "key-abcd-1234", "secret": "s3cret-value"}


def test_openapi_is_served_and_lists_the_spec_routes(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    for path in (
        "/api/v1/watchlist/add",
        "/api/v1/watchlist/remove",
        "/api/v1/watchlist/renew",
        "/api/v1/watchlist",
        "/api/v1/watchlist/top-liquid",
        "/api/v1/users/{user_id}/settings",
        "/api/v1/users/{user_id}/exchange",
        "/api/v1/users/{user_id}/pause",
        "/api/v1/users/{user_id}/resume",
        "/api/v1/users/{user_id}/killswitch",
        "/api/v1/users/{user_id}/positions",
        "/api/v1/users/{user_id}/orders",
        "/api/v1/users/{user_id}/balance",
        "/api/v1/users/{user_id}/stats",
        "/api/v1/users/{user_id}/reports",
    ):
        assert path in paths


def test_tokens_are_required_stored_hashed_and_revocable(
    world: ApiWorld, client: TestClient
) -> None:
    assert client.get("/api/v1/users/me/settings").status_code == 401
    assert client.get("/api/v1/users/me/settings", headers=auth("pt_nope_x")).status_code == 401
    # only the hash is stored, nowhere the token
    assert world.state.get(Collections.API_TOKENS, token_sha256(world.alice)) is not None
    dump = json.dumps(world.state.query(Collections.API_TOKENS))
    assert world.alice not in dump
    # rotate: a new token works, the old one no longer does
    rotated = client.post("/api/v1/users/me/tokens", headers=auth(world.alice))
    assert rotated.status_code == 201
    new = rotated.json()["token"]
    assert client.get("/api/v1/users/me/settings", headers=auth(world.alice)).status_code == 401
    assert client.get("/api/v1/users/me/settings", headers=auth(new)).json()["user_id"] == "alice"
    # revoke by id
    token_id = rotated.json()["info"]["token_id"]
    revoked = client.delete(f"/api/v1/users/me/tokens/{token_id}", headers=auth(new))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client.get("/api/v1/users/me/settings", headers=auth(new)).status_code == 401


def _user_routes(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if path.startswith("/api/v1/users/{user_id}")
        for method in item
    )


def test_every_user_route_refuses_another_users_token(world: ApiWorld, client: TestClient) -> None:
    routes = _user_routes(client.get("/api/v1/openapi.json").json())
    assert len(routes) >= 15
    bodies = {"/exchange": KEYS, "/settings": {"display_name": "x"}}
    before = world.state.query(Collections.USERS)
    for method, template in routes:
        path = template.replace("{user_id}", "alice").replace("{token_id}", "0123456789ab")
        body = next((b for suffix, b in bodies.items() if path.endswith(suffix)), None)
        response = client.request(method, path, headers=auth(world.bob), json=body)
        assert response.status_code in (403, 404), (method, path, response.status_code)
        if (method, path) == ("POST", "/api/v1/users/alice/tokens"):
            continue  # would revoke the token the next routes use
        # and alice's own token is let through the same route (not refused for auth)
        mine = client.request(method, path, headers=auth(world.alice), json=body)
        assert mine.status_code not in (401, 403), (method, path, mine.text)
    after_bob = [d for d in world.state.query(Collections.USERS) if d["user_id"] == "bob"]
    assert after_bob == [d for d in before if d["user_id"] == "bob"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/watchlist?user_id=alice"),
        ("POST", "/api/v1/watchlist/add?user_id=alice"),
        ("POST", "/api/v1/watchlist/renew?user_id=alice"),
        ("DELETE", "/api/v1/watchlist/remove?user_id=alice&exchange=binance&symbol=BTC/USDT"),
    ],
)
def test_watchlist_routes_refuse_another_user(
    world: ApiWorld, client: TestClient, method: str, path: str
) -> None:
    body = {"exchange": "binance", "symbol": "BTC/USDT"} if method == "POST" else None
    response = client.request(method, path, headers=auth(world.bob), json=body)
    assert response.status_code == 403
    assert world.state.query(Collections.WATCHLISTS) == []


def test_admin_reaches_every_user_and_users_do_not_reach_admin(
    world: ApiWorld, client: TestClient
) -> None:
    assert client.get("/api/v1/users/bob/settings", headers=auth(world.admin)).status_code == 200
    assert client.get("/api/v1/users/zed/settings", headers=auth(world.admin)).status_code == 404
    assert client.get("/api/v1/admin/users", headers=auth(world.alice)).status_code == 403
    created = client.post(
        "/api/v1/admin/users", headers=auth(world.admin), json={"user_id": "carol"}
    )
    assert created.status_code == 201
    token = created.json()["token"]["token"]
    assert client.get("/api/v1/users/me/stats", headers=auth(token)).json()["user_id"] == "carol"
    again = client.post("/api/v1/admin/users", headers=auth(world.admin), json={"user_id": "carol"})
    assert again.status_code == 409


def test_watchlist_add_renew_remove(world: ApiWorld, client: TestClient) -> None:
    ref = {"exchange": "binance", "market_type": "perp", "symbol": "ETH/USDT:USDT"}
    added = client.post("/api/v1/watchlist/add", headers=auth(world.alice), json=ref)
    assert added.status_code == 201
    assert added.json()["expires_at"] == "2025-05-22T08:00:00Z"  # 24 h by default
    world.clock.advance(3600)
    renewed = client.post("/api/v1/watchlist/renew", headers=auth(world.alice), json=ref)
    assert renewed.json()["expires_at"] == "2025-05-23T08:00:00Z"  # +24 h on the expiry
    listed = client.get("/api/v1/watchlist", headers=auth(world.alice)).json()["entries"]
    assert [e["symbol"] for e in listed] == ["ETH/USDT:USDT"]
    assert client.get("/api/v1/watchlist", headers=auth(world.bob)).json()["entries"] == []
    query = "exchange=binance&market_type=perp&symbol=ETH/USDT:USDT"
    gone = client.delete(f"/api/v1/watchlist/remove?{query}", headers=auth(world.alice))
    assert gone.status_code == 204
    again = client.delete(f"/api/v1/watchlist/remove?{query}", headers=auth(world.alice))
    assert again.status_code == 404
    bad = client.post(
        "/api/v1/watchlist/add", headers=auth(world.alice), json={**ref, "symbol": "DROP TABLE"}
    )
    assert bad.status_code == 422 and "symbol" in bad.json()["detail"]


def test_settings_update_is_all_or_nothing(world: ApiWorld, client: TestClient) -> None:
    url = "/api/v1/users/me/settings"
    before = client.get(url, headers=auth(world.alice)).json()
    # a valid leverage with an invalid mode: nothing changes
    bad = client.patch(url, headers=auth(world.alice), json={"leverage": 3, "mode": "yolo"})
    assert bad.status_code == 422
    # live without live keys: 409, nothing changes
    live = client.patch(url, headers=auth(world.alice), json={"leverage": 3, "mode": "live"})
    assert live.status_code == 409 and "keys" in live.json()["detail"]
    assert client.get(url, headers=auth(world.alice)).json() == before
    ok = client.patch(
        url,
        headers=auth(world.alice),
        json={"risk_profile": "conservative", "leverage": 1.5, "excluded_symbols": ["doge"]},
    )
    assert ok.status_code == 200
    assert (ok.json()["risk_profile"], ok.json()["leverage"]) == ("conservative", 1.5)
    assert ok.json()["excluded_symbols"] == ["DOGE"]
    assert client.patch(url, headers=auth(world.alice), json={"mode": None}).status_code == 400


def test_exchange_keys_go_to_the_secret_store_only(world: ApiWorld, client: TestClient) -> None:
    url = "/api/v1/users/me/exchange"
    connected = client.put(url, headers=auth(world.alice), json=KEYS)
    assert connected.status_code == 200
    assert connected.json()["key_hint"] == "1234"
    assert "s3cret-value" not in connected.text
    stored = json.loads(world.secrets.get_secret(exchange_key_secret("alice", "binance", "live")))
    assert stored["secret"] == "s3cret-value"
    everything = json.dumps({c: world.state.query(c) for c in ("users", "exchange_keys")})
    assert "s3cret-value" not in everything and "key-abcd-1234" not in everything
    # live mode is now allowed; disconnecting while live is refused
    live = client.patch(
        "/api/v1/users/me/settings", headers=auth(world.alice), json={"mode": "live"}
    )
    assert live.status_code == 200
    # live orders go to the keys' venue account, paper ones to the paper ledger's
    assert world.state.get(Collections.USERS, "alice")["exchange_account"] == "binance-live:alice"  # type: ignore[index]
    assert client.delete(url, headers=auth(world.alice)).status_code == 409
    client.patch("/api/v1/users/me/settings", headers=auth(world.alice), json={"mode": "paper"})
    assert world.state.get(Collections.USERS, "alice")["exchange_account"] == "alice"  # type: ignore[index]
    assert client.delete(url, headers=auth(world.alice)).json()["connected"] is False
    assert world.secrets.list_secrets() == []


def test_a_new_user_cannot_start_live(world: ApiWorld) -> None:
    with pytest.raises(Invalid, match="starts in paper or advisory"):
        UserAccounts(world.state, world.clock).add("carol", mode=TradingMode.LIVE)


def test_switching_between_paper_and_live_waits_for_open_positions(
    world: ApiWorld, client: TestClient
) -> None:
    assert client.put("/api/v1/users/me/exchange", headers=auth(world.alice), json=KEYS).is_success
    world.state.set(
        Collections.POSITIONS, "p-open", {"id": "p-open", "user_id": "alice", "status": "open"}
    )
    url = "/api/v1/users/me/settings"
    refused = client.patch(url, headers=auth(world.alice), json={"mode": "live"})
    assert refused.status_code == 409 and "positions are open" in refused.json()["detail"]
    assert world.state.get(Collections.USERS, "alice")["exchange_account"] == "alice"  # type: ignore[index]
    # another setting with the same mode is fine while positions are open
    assert client.patch(url, headers=auth(world.alice), json={"mode": "paper"}).status_code == 200
    world.state.update(Collections.POSITIONS, "p-open", {"status": "closed"})
    assert client.patch(url, headers=auth(world.alice), json={"mode": "live"}).status_code == 200


def test_pause_resume_kill_and_the_daily_breaker(world: ApiWorld, client: TestClient) -> None:
    base = "/api/v1/users/me"
    paused = client.post(f"{base}/pause", headers=auth(world.alice), json={"reason": "holiday"})
    assert paused.json()["paused"] is True and paused.json()["paused_reason"] == "holiday"
    assert world.state.get(Collections.USERS, "bob")["paused"] is False  # type: ignore[index]
    assert client.post(f"{base}/resume", headers=auth(world.alice)).json()["paused"] is False
    killed = client.post(f"{base}/killswitch", headers=auth(world.alice))
    assert (killed.json()["kill_switch"], killed.json()["paused"]) == (True, True)
    refused = client.post(f"{base}/resume", headers=auth(world.alice))
    assert refused.status_code == 409 and "kill switch" in refused.json()["detail"]
    client.post(f"{base}/killswitch", headers=auth(world.alice), json={"on": False})
    # a daily loss beyond the limit holds until the next UTC day
    world.state.set(
        Collections.STATS,
        "user-alice",
        {
            "user_id": "alice",
            "day": "2025-05-21",
            "realized_pnl_today_pct": -3.5,
            "consecutive_losses": 4,
        },
    )
    held = client.post(f"{base}/resume", headers=auth(world.alice))
    assert held.status_code == 409 and "00:00 UTC" in held.json()["detail"]
    world.clock.advance(86_400)
    resumed = client.post(f"{base}/resume", headers=auth(world.alice)).json()
    assert (resumed["paused"], resumed["daily_loss_breaker"]) == (False, False)
    assert resumed["consecutive_losses"] == 0  # the streak pause was reviewed


def test_reports_come_with_links(world: ApiWorld, client: TestClient) -> None:
    world.blobs.put("reports/alice/2025-05-20.html", b"<html/>", "text/html")
    world.state.set(
        Collections.REPORTS,
        "alice-2025-05-20",
        {"user_id": "alice", "day": "2025-05-20", "keys": ["reports/alice/2025-05-20.html"]},
    )
    reports = client.get("/api/v1/users/me/reports", headers=auth(world.alice)).json()["reports"]
    assert [r["key"] for r in reports] == ["reports/alice/2025-05-20.html"]
    assert reports[0]["url"].startswith("file://")
    assert client.get("/api/v1/users/me/reports", headers=auth(world.bob)).json()["reports"] == []


def test_bodies_over_the_limit_and_hostile_json_are_4xx(
    world: ApiWorld, client: TestClient
) -> None:
    url = "/api/v1/watchlist/add"
    big = client.post(url, headers=auth(world.alice), content=b"{" + b" " * 70_000 + b"}")
    assert big.status_code == 413
    nested = client.post(url, headers=auth(world.alice), content=b"[" * 60_000)
    assert 400 <= nested.status_code < 500
    array = client.post(url, headers=auth(world.alice), content=b"[1, 2]")
    assert array.status_code == 422
    assert world.state.query(Collections.WATCHLISTS) == []


def test_rate_limit_is_shared_across_processes(tmp_path: Path) -> None:
    world = api_world(tmp_path, rate_per_minute=5)
    try:
        client = TestClient(world.app())
        # another process spends three of alice's five requests this minute
        token_id = world.state.get(Collections.API_TOKENS, token_sha256(world.alice))["token_id"]  # type: ignore[index]
        script = (
            "import sys; from pathlib import Path; "
            "from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore; "
            "from prometheus_trader.adapters.embedded.clocks import SimulatedClock; "
            "from prometheus_trader.usecases.ratelimit import RateLimiter; "
            "from tests.api_support import NOW; "
            "s = SqliteStateStore(Path(sys.argv[1])); "
            "[RateLimiter(s, SimulatedClock(NOW), 5).hit(sys.argv[2]) for _ in range(3)]; "
            "s.close()"
        )
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "state.sqlite"), token_id],
            check=True,
            cwd=REPO,
            timeout=60,
        )
        codes = [
            client.get("/api/v1/users/me/stats", headers=auth(world.alice)).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        limited = client.get("/api/v1/users/me/stats", headers=auth(world.alice))
        assert int(limited.headers["Retry-After"]) > 0
        # another token has its own budget; the next minute starts afresh
        assert client.get("/api/v1/users/me/stats", headers=auth(world.bob)).status_code == 200
        world.clock.advance(60)
        assert client.get("/api/v1/users/me/stats", headers=auth(world.alice)).status_code == 200
    finally:
        world.close()


def test_a_refused_key_check_stores_nothing(world: ApiWorld) -> None:
    from prometheus_trader.usecases.controls import ExchangeKeys, KeyCheckFailed

    checked: list[tuple[str, str]] = []

    def check(user_id: str, keys: ExchangeKeys) -> None:
        checked.append((user_id, keys.env))
        if keys.api_key.get_secret_value().startswith("bad"):
            raise KeyCheckFailed("binance: invalid API key")

    world.deps.key_check = check
    client = TestClient(world.app())
    url = "/api/v1/users/me/exchange"
    refused = client.put(url, headers=auth(world.alice), json={**KEYS, "api_key": "bad-key-123"})
    assert refused.status_code == 400 and "invalid API key" in refused.json()["detail"]
    assert "bad-key-123" not in refused.text
    assert world.secrets.list_secrets() == []
    ok = client.put(url, headers=auth(world.alice), json=KEYS)
    assert ok.status_code == 200 and ok.json()["checked"] is True
    assert checked == [("alice", "live"), ("alice", "live")]


def test_an_unavailable_balance_is_a_409_not_a_500(world: ApiWorld) -> None:
    from types import SimpleNamespace

    from prometheus_trader.app.api.function import exchange_balance

    def forbidden(account: str) -> object:
        raise PermissionError("403 GET market bucket")  # e.g. a grant the API lacks

    runtime = SimpleNamespace(exchange=SimpleNamespace(fetch_balance=forbidden))
    world.deps.balance = exchange_balance(runtime)  # type: ignore[arg-type]
    response = TestClient(world.app()).get("/api/v1/users/me/balance", headers=auth(world.alice))
    assert response.status_code == 409
    assert "balance unavailable (PermissionError)" in response.json()["detail"]
