"""Every ```python snippet in README.md runs (tests/_snippets.py says how).
The README keeps the pitch, the two commands, the quickstart and links: the
links to the docs must lead somewhere. The docs' own snippets:
tests/test_docs.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._snippets import ROOT, Snippet, check, snippets

README = ROOT / "README.md"
SNIPPETS = snippets(README)


def test_the_readme_has_its_quickstart() -> None:
    assert any("@engine.workflow()" in s.code and "engine.start(" in s.code for s in SNIPPETS)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_readme_snippet_runs(tmp_path: Path, snippet: Snippet) -> None:
    check(snippet, tmp_path)


def test_readme_links_lead_to_files() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert "docs/index.md" in local and "LICENSE" in local
    assert [t for t in local if not (ROOT / t).exists()] == []
