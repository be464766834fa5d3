"""Stage every Cloud Function for deployment: ``build/<name>/`` per function.

Each bundle holds what Cloud Functions installs and imports, and nothing else:

* ``main.py``, copied from ``functions/<name>/``;
* ``prometheus_trader/``, the shared package vendored beside it (Cloud Functions installs
  only ``requirements.txt``, so local packages must travel with the source), without
  ``__pycache__`` and without the bundled market sample (``sample/store``: only embedded
  runs replay it; the cloud reads the market store from Cloud Storage);
* ``requirements.txt``: the runtime dependencies and the ``[gcp]`` extra with every
  transitive dependency, pinned to the exact versions installed in this virtual env
  (read with importlib.metadata; no dev tools).

``build/manifest.json`` lists each bundle's SHA-256 over its files (name + bytes, in
sorted order): put it in the source object's name so a code change redeploys. Every run
rebuilds the bundles from scratch.

Usage: ``python scripts/stage.py [--out build] [--only executor --only api]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as metadata
import json
import shutil
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO / "functions"
PACKAGE_DIR = REPO / "shared" / "prometheus_trader"
DISTRIBUTION = "prometheus-trader"
EXTRAS = ("gcp",)
# never vendored: byte code, and the market sample (embedded runs only, ~1 MB)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
EXCLUDED_DIRS = (Path("sample") / "store",)


def function_names() -> list[str]:
    """Folders of ``functions/`` holding a ``main.py``, sorted."""
    return sorted(p.parent.name for p in FUNCTIONS_DIR.glob("*/main.py"))


def pinned_requirements(
    distribution: str = DISTRIBUTION, extras: tuple[str, ...] = EXTRAS
) -> list[str]:
    """``name==version`` for the runtime deps (+ ``extras``) and all they pull in."""
    env = default_environment()
    pins: dict[str, str] = {}
    own = canonicalize_name(distribution)
    seen: set[tuple[str, tuple[str, ...]]] = set()

    def visit(dist_name: str, active_extras: tuple[str, ...]) -> None:
        if (canonicalize_name(dist_name), active_extras) in seen:
            return
        seen.add((canonicalize_name(dist_name), active_extras))
        for spec in metadata.requires(dist_name) or []:
            req = Requirement(spec)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": extra}) for extra in ("", *active_extras)
            ):
                continue
            name = canonicalize_name(req.name)
            if name == own:
                continue
            if name not in pins:
                try:
                    pins[name] = metadata.version(req.name)
                except metadata.PackageNotFoundError:
                    raise SystemExit(
                        f"{req.name} (needed by {dist_name}) is not installed: "
                        "run `make install-dev` first"
                    ) from None
            # extras of a dependency (e.g. google-api-core[grpc]) add their own deps
            visit(req.name, tuple(sorted(req.extras)))

    visit(distribution, extras)
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


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
    requirements = (
        f"# pinned by scripts/stage.py from the dev virtual env ({DISTRIBUTION} + "
        f"[{','.join(EXTRAS)}])\n" + "".join(f"{pin}\n" for pin in pins)
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
