"""Deterministic identifiers: the same inputs always give the same id (idempotency)."""

from __future__ import annotations

import hashlib


def stable_id(*parts: object, length: int = 24) -> str:
    """A hex id derived from ``parts``; stable across runs and machines."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return hashlib.sha256(raw).hexdigest()[:length]


def client_order_id(signal_id: str, user_id: str, leg: str) -> str:
    """Exchange client order id for one leg of one (signal, user); fits 36 chars."""
    return "pt-" + stable_id(signal_id, user_id, leg, length=32)


def execution_id(signal_id: str, user_id: str) -> str:
    """Id of the per-(signal, user) execution record."""
    return stable_id("execution", signal_id, user_id)
