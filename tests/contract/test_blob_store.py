"""Contract suite for the ``BlobStore`` port."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from google.cloud import storage  # type: ignore[attr-defined]  # no py.typed

from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.gcp.gcs_blob_store import GcsBlobStore
from prometheus_trader.ports import BlobStore

pytestmark = pytest.mark.contract


def _signing_credentials() -> Any:
    """A throwaway service-account key: V4 signing is offline, so no Google API is hit."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "client_email": "api@demo-prometheus.iam.gserviceaccount.com",
            "private_key": pem,
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def _gcs(_tmp: Path) -> BlobStore:
    """A fresh bucket per test on the storage emulator (STORAGE_EMULATOR_HOST is set)."""
    client = storage.Client(project="demo-prometheus")
    bucket = f"blobs-{uuid.uuid4().hex[:20]}"
    GcsBlobStore.ensure_bucket(bucket, client)
    return GcsBlobStore(
        bucket, client=client, prefix="env/test", signing_credentials=_signing_credentials()
    )


# Add cloud adapters here to run the same suite on them.
FACTORIES: list[tuple[str, Callable[[Path], BlobStore]]] = [
    ("local", lambda tmp: LocalBlobStore(tmp / "blobs")),
    ("gcs", _gcs),
]
# Factories that need the emulators: the fixture starts them only for these.
NEEDS_EMULATORS = {"gcs"}


@pytest.fixture(params=[i for i, _ in FACTORIES])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    name: str = request.param
    if name in NEEDS_EMULATORS:
        request.getfixturevalue("emulators")
    return dict(FACTORIES)[name](tmp_path)


def test_implements_port(blobs: BlobStore) -> None:
    assert isinstance(blobs, BlobStore)


def test_put_get_exists(blobs: BlobStore) -> None:
    payload = bytes(range(256))
    uri = blobs.put("reports/u1/2025-05-20.html", payload, "text/html")
    assert isinstance(uri, str) and "reports/u1/2025-05-20.html" in uri
    assert blobs.get("reports/u1/2025-05-20.html") == payload
    assert blobs.exists("reports/u1/2025-05-20.html")
    assert not blobs.exists("reports/u1/2025-05-21.html")


def test_put_overwrites(blobs: BlobStore) -> None:
    blobs.put("a.txt", b"one")
    blobs.put("a.txt", b"two")
    assert blobs.get("a.txt") == b"two"


def test_get_missing_raises_key_error(blobs: BlobStore) -> None:
    with pytest.raises(KeyError):
        blobs.get("nothing/here.bin")


def test_list_is_sorted_and_filtered_by_prefix(blobs: BlobStore) -> None:
    for key in ["reports/u2/b.html", "audit/2025.log", "reports/u1/z.html", "reports/u1/a.html"]:
        blobs.put(key, b"x")
    assert blobs.list() == [
        "audit/2025.log",
        "reports/u1/a.html",
        "reports/u1/z.html",
        "reports/u2/b.html",
    ]
    assert blobs.list("reports/u1/") == ["reports/u1/a.html", "reports/u1/z.html"]
    assert blobs.list("reports/u") == [
        "reports/u1/a.html",
        "reports/u1/z.html",
        "reports/u2/b.html",
    ]
    assert blobs.list("nope/") == []


def test_append_line_creates_then_appends(blobs: BlobStore) -> None:
    blobs.append_line("audit/log.jsonl", '{"n": 1}')
    blobs.append_line("audit/log.jsonl", '{"n": 2}')
    assert blobs.get("audit/log.jsonl") == b'{"n": 1}\n{"n": 2}\n'
    assert blobs.list("audit/") == ["audit/log.jsonl"]


def test_append_line_refuses_embedded_newlines(blobs: BlobStore) -> None:
    with pytest.raises(ValueError):
        blobs.append_line("audit/log.jsonl", "one\ntwo")
    assert not blobs.exists("audit/log.jsonl")


@pytest.mark.parametrize(
    "key", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "a/./b", "a//b", "", ".."]
)
def test_path_traversal_and_bad_keys_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        blobs.put(key, b"x")
    with pytest.raises(ValueError):
        blobs.get(key)
    with pytest.raises(ValueError):
        blobs.append_line(key, "x")


def test_signed_url_names_the_object_and_expires(blobs: BlobStore) -> None:
    blobs.put("reports/u1/2025-05-20.html", b"<html>report</html>", "text/html")
    url = blobs.signed_url("reports/u1/2025-05-20.html", 60)
    parsed = urlparse(url)
    assert unquote(parsed.path).endswith("reports/u1/2025-05-20.html")
    if parsed.scheme == "file":  # embedded: the process's own disk
        assert Path(unquote(parsed.path)).read_bytes() == b"<html>report</html>"
    else:  # a V4 signature good for exactly the asked lifetime (http: the emulator)
        query = parse_qs(parsed.query)
        assert parsed.scheme in ("https", "http")
        assert query["X-Goog-Expires"] == ["60"]
        assert query["X-Goog-Signature"][0]


def test_signed_url_of_a_missing_object_is_a_key_error(blobs: BlobStore) -> None:
    with pytest.raises(KeyError):
        blobs.signed_url("reports/u1/none.html")
    with pytest.raises(ValueError):
        blobs.signed_url("../escape.txt")
