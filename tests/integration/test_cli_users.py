"""`prometheus-trader users ...` against the embedded store of a settings-selected var
folder: add prints a working token once, list, token rotate/revoke, pause/resume/kill."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from prometheus_trader.adapters.embedded.clocks import SystemClock
from prometheus_trader.adapters.embedded.sqlite_state_store import SqliteStateStore
from prometheus_trader.cli import app
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.users import UserAccounts

pytestmark = pytest.mark.integration


def test_users_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_BACKEND", "embedded")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["users", *args])
        return result.exit_code, result.stdout

    code, out = run("add", "alice", "--profile", "conservative")
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert token.startswith("pt_")
    assert run("add", "alice")[0] == 2  # exists: a clear error, not a traceback
    assert run("add", "bad id")[0] == 2
    code, out = run("list")
    assert code == 0 and "alice" in out and "conservative" in out

    def principal(t: str) -> object:
        state = SqliteStateStore(tmp_path / "service" / "state.sqlite")
        try:
            return UserAccounts(state, SystemClock()).authenticate(t)
        finally:
            state.close()

    assert principal(token) is not None
    code, out = run("token", "alice", "--rotate")
    new = out.strip().splitlines()[-1]
    assert code == 0 and principal(new) is not None and principal(token) is None
    new_id = new.split("_")[1]
    assert run("token", "alice", "--revoke", new_id)[0] == 0
    assert principal(new) is None
    assert run("token")[0] == 2  # neither a user nor --admin

    assert "paused=True" in run("pause", "alice")[1]
    assert "paused=False" in run("resume", "alice")[1]
    assert "kill_switch=True" in run("kill", "alice")[1]
    assert run("resume", "alice")[0] == 2  # refused while the kill switch is on
    assert "kill_switch=False" in run("kill", "alice", "--off")[1]
    assert run("pause", "nobody")[0] == 2
    state = SqliteStateStore(tmp_path / "service" / "state.sqlite")
    try:
        assert state.get(Collections.USERS, "alice")["paused"] is True  # type: ignore[index]
    finally:
        state.close()
