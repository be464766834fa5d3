"""Structured logging: one JSON object per line in the Cloud Logging format.

Cloud Logging parses ``severity``, ``message``, ``logging.googleapis.com/labels`` and
``logging.googleapis.com/trace`` from stdout JSON lines. Labels are passed with
``logger.info("...", extra={"labels": {...}})``.
"""

from __future__ import annotations

import json
import logging
import sys
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
        trace = getattr(record, "trace", None)
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
