"""An API over embedded adapters in a temporary folder, with two users and an admin."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.encrypted_secret_store import EncryptedFileSecretStore
from prometheus_trader.adapters.embedded.local_blob_store import LocalBlobStore
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.app.api import ApiDeps, create_app
from prometheus_trader.domain.trading import Balance
from prometheus_trader.usecases.users import Role, UserAccounts

NOW = datetime(2025, 5, 21, 8, 0, tzinfo=UTC)


@dataclass
class ApiWorld:
    """The app, its stores and the seeded tokens."""

    deps: ApiDeps
    state: SqliteStateStore
    secrets: EncryptedFileSecretStore
    blobs: LocalBlobStore
    clock: SimulatedClock
    alice: str
    bob: str
    admin: str

    def app(self):  # type: ignore[no-untyped-def]
        return create_app(self.deps)

    def close(self) -> None:
        self.state.close()


def api_world(tmp: Path, *, rate_per_minute: int = 10_000) -> ApiWorld:
    """Alice and Bob (paper users) and an admin token over fresh embedded stores."""
    state = SqliteStateStore(tmp / "state.sqlite")
    secrets = EncryptedFileSecretStore(tmp / "secrets.enc", key=Fernet.generate_key())
    blobs = LocalBlobStore(tmp / "blobs")
    clock = SimulatedClock(NOW)
    accounts = UserAccounts(state, clock)
    tokens = {}
    for user_id in ("alice", "bob"):
        accounts.add(user_id)
        tokens[user_id], _ = accounts.issue_token(user_id)
    admin, _ = accounts.issue_token(None, role=Role.ADMIN)
    deps = ApiDeps(
        state=lambda: state,
        clock=lambda: clock,
        secrets=lambda: secrets,
        blobs=lambda: blobs,
        balance=lambda account: Balance(wallet=10_000.0),
        info=lambda: {"backend": "embedded"},
        rate_per_minute=rate_per_minute,
    )
    return ApiWorld(deps, state, secrets, blobs, clock, tokens["alice"], tokens["bob"], admin)
