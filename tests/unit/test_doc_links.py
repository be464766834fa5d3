"""The documentation stays inside the repository: every link in README.md and docs/*.md
points at a file of this repository (or an anchor), never outside a clone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_AUTOLINK = re.compile(r"<((?:https?|ftp|file)://[^>\s]+)>")
_BARE_URL = re.compile(r"(?<![\w/])((?:https?|ftp|file)://\S+)")


def link_targets(markdown: str) -> list[str]:
    """Targets of inline, reference and auto links, and bare URLs (code is not prose)."""
    prose = _CODE.sub("", _FENCE.sub("", markdown))
    targets = [
        m.group(1) for pattern in (_INLINE, _REFERENCE, _AUTOLINK) for m in pattern.finditer(prose)
    ]
    rest = _AUTOLINK.sub("", _INLINE.sub("", prose))
    return targets + [m.group(1).rstrip(".,;:)") for m in _BARE_URL.finditer(rest)]


def leaves_the_repo(doc: Path, target: str) -> str | None:
    """Why ``target`` (linked from ``doc``) is not a file of this repository, or None."""
    if target.startswith("#"):
        return None
    if re.match(r"^[a-zA-Z][\w+.-]*:", target):
        return "a URL (outside the repository)"
    path = target.split("#", 1)[0].split("?", 1)[0]
    if path.startswith("/"):
        return "an absolute path"
    resolved = (doc.parent / path).resolve()
    if not resolved.is_relative_to(REPO):
        return "a path outside the repository"
    if not resolved.exists():
        return "a file that does not exist"
    return None


def test_the_scanner_finds_links_that_leave() -> None:
    doc = REPO / "README.md"
    sample = (
        "see [spec](../shared/SPEC.md), [abs](/work/x.md), <https://example.com/a>, "
        "https://example.org and [ok](docs/architecture.md#decisions) `[code](../x)`\n"
        "```\n[fenced](../y)\n```\n[ref]: ../shared/z.md\n"
    )
    found = {t: leaves_the_repo(doc, t) for t in link_targets(sample)}
    assert found == {
        "../shared/SPEC.md": "a path outside the repository",
        "/work/x.md": "an absolute path",
        "https://example.com/a": "a URL (outside the repository)",
        "https://example.org": "a URL (outside the repository)",
        "docs/architecture.md#decisions": None,
        "../shared/z.md": "a path outside the repository",
    }


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_docs_link_only_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    bad = {t: why for t in link_targets(text) if (why := leaves_the_repo(doc, t))}
    assert bad == {}
    assert "../shared/" not in _CODE.sub("", _FENCE.sub("", text))
