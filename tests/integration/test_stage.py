"""``make stage``: every function bundle installs from PyPI into a clean virtual env and
its main.py imports there, from the vendored package, without touching the cloud; its
requirements are the exact pins of uv.lock."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support import REPO

pytestmark = pytest.mark.integration

FUNCTIONS = sorted(p.parent.name for p in (REPO / "functions").glob("*/main.py"))
DEV_TOOLS = ("pytest", "ruff", "mypy", "hypothesis", "import-linter", "fake-gcs-server")


@dataclass
class Staged:
    out: Path
    python: Path
    stdout: str


def run_stage(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "stage.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staged]:
    root = tmp_path_factory.mktemp("stage")
    out = root / "build"
    result = run_stage(out)
    assert result.returncode == 0, result.stderr
    # a really clean env: no --system-site-packages, nothing from the dev venv
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # the requirements are identical in every bundle: install once (pip's cache is reused)
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "-r",
            str(out / FUNCTIONS[0] / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1500,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    yield Staged(out, python, result.stdout)


def test_every_function_is_staged_with_its_own_main_and_the_vendored_package(
    staged: Staged,
) -> None:
    assert sorted(p.name for p in staged.out.iterdir() if p.is_dir()) == FUNCTIONS
    manifest = json.loads((staged.out / "manifest.json").read_text())
    assert sorted(manifest) == FUNCTIONS
    for name in FUNCTIONS:
        bundle = staged.out / name
        assert (bundle / "main.py").read_bytes() == (
            REPO / "functions" / name / "main.py"
        ).read_bytes()
        package = bundle / "prometheus_trader"
        assert (package / "usecases" / "execute.py").is_file()
        assert (package / "usecases" / "templates").is_dir()  # the reporter's templates
        assert (package / "sample" / "__init__.py").is_file()  # settings import it
        assert not (package / "sample" / "store").exists()  # the data stays out
        assert not list(bundle.rglob("__pycache__"))
        assert name in staged.stdout  # progress is printed


def test_requirements_are_the_locks_pins_of_runtime_deps_only(staged: Staged) -> None:
    texts = {(staged.out / n / "requirements.txt").read_text() for n in FUNCTIONS}
    assert len(texts) == 1
    lines = [line for line in texts.pop().splitlines() if not line.startswith("#")]
    pins = [re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)(\s*;.*)?", line) for line in lines]
    assert all(pins), [line for line, pin in zip(lines, pins, strict=True) if not pin]
    names = [pin.group(1) for pin in pins if pin]
    assert names == sorted(names, key=lambda n: re.sub(r"[-_.]+", "-", n).lower())
    for needed in (
        "pydantic",
        "duckdb",
        "pyarrow",
        "functions-framework",
        "google-cloud-firestore",
    ):
        assert needed in names
    assert not [n for n in names if n.startswith(DEV_TOOLS)]
    assert "prometheus-trader" not in names  # vendored, not installed
    # every pin is the version uv.lock holds (what `make test` installed and tested)
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    locked = {(p["name"], p["version"]) for p in lock["package"] if "version" in p}
    norm = {(re.sub(r"[-_.]+", "-", pin.group(1)).lower(), pin.group(2)) for pin in pins if pin}
    assert norm <= locked, sorted(norm - locked)


def test_stage_rebuilds_from_scratch_and_is_reproducible(staged: Staged, tmp_path: Path) -> None:
    out = tmp_path / "build"
    assert run_stage(out).returncode == 0
    stray = out / "executor" / "stale.py"
    stray.write_text("old build leftovers\n")
    assert run_stage(out).returncode == 0
    assert not stray.exists()
    first = json.loads((staged.out / "manifest.json").read_text())
    again = json.loads((out / "manifest.json").read_text())
    assert again == first


IMPORT_CHECK = """
import json, sys
import main
import prometheus_trader
entry = getattr(main, sys.argv[1])
print(json.dumps({
    "callable": callable(entry),
    "package": prometheus_trader.__file__,
    "clients": sorted(m for m in sys.modules if m.startswith((
        "google.cloud.firestore", "google.cloud.pubsub", "google.cloud.storage",
        "google.cloud.secretmanager"))),
}))
"""


@pytest.mark.parametrize("name", FUNCTIONS)
def test_staged_main_imports_in_a_clean_env_without_cloud_access(staged: Staged, name: str) -> None:
    bundle = staged.out / name
    cloud_vars = ("GOOGLE_CLOUD_PROJECT", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in cloud_vars and "EMULATOR" not in k}
    result = subprocess.run(
        [str(staged.python), "-c", IMPORT_CHECK, name],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["callable"] is True
    assert Path(report["package"]).resolve().is_relative_to(bundle.resolve())
    assert report["clients"] == []  # no cloud client is even imported at import time
