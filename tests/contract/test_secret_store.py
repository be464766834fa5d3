"""Contract suite for the ``SecretStore`` port: values never leak."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from tests.integration.secret_manager_standin import shared_standin

from prometheus_trader.adapters.embedded.encrypted_secret_store import (
    EncryptedFileSecretStore,
    SecretStoreError,
)
from prometheus_trader.adapters.gcp.secret_manager_store import SecretManagerSecretStore
from prometheus_trader.ports import SecretNotFound, SecretStore

pytestmark = pytest.mark.contract

VALUE = "sk-live-7f3a9c2e-DO-NOT-LEAK"


@dataclass
class SecretHarness:
    """``open()`` returns a fresh client over the same backing storage."""

    open: Callable[[], SecretStore]


def _encrypted_file(tmp: Path) -> SecretHarness:
    key = Fernet.generate_key()
    return SecretHarness(lambda: EncryptedFileSecretStore(tmp / "secrets.enc", key=key))


def _encrypted_file_with_key_file(tmp: Path) -> SecretHarness:
    return SecretHarness(
        lambda: EncryptedFileSecretStore(tmp / "secrets.enc", key_file=tmp / "keys" / "secret.key")
    )


def _secret_manager(_tmp: Path) -> SecretHarness:
    """The real Secret Manager client (REST) against the local stand-in; one project per
    test keeps tests apart. Each open() is a new client and a new (empty) cache."""
    standin = shared_standin()
    project = f"p{uuid.uuid4().hex[:20]}"
    return SecretHarness(
        lambda: SecretManagerSecretStore(project, client=standin.client(), prefix="prom-")
    )


# Add cloud adapters here to run the same suite on them.
FACTORIES: list[tuple[str, Callable[[Path], SecretHarness]]] = [
    ("fernet-key", _encrypted_file),
    ("fernet-key-file", _encrypted_file_with_key_file),
    ("secret-manager", _secret_manager),
]


@pytest.fixture(params=[f for _, f in FACTORIES], ids=[i for i, _ in FACTORIES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> SecretHarness:
    factory: Callable[[Path], SecretHarness] = request.param
    return factory(tmp_path)


@pytest.fixture
def secrets(harness: SecretHarness) -> SecretStore:
    return harness.open()


def test_implements_port(secrets: SecretStore) -> None:
    assert isinstance(secrets, SecretStore)


def test_round_trip_and_replace(secrets: SecretStore) -> None:
    secrets.put_secret("users/u1/binance/api_secret", VALUE)
    assert secrets.get_secret("users/u1/binance/api_secret") == VALUE
    secrets.put_secret("users/u1/binance/api_secret", "rotated")
    assert secrets.get_secret("users/u1/binance/api_secret") == "rotated"


def test_unicode_and_empty_values(secrets: SecretStore) -> None:
    secrets.put_secret("a", 'pässwörd ✓ \n\t"quoted"')
    secrets.put_secret("b", "")
    assert secrets.get_secret("a") == 'pässwörd ✓ \n\t"quoted"'
    assert secrets.get_secret("b") == ""


def test_missing_raises_secret_not_found_with_name_only(secrets: SecretStore) -> None:
    secrets.put_secret("present", VALUE)
    with pytest.raises(SecretNotFound) as info:
        secrets.get_secret("absent")
    assert isinstance(info.value, KeyError)
    assert "absent" in str(info.value)
    assert VALUE not in str(info.value) and VALUE not in repr(info.value)


def test_delete_and_delete_missing(secrets: SecretStore) -> None:
    secrets.put_secret("x", VALUE)
    secrets.delete_secret("x")
    secrets.delete_secret("x")
    with pytest.raises(SecretNotFound):
        secrets.get_secret("x")


def test_list_returns_sorted_names_under_prefix(secrets: SecretStore) -> None:
    for name in ["users/u2/k", "users/u1/b", "ops/webhook", "users/u1/a"]:
        secrets.put_secret(name, VALUE)
    assert secrets.list_secrets("users/u1/") == ["users/u1/a", "users/u1/b"]
    assert secrets.list_secrets() == ["ops/webhook", "users/u1/a", "users/u1/b", "users/u2/k"]


def test_value_never_in_repr_or_str(secrets: SecretStore) -> None:
    secrets.put_secret("k", VALUE)
    assert VALUE not in repr(secrets)
    assert VALUE not in str(secrets)


def test_persists_across_instances(harness: SecretHarness) -> None:
    harness.open().put_secret("k", VALUE)
    assert harness.open().get_secret("k") == VALUE


# --------------------------------------------------------------- encrypted file only
def test_file_is_encrypted_at_rest(tmp_path: Path) -> None:
    store = EncryptedFileSecretStore(tmp_path / "s.enc", key=Fernet.generate_key())
    store.put_secret("api_secret_name", VALUE)
    raw = (tmp_path / "s.enc").read_bytes()
    assert VALUE.encode() not in raw
    assert b"api_secret_name" not in raw
    assert (tmp_path / "s.enc").stat().st_mode & 0o077 == 0


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "k" / "secret.key"
    EncryptedFileSecretStore(tmp_path / "s.enc", key_file=key_file).put_secret("k", VALUE)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_bytes()
    assert EncryptedFileSecretStore(tmp_path / "s.enc", key=key).get_secret("k") == VALUE


def test_wrong_key_is_a_clear_error_without_data(tmp_path: Path) -> None:
    EncryptedFileSecretStore(tmp_path / "s.enc", key=Fernet.generate_key()).put_secret("k", VALUE)
    with pytest.raises(SecretStoreError, match="wrong key") as info:
        EncryptedFileSecretStore(tmp_path / "s.enc", key=Fernet.generate_key())
    assert "cannot decrypt secret store" in str(info.value)
    assert VALUE not in str(info.value)
    assert info.value.__cause__ is None


def test_malformed_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretStoreError, match="invalid secret store key"):
        EncryptedFileSecretStore(tmp_path / "s.enc", key=b"not-a-key")


def test_key_or_key_file_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EncryptedFileSecretStore(tmp_path / "s.enc")
