"""Session fixtures: the Google Cloud emulators, started on loopback only when a test
asks for them, and always stopped (process groups killed) at the end of the session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from prometheus_trader.app.emulators import EmulatorStack


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorStack]:
    """Firestore, Pub/Sub and Cloud Storage emulators with their env vars set."""
    stack = EmulatorStack(tmp_path_factory.mktemp("emulators"))
    with stack:
        saved = {k: os.environ.get(k) for k in stack.env()}
        os.environ.update(stack.env())
        try:
            yield stack
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(autouse=True)
def _restore_package_logging() -> Iterator[None]:
    """Runs, functions and the worker configure the ``prometheus_trader`` logger (JSON
    handlers, no propagation); put it back so later tests' ``caplog`` still sees records."""
    import logging

    logger = logging.getLogger("prometheus_trader")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        if handler not in saved[0]:
            logger.removeHandler(handler)
            handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
