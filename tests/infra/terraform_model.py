"""Read terraform/*.tf with python-hcl2 into a small model the infra tests can query.

Nothing here evaluates Terraform: references stay strings such as
``"${local.functions}"``. The tests compare those strings, and resolve the few
``local.*`` / ``var.*`` values they need from the parsed literals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
FUNCTIONS_DIR = REPO / "functions"

OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def parse_file(path: Path) -> dict[str, Any]:
    """One .tf file as python-hcl2's dict (raises on a syntax error)."""
    with path.open(encoding="utf-8") as fh:
        parsed: dict[str, Any] = hcl2.load(fh, serialization_options=OPTIONS)
    return parsed


def tf_files() -> list[Path]:
    """Every .tf file of the root module, sorted."""
    return sorted(TERRAFORM_DIR.glob("*.tf"))


@dataclass
class TerraformModel:
    """Resources, data sources, locals and variables of terraform/ (all files merged)."""

    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path = TERRAFORM_DIR) -> TerraformModel:
        """Parse every .tf file in ``directory``."""
        model = cls()
        for path in sorted(directory.glob("*.tf")):
            model.files[path.name] = path.read_text(encoding="utf-8")
            parsed = parse_file(path)
            for kind, target in (("resource", model.resources), ("data", model.data)):
                for block in parsed.get(kind, []):
                    for rtype, named in block.items():
                        for name, body in named.items():
                            target.setdefault(rtype, {})[name] = body
            for block in parsed.get("locals", []):
                model.locals.update(block)
            for block in parsed.get("variable", []):
                model.variables.update(block)
            for block in parsed.get("output", []):
                model.outputs.update(block)
        return model

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        """The body of ``rtype.name`` (KeyError if absent)."""
        return self.resources[rtype][name]

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        """All resources of one type, by name (empty if none)."""
        return self.resources.get(rtype, {})

    def default(self, variable: str) -> Any:
        """A variable's default (KeyError if it has none)."""
        return self.variables[variable]["default"]

    def resolve(self, value: Any) -> Any:
        """``"${var.x}"`` -> x's default, ``"${local.y}"`` -> y; anything else unchanged."""
        if isinstance(value, str):
            match = re.fullmatch(r"\$\{(var|local)\.([A-Za-z0-9_]+)\}", value)
            if match:
                kind, name = match.groups()
                return self.resolve(self.default(name) if kind == "var" else self.locals[name])
        return value


def block(body: dict[str, Any], *path: str) -> dict[str, Any]:
    """The first nested block along ``path`` (blocks parse as one-element lists)."""
    current: Any = body
    for key in path:
        current = current[key]
        if isinstance(current, list):
            if not current:
                raise KeyError(key)
            current = current[0]
    assert isinstance(current, dict), f"{'/'.join(path)} is not a block"
    return current


def function_dirs() -> list[str]:
    """Names of functions/<name>/ folders that hold an entry point (main.py), sorted."""
    return sorted(p.parent.name for p in FUNCTIONS_DIR.glob("*/main.py"))
