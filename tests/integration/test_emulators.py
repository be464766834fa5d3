"""The emulator launcher: starts on loopback, answers, and leaves no process behind."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from prometheus_trader.app.emulators import EmulatorStack

pytestmark = pytest.mark.integration


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_stack_starts_on_loopback_and_stops_every_process(tmp_path: Path) -> None:
    with EmulatorStack(tmp_path) as stack:
        env = stack.env()
        assert env["FIRESTORE_EMULATOR_HOST"].startswith("127.0.0.1:")
        assert env["PUBSUB_EMULATOR_HOST"].startswith("127.0.0.1:")
        assert env["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")
        for emulator in stack.running.values():
            path = "/storage/v1/b" if emulator.name == "storage" else "/"
            with urllib.request.urlopen(f"http://{emulator.host_port}{path}", timeout=5) as r:
                assert r.status == 200
        groups = [e.process.pid for e in stack.running.values()]
        assert all(live_group_members(pgid) for pgid in groups)
    for pgid in groups:
        # nothing of the group survives: the Java child of the gcloud wrapper included
        assert live_group_members(pgid) == []
