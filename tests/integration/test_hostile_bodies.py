"""Every function behind the real functions-framework server (gunicorn, on 127.0.0.1)
answers hostile requests with a 4xx, quickly: a JSON array push body, deeply nested
JSON, a 40 MB body, and a chunked GET that never sends its body. None of these reaches a
use-case, so no runtime (store, bus) is ever built.

The client's 5 s timeout is only a generous bound (no timing assertion): a hang shows
up as a timeout error, a crash as a 5xx."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support import REPO

pytestmark = pytest.mark.integration

FUNCTIONS = sorted(p.parent.name for p in (REPO / "functions").glob("*/main.py"))
TIMEOUT_S = 5.0
PATH = {"api": "/api/v1/users/me/settings"}  # the API's body-taking route is PATCH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {port}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    var = tmp_path_factory.mktemp("hostile")
    env = {
        **os.environ,
        "PROMETHEUS_BACKEND": "embedded",
        "PROMETHEUS_VAR_DIR": str(var),
        "WORKERS": "1",
        "THREADS": "4",
    }
    cli = str(Path(sys.executable).parent / "functions-framework")
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for name in FUNCTIONS:
            port = _free_port()
            source = REPO / "functions" / name / "main.py"
            procs.append(
                subprocess.Popen(
                    [
                        cli,
                        f"--target={name}",
                        f"--source={source}",
                        "--host=127.0.0.1",
                        f"--port={port}",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            urls[name] = f"http://127.0.0.1:{port}"
        for proc, url in zip(procs, urls.values(), strict=True):
            _wait_listening(int(url.rsplit(":", 1)[1]), proc)
        yield urls
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _send(name: str, url: str, body: bytes) -> httpx.Response:
    method = "PATCH" if name == "api" else "POST"
    return httpx.request(
        method,
        url + PATH.get(name, "/"),
        content=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer pt_x_y"}
        if name == "api"
        else {"Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )


@pytest.mark.parametrize("name", FUNCTIONS)
def test_json_array_body_is_a_4xx(servers: dict[str, str], name: str) -> None:
    response = _send(name, servers[name], b"[1, 2, 3]")
    assert 400 <= response.status_code < 500, (response.status_code, response.text)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_deeply_nested_json_is_a_4xx(servers: dict[str, str], name: str) -> None:
    response = _send(name, servers[name], b"[" * 50_000 + b"]" * 50_000)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_40_mb_body_is_a_413(servers: dict[str, str], name: str) -> None:
    response = _send(name, servers[name], b'{"x": "' + b"a" * (40 * 1024 * 1024) + b'"}')
    assert response.status_code == 413, (response.status_code, response.text[:200])


def _chunked_get_without_body(url: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n"
        )  # ... and never the chunks: the server must not wait for them
        return sock.recv(4096)  # socket.timeout here = the server hung


@pytest.mark.parametrize("name", FUNCTIONS)
def test_chunked_get_without_a_body_is_answered(servers: dict[str, str], name: str) -> None:
    status_line = _chunked_get_without_body(servers[name]).split(b"\r\n", 1)[0]
    status = int(status_line.split()[1])
    assert 400 <= status < 500 or (name == "api" and status == 404), status_line
