"""Secret Manager store beyond the port contract, through the real client (REST) against
the local stand-in: id escaping, stored bytes, the cache, and no value in logs."""

from __future__ import annotations

import base64
import logging
import uuid

import pytest
from google.cloud import secretmanager
from tests.integration.secret_manager_standin import SecretManagerStandin, shared_standin

from prometheus_trader.adapters.gcp.secret_manager_store import (
    AUTOMATIC_REPLICATION,
    SecretManagerSecretStore,
    decode_name,
    encode_name,
)
from prometheus_trader.ports import SecretNotFound

pytestmark = pytest.mark.integration

VALUE = "sk-live-7f3a9c2e-DO-NOT-LEAK"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def standin() -> SecretManagerStandin:
    return shared_standin()


@pytest.fixture
def project() -> str:
    return f"p{uuid.uuid4().hex[:20]}"


def store(
    standin: SecretManagerStandin, project: str, **kwargs: object
) -> SecretManagerSecretStore:
    return SecretManagerSecretStore(project, client=standin.client(), **kwargs)  # type: ignore[arg-type]


def stored_versions(standin: SecretManagerStandin, project: str, secret_id: str) -> list[bytes]:
    return standin.state.secrets[f"projects/{project}/secrets/{secret_id}"].versions


def test_http_endpoint_is_accepted_by_the_rest_transport(standin: SecretManagerStandin) -> None:
    client = standin.client()
    assert client.transport._host == standin.endpoint  # http://, not rewritten to https


@pytest.mark.parametrize(
    "name",
    ["users/u1/binance/api_secret", "ops/webhook", "plain-Name-09", "a_b", "ünï/✓", "%41 x"],
)
def test_name_escaping_round_trips_into_valid_ids(name: str) -> None:
    secret_id = encode_name(name)
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in secret_id)
    assert decode_name(secret_id) == name


def test_name_escaping_keeps_prefixes_and_refuses_foreign_ids() -> None:
    assert encode_name("users/u1/api") == "users_2Fu1_2Fapi"
    assert encode_name("users/u1/api").startswith(encode_name("users/u1/"))
    for foreign in ["a_2", "a_zz", "_41", "a_2f"]:  # short, not hex, not canonical, lower
        with pytest.raises(ValueError):
            decode_name(foreign)


def test_ids_carry_the_prefix_and_values_are_stored_verbatim(
    standin: SecretManagerStandin, project: str
) -> None:
    secrets = store(standin, project, prefix="prom-")
    secrets.put_secret("users/u1/key", VALUE)
    secrets.put_secret("users/u1/key", "rotated")
    secret_id = "prom-users_2Fu1_2Fkey"
    assert secrets.secret_id("users/u1/key") == secret_id
    assert stored_versions(standin, project, secret_id) == [VALUE.encode(), b"rotated"]


def test_empty_and_nul_values_survive_a_fresh_client(
    standin: SecretManagerStandin, project: str
) -> None:
    writer = store(standin, project)
    for name, value in [("empty", ""), ("nul", "\x00x"), ("plain", "x")]:
        writer.put_secret(name, value)
    assert stored_versions(standin, project, "empty") == [b"\x00"]  # never an empty payload
    assert stored_versions(standin, project, "nul") == [b"\x00\x00x"]
    reader = store(standin, project)  # empty cache: every read goes to the server
    assert [reader.get_secret(n) for n in ("empty", "nul", "plain")] == ["", "\x00x", "x"]


def test_values_written_by_other_tools_read_back_unchanged(
    standin: SecretManagerStandin, project: str
) -> None:
    client = standin.client()
    client.create_secret(
        parent=f"projects/{project}",
        secret_id="ops_2Fwebhook",
        secret=AUTOMATIC_REPLICATION,
    )
    client.add_secret_version(
        parent=f"projects/{project}/secrets/ops_2Fwebhook",
        payload=secretmanager.SecretPayload(data=b"https://hook"),
    )
    assert store(standin, project).get_secret("ops/webhook") == "https://hook"


def test_list_skips_ids_outside_the_prefix_or_the_escaping(
    standin: SecretManagerStandin, project: str
) -> None:
    client = standin.client()
    for secret_id in ["prom-a", "prom-bad_zz", "other-x", "prom-users_2Fu1"]:
        client.create_secret(
            parent=f"projects/{project}",
            secret_id=secret_id,
            secret=AUTOMATIC_REPLICATION,
        )
    before = len(standin.state.requests)
    assert store(standin, project, prefix="prom-").list_secrets() == ["a", "users/u1"]
    pages = [
        r
        for r in standin.state.requests[before:]
        if r == ("GET", f"/v1/projects/{project}/secrets")
    ]
    assert len(pages) == 2  # 4 secrets, 3 per page: the pager followed the token
    assert store(standin, project, prefix="prom-").list_secrets("users/") == ["users/u1"]


def test_reads_are_cached_for_the_ttl_then_refreshed(
    standin: SecretManagerStandin, project: str
) -> None:
    clock = FakeClock()
    reader = store(standin, project, cache_ttl_s=30.0, clock=clock)
    store(standin, project).put_secret("k", "v1")

    def accesses() -> int:
        return sum(
            1 for _m, path in standin.state.requests if project in path and ":access" in path
        )

    assert reader.get_secret("k") == "v1"
    assert reader.get_secret("k") == "v1"
    assert accesses() == 1
    store(standin, project).put_secret("k", "v2")  # rotated through another instance
    clock.now += 29.0
    assert reader.get_secret("k") == "v1"  # still inside the TTL
    clock.now += 1.0
    assert reader.get_secret("k") == "v2"
    assert accesses() == 2


def test_own_writes_and_deletes_bypass_the_cache(
    standin: SecretManagerStandin, project: str
) -> None:
    secrets = store(standin, project, clock=FakeClock())
    secrets.put_secret("k", "v1")
    assert secrets.get_secret("k") == "v1"
    secrets.put_secret("k", "v2")
    assert secrets.get_secret("k") == "v2"
    secrets.delete_secret("k")
    with pytest.raises(SecretNotFound):
        secrets.get_secret("k")


def test_no_value_in_debug_logs_or_errors(
    standin: SecretManagerStandin, project: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="google")
    secrets = store(standin, project)
    secrets.put_secret("k", VALUE)
    assert store(standin, project).get_secret("k") == VALUE
    logged = [
        r for r in caplog.records if "httpRequest" in r.__dict__ or "httpResponse" in r.__dict__
    ]
    assert logged, "the client library logged no request: the check below would be empty"
    encoded = base64.b64encode(VALUE.encode()).decode()
    for record in caplog.records:
        text = repr(record.__dict__)
        assert VALUE not in text and encoded not in text
    with pytest.raises(ValueError) as info:
        secrets.put_secret("x" * 300, VALUE)  # id too long
    assert VALUE not in str(info.value)
