"""Structured logging: one JSON object per line in the Cloud Logging format.

Cloud Logging parses ``severity``, ``message``, ``logging.googleapis.com/labels`` and
``logging.googleapis.com/trace`` from stdout JSON lines. Labels are passed with
``logger.info("...", extra={"labels": {...}})``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


_TRACE: ContextVar[str | None] = ContextVar("prometheus_trace", default=None)
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


def trace_resource(header: str | None, project: str | None) -> str | None:
    """The Cloud Logging trace name for an ``X-Cloud-Trace-Context`` header
    (``TRACE_ID/SPAN_ID;o=1``), or None when either is missing or malformed."""
    if not header or not project:
        return None
    trace_id = header.split("/", 1)[0].split(";", 1)[0].strip()
    if not _TRACE_ID.fullmatch(trace_id):
        return None
    return f"projects/{project}/traces/{trace_id}"


@contextmanager
def request_trace(header: str | None, project: str | None) -> Iterator[None]:
    """Every log line written inside carries the request's trace (one request's lines
    group together in the Cloud console)."""
    token = _TRACE.set(trace_resource(header, project))
    try:
        yield
    finally:
        _TRACE.reset(token)


class CloudLoggingFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        labels = getattr(record, "labels", None)
        if isinstance(labels, dict) and labels:
            entry["logging.googleapis.com/labels"] = {k: str(v) for k, v in labels.items()}
        trace = getattr(record, "trace", None) or _TRACE.get()
        if trace:
            entry["logging.googleapis.com/trace"] = str(trace)
        fields = getattr(record, "json_fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(
    level: str = "INFO", *, stream: TextIO | None = None, file: Path | None = None
) -> None:
    """Route the ``prometheus_trader`` loggers to JSON lines on a stream and/or a file."""
    root = logging.getLogger("prometheus_trader")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    root.propagate = False
    formatter = CloudLoggingFormatter()
    if stream is not None or file is None:
        out = logging.StreamHandler(stream or sys.stderr)
        out.setFormatter(formatter)
        root.addHandler(out)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(file, mode="w", encoding="utf-8")
        to_file.setFormatter(formatter)
        root.addHandler(to_file)
