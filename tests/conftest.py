"""Shared test configuration: where the provided real data lives, if beside the repo."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"
