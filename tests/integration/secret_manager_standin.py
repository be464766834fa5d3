"""A local stand-in for the Secret Manager v1 REST API (no emulator exists).

It serves the endpoints ``SecretManagerServiceClient(transport="rest")`` calls for the
secret store: secrets.create, secrets.get, secrets.list (paged), secrets.delete,
secrets.addVersion and secrets.versions.access. It mirrors the real service where our
adapter depends on it: 404/409/400 as ``{"error": {...}}`` bodies, secret-id rules,
``latest`` as the newest version, empty payloads refused, CRC32C checked and returned.

Loopback only (127.0.0.1, a free port), one daemon thread; use it as a context manager or
through ``shared_standin()`` (one per test process, stopped at exit).
"""

from __future__ import annotations

import atexit
import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import google_crc32c
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager

_SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_FIXED_TIME = "2025-05-21T00:00:00Z"  # deterministic timestamps: nothing reads them

_SECRETS = re.compile(r"^/v1/projects/(?P<project>[^/]+)/secrets$")
_SECRET = re.compile(r"^/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/:]+)$")
_ADD_VERSION = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/:]+):addVersion$"
)
_ACCESS = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/:]+)/versions/(?P<version>[^/:]+)"
    r":access$"
)


class _ApiError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


@dataclass
class _Secret:
    name: str
    labels: dict[str, str]
    versions: list[bytes] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "replication": {"automatic": {}},
            "createTime": _FIXED_TIME,
            "labels": self.labels,
            "etag": f'"{len(self.versions)}"',
        }


@dataclass
class StandinState:
    """Everything the stand-in stores, keyed by full secret resource name."""

    secrets: dict[str, _Secret] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    page_size: int = 3  # largest page served: small, so the client's pager is exercised
    lock: threading.Lock = field(default_factory=threading.Lock)


def _crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the default prints every request to stderr."""

    # ---------------------------------------------------------------- plumbing
    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        parsed: dict[str, Any] = json.loads(self.rfile.read(length))
        return parsed

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        state = self.server.state
        try:
            body = self._body()
            with state.lock:
                state.requests.append((method, url.path))
                status, result = _route(state, method, url.path, query, body)
        except _ApiError as err:
            error = {"code": err.code, "message": err.message, "status": err.status}
            self._send(err.code, {"error": error})
            return
        self._send(status, result)

    def do_GET(self) -> None:
        """Route a GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Route a POST."""
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        """Route a DELETE."""
        self._dispatch("DELETE")


def _not_found(what: str) -> _ApiError:
    return _ApiError(404, "NOT_FOUND", f"{what} not found or has no versions.")


def _route(
    state: StandinState, method: str, path: str, query: dict[str, str], body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    if method == "POST" and (m := _SECRETS.match(path)):
        secret_id = query.get("secretId", "")
        if not _SECRET_ID.match(secret_id):
            raise _ApiError(400, "INVALID_ARGUMENT", "Invalid secret_id.")
        name = f"projects/{m['project']}/secrets/{secret_id}"
        if name in state.secrets:
            raise _ApiError(409, "ALREADY_EXISTS", f"Secret [{name}] already exists.")
        if "replication" not in body:
            raise _ApiError(400, "INVALID_ARGUMENT", "Field [replication] is required.")
        state.secrets[name] = _Secret(name, dict(body.get("labels", {})))
        return 200, state.secrets[name].resource()
    if method == "GET" and (m := _SECRETS.match(path)):
        prefix = f"projects/{m['project']}/secrets/"
        if query.get("filter"):
            raise _ApiError(400, "INVALID_ARGUMENT", "filters are not supported here")
        names = sorted(n for n in state.secrets if n.startswith(prefix))
        # capped like the real service's maximum, but tiny so the client's pager is used
        size = min(int(query.get("pageSize") or state.page_size), state.page_size)
        start = int(query.get("pageToken") or 0)
        page = names[start : start + size]
        result: dict[str, Any] = {
            "secrets": [state.secrets[n].resource() for n in page],
            "totalSize": len(names),
        }
        if start + size < len(names):
            result["nextPageToken"] = str(start + size)
        return 200, result
    if m := _SECRET.match(path):
        name = f"projects/{m['project']}/secrets/{m['secret']}"
        if name not in state.secrets:
            raise _not_found(f"Secret [{name}]")
        if method == "GET":
            return 200, state.secrets[name].resource()
        if method == "DELETE":
            del state.secrets[name]
            return 200, {}
    if method == "POST" and (m := _ADD_VERSION.match(path)):
        name = f"projects/{m['project']}/secrets/{m['secret']}"
        if name not in state.secrets:
            raise _not_found(f"Secret [{name}]")
        payload = body.get("payload") or {}
        data = base64.b64decode(payload.get("data", ""))
        if not data:
            raise _ApiError(400, "INVALID_ARGUMENT", "Field [payload] is required.")
        if "dataCrc32c" in payload and int(payload["dataCrc32c"]) != _crc32c(data):
            raise _ApiError(400, "INVALID_ARGUMENT", "Checksum mismatch.")
        secret = state.secrets[name]
        secret.versions.append(data)
        return 200, {
            "name": f"{name}/versions/{len(secret.versions)}",
            "createTime": _FIXED_TIME,
            "state": "ENABLED",
        }
    if method == "GET" and (m := _ACCESS.match(path)):
        name = f"projects/{m['project']}/secrets/{m['secret']}"
        found = state.secrets.get(name)
        if found is None or not found.versions:
            raise _not_found(f"Secret [{name}]")
        secret = found
        version = m["version"]
        number = len(secret.versions) if version == "latest" else int(version)
        if not 1 <= number <= len(secret.versions):
            raise _not_found(f"Secret Version [{name}/versions/{version}]")
        data = secret.versions[number - 1]
        return 200, {
            "name": f"{name}/versions/{number}",
            "payload": {
                "data": base64.b64encode(data).decode("ascii"),
                "dataCrc32c": str(_crc32c(data)),
            },
        }
    raise _ApiError(404, "NOT_FOUND", f"no route for {method} {path}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: StandinState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class SecretManagerStandin:
    """The stand-in server; ``client()`` gives a real client pointed at it."""

    def __init__(self) -> None:
        self.state = StandinState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("stand-in not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SecretManagerStandin:
        """Serve on a free loopback port in a daemon thread."""
        if self._server is None:
            self._server = _Server(self.state)
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="secret-manager-standin", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def client(self) -> secretmanager.SecretManagerServiceClient:
        """The real Secret Manager client (REST transport) talking to this stand-in."""
        return secretmanager.SecretManagerServiceClient(
            transport="rest",
            client_options={"api_endpoint": self.endpoint},
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )

    def __enter__(self) -> SecretManagerStandin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_SHARED: SecretManagerStandin | None = None
_SHARED_LOCK = threading.Lock()


def shared_standin() -> SecretManagerStandin:
    """One stand-in per test process (isolate tests by project); stopped at exit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = SecretManagerStandin().start()
            atexit.register(_SHARED.stop)
        return _SHARED
