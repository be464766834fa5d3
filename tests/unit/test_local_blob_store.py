"""Local blob store specifics: file URIs, atomic writes, files stay under the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore

pytestmark = pytest.mark.unit


def test_put_returns_file_uri_of_the_stored_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    uri = store.put("reports/r.html", b"<html/>")
    assert uri == (tmp_path / "blobs" / "reports" / "r.html").resolve().as_uri()
    assert uri.startswith("file://")
    assert (tmp_path / "blobs" / "reports" / "r.html").read_bytes() == b"<html/>"


def test_no_temporary_files_left_behind(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    for n in range(3):
        store.put("a/b.bin", bytes([n]))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin"]
    assert store.list() == ["a/b.bin"]


def test_refused_keys_create_nothing_outside_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    with pytest.raises(ValueError):
        store.put("../outside.txt", b"x")
    assert not (tmp_path / "outside.txt").exists()


def test_temporary_looking_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalBlobStore(tmp_path).put("a/.x.123.tmp", b"x")
