"""Embedded ``SecretStore``: every secret in one Fernet-encrypted file.

The file holds one Fernet token of a JSON object ``{name: value}``. The key comes from the
``key`` argument or from ``key_file`` (created with mode 0600 on first use). Writes are
atomic (temporary file + rename). No error message, log line or repr contains a value.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from prometheus_trader.ports import SecretNotFound


class SecretStoreError(RuntimeError):
    """The secret store file or key is unusable (never carries a secret value)."""


def _load_or_create_key(key_file: Path) -> bytes:
    with contextlib.suppress(FileNotFoundError):  # first use: create the key below
        return key_file.read_bytes().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        # O_EXCL: if another process created it meanwhile, use theirs instead.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class EncryptedFileSecretStore:
    """``SecretStore`` in one encrypted file at ``path``."""

    def __init__(self, path: Path, key: bytes | None = None, key_file: Path | None = None) -> None:
        if key is None:
            if key_file is None:
                raise ValueError("EncryptedFileSecretStore needs a key or a key_file")
            key = _load_or_create_key(Path(key_file))
        self.path = Path(path)
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SecretStoreError(
                "invalid secret store key: expected 32 url-safe base64-encoded bytes"
            ) from None
        self._lock = threading.Lock()
        if self.path.exists():
            self._load()  # fail fast on a wrong key

    def __repr__(self) -> str:
        return f"EncryptedFileSecretStore(path={str(self.path)!r})"

    def _load(self) -> dict[str, str]:
        try:
            token = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            plain = self._fernet.decrypt(token)
        except InvalidToken:
            raise SecretStoreError(f"cannot decrypt secret store {self.path}: wrong key?") from None
        secrets: dict[str, str] = json.loads(plain)
        return secrets

    def _save(self, secrets: dict[str, str]) -> None:
        token = self._fernet.encrypt(json.dumps(secrets, sort_keys=True).encode("utf-8"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(token)
            os.replace(tmp_name, self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put_secret(self, name: str, value: str) -> None:
        """Create or replace a secret."""
        if not name:
            raise ValueError("secret name must not be empty")
        if not isinstance(value, str):
            raise TypeError(f"secret {name!r} must be a string")
        with self._lock:
            secrets = self._load()
            secrets[name] = value
            self._save(secrets)

    def get_secret(self, name: str) -> str:
        """Read a secret (SecretNotFound if missing)."""
        with self._lock:
            secrets = self._load()
        if name not in secrets:
            raise SecretNotFound(name)
        return secrets[name]

    def delete_secret(self, name: str) -> None:
        """Delete a secret (no-op if missing)."""
        with self._lock:
            secrets = self._load()
            if secrets.pop(name, None) is not None:
                self._save(secrets)

    def list_secrets(self, prefix: str = "") -> list[str]:
        """Names (never values) under ``prefix``, sorted."""
        with self._lock:
            return sorted(name for name in self._load() if name.startswith(prefix))
