"""Contract suite for the ``BlobStore`` port."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from google.cloud import storage  # type: ignore[attr-defined]  # no py.typed

from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.gcp.gcs_blob_store import GcsBlobStore
from prometheus_trader.ports import BlobStore

pytestmark = pytest.mark.contract


def _gcs(_tmp: Path) -> BlobStore:
    """A fresh bucket per test on the storage emulator (STORAGE_EMULATOR_HOST is set)."""
    client = storage.Client(project="demo-prometheus")
    bucket = f"blobs-{uuid.uuid4().hex[:20]}"
    GcsBlobStore.ensure_bucket(bucket, client)
    return GcsBlobStore(bucket, client=client, prefix="env/test")


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
