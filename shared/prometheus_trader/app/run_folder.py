"""One run at a time per output folder, and a failed run loses nothing.

A run writes into a fresh staging folder beside ``<var>/run`` and replaces ``<var>/run``
only when it completes; until then the previous results stay where they were. An OS file
lock (``flock`` on ``<var>/.run.lock``) refuses a second run on the same folder while the
first holds it; the kernel releases it when the holder exits, even when it is killed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_NAME = ".run.lock"
STAGING_PREFIX = ".run-staging-"
RETIRED_PREFIX = ".run-retired-"
FAILED_NAME = "run.failed"


class RunFolderBusy(RuntimeError):
    """Another run holds this output folder."""


@contextmanager
def run_lock(var_dir: Path) -> Iterator[None]:
    """Hold ``var_dir``'s run lock, or raise :class:`RunFolderBusy` at once."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunFolderBusy(
                f"another run is using {var_dir} (pid {holder}); wait for it to finish "
                "or pass another --var"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _recover(var_dir: Path, run_dir: Path) -> None:
    """Undo what a run killed mid-way left behind (we hold the lock: nobody else runs)."""
    retired = sorted(var_dir.glob(f"{RETIRED_PREFIX}*"))
    if not run_dir.exists() and retired:  # killed between the two renames of a publish
        retired.pop().rename(run_dir)
    for leftover in [*var_dir.glob(f"{STAGING_PREFIX}*"), *retired]:
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def fresh_run_folder(run_dir: Path) -> Iterator[Path]:
    """Yield an empty staging folder; replace ``run_dir`` by it when the block completes.

    On an error (or Ctrl-C) ``run_dir`` is left as it was and the staging folder is kept
    as ``<var>/run.failed`` for its logs. Holds the run lock throughout.
    """
    var_dir = run_dir.parent
    with run_lock(var_dir):
        _recover(var_dir, run_dir)
        staging = var_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            failed = var_dir / FAILED_NAME
            shutil.rmtree(failed, ignore_errors=True)
            staging.rename(failed)
            raise
        retired = var_dir / f"{RETIRED_PREFIX}{uuid.uuid4().hex[:12]}"
        if run_dir.exists():
            run_dir.rename(retired)
        staging.rename(run_dir)
        shutil.rmtree(retired, ignore_errors=True)
        shutil.rmtree(var_dir / FAILED_NAME, ignore_errors=True)


def relocate(value: Any, old: Path, new: Path) -> Any:
    """``value`` with every string path under ``old`` moved under ``new`` (the summary
    names files by the folder they will end up in, not the staging one)."""
    if isinstance(value, str):
        prefix = str(old)
        return str(new) + value[len(prefix) :] if value.startswith(prefix) else value
    if isinstance(value, dict):
        return {k: relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, old, new) for v in value]
    return value


__all__ = ["RunFolderBusy", "fresh_run_folder", "relocate", "run_lock"]
