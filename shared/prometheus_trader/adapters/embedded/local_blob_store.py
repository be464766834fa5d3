"""Embedded ``BlobStore``: objects as files under a root folder.

Keys are relative POSIX paths (``reports/u1/2025-05-20.html``); anything that could
escape the root (absolute paths, ``..``) is refused. Writes go to a temporary file in the
target folder and are renamed into place, so readers never see half an object.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

# Temporary files are named ".<name>.<random>.tmp" next to their target; list() hides them.
_TMP_PREFIX = "."
_TMP_SUFFIX = ".tmp"


def _is_temp_name(name: str) -> bool:
    return name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX)


def validate_key(key: str) -> list[str]:
    """The key's path segments; ValueError for keys that are absolute or leave the root."""
    if not key:
        raise ValueError("blob key must not be empty")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"blob key {key!r} contains a backslash or NUL")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise ValueError(f"blob key {key!r} must be relative")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"blob key {key!r} has an empty, '.' or '..' segment")
    if _is_temp_name(parts[-1]):
        raise ValueError(f"blob key {key!r} looks like a temporary file")
    return parts


class LocalBlobStore:
    """``BlobStore`` on the local file system under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._append_targets: dict[str, str] = {}  # key -> file path (its folder exists)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        """Local file of ``key`` (validated; it may not exist)."""
        return self.root.joinpath(*validate_key(key))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store an object atomically; returns its ``file://`` URI."""
        target = self.path_for(key)
        if target.is_dir():
            raise ValueError(f"blob key {key!r} is a folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=_TMP_PREFIX + target.name + ".", suffix=_TMP_SUFFIX
        )
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(bytes(data))
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return target.resolve().as_uri()

    def get(self, key: str) -> bytes:
        """Read an object (KeyError if missing)."""
        target = self.path_for(key)
        try:
            return target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        """True if the object exists."""
        return self.path_for(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (plain string prefix, as in GCS), sorted."""
        keys = []
        for dirpath, _dirnames, filenames in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if _is_temp_name(name):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def signed_url(self, key: str, expires_in_s: int = 900) -> str:
        """The object's ``file://`` URI (a local file needs no signature; KeyError if
        missing). ``expires_in_s`` is checked but a file link does not expire."""
        if expires_in_s <= 0:
            raise ValueError("expires_in_s must be positive")
        target = self.path_for(key)
        if not target.is_file():
            raise KeyError(key)
        return target.resolve().as_uri()

    def append_line(self, key: str, line: str) -> None:
        """Append ``line`` plus a newline, creating the object if needed.

        One trailing newline in ``line`` is tolerated; other line breaks are refused so a
        log object always holds exactly one record per line.
        """
        text = line.removesuffix("\n")
        if "\n" in text or "\r" in text:
            raise ValueError("append_line() takes a single line")
        # one open(O_APPEND) + write per line (whole lines, never interleaved), no
        # pathlib or text layer: the executor audits every order it places
        target = self._append_targets.get(key)
        if target is None:
            path = self.path_for(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            target = self._append_targets[key] = str(path)
        data = (text + "\n").encode("utf-8")
        with self._lock:
            try:
                fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except FileNotFoundError:  # its folder was removed since
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
