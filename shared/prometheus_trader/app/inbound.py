"""Reading untrusted HTTP bodies in the functions: bounded, quick, and always a 4xx when
they are wrong (never a 500 that Pub/Sub or Cloud Scheduler would retry, never a hang).

* Methods without a body (GET, HEAD, OPTIONS, DELETE) never read the socket: their
  environ gets an empty input, so a client announcing a chunked body it never sends
  gets an answer at once (functions-framework reads the whole request after the
  response is built, which is where such a request used to hang).
* A body over the limit is a 413 (``Content-Length`` first, else while reading).
* JSON that is not valid, or nested too deep for the parser (``RecursionError``), is a
  400, and so is a top-level value of the wrong kind (an array where an object belongs).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
MAX_NESTING = 64  # our messages nest a few levels; anything deeper is hostile


class HttpError(ValueError):
    """A request refused with ``status`` and a message safe to return."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Readable(Protocol):
    """The part of a Flask/werkzeug request read here."""

    @property
    def method(self) -> str: ...

    def get_data(self) -> bytes: ...


def neutralize_bodyless(request: object) -> None:
    """Give a bodyless request an empty input stream before anything reads it."""
    if getattr(request, "method", "GET") not in BODYLESS_METHODS:
        return
    environ: MutableMapping[str, Any] | None = getattr(request, "environ", None)
    if environ is None:
        return
    environ["wsgi.input"] = io.BytesIO(b"")
    environ["wsgi.input_terminated"] = False
    environ["CONTENT_LENGTH"] = "0"
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def read_body(request: Readable, limit: int) -> bytes:
    """The body, at most ``limit`` bytes (HttpError 413 beyond); empty for bodyless methods."""
    neutralize_bodyless(request)
    if request.method in BODYLESS_METHODS:
        return b""
    length = getattr(request, "content_length", None)
    if isinstance(length, int) and length > limit:
        raise HttpError(413, f"body larger than {limit} bytes")
    stream = getattr(request, "stream", None)
    if length is None and stream is not None:  # chunked: stop reading past the limit
        data: bytes = stream.read(limit + 1)
    else:
        data = request.get_data()
    if len(data) > limit:
        raise HttpError(413, f"body larger than {limit} bytes")
    return data


def parse_json(raw: bytes) -> Any:
    """JSON from bytes; HttpError 400 on invalid or too deeply nested input."""
    if _nesting(raw) > MAX_NESTING:
        raise HttpError(400, f"JSON nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, f"body is not JSON: {exc}") from None
    except RecursionError:  # belt and braces: _nesting should have caught it
        raise HttpError(400, "JSON nested too deeply") from None


def json_object(raw: bytes, what: str = "body") -> dict[str, Any]:
    """A JSON object; HttpError 400 for anything else."""
    value = parse_json(raw)
    if not isinstance(value, Mapping):
        raise HttpError(400, f"{what} must be a JSON object, not {type(value).__name__}")
    return dict(value)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def _nesting(raw: bytes) -> int:
    """Deepest bracket nesting outside strings, without recursion. Bodies with few
    brackets (every Pub/Sub envelope: the payload is one base64 string) skip the scan."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return 0
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest
