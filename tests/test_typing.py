"""The types users see, pinned: mypy --strict and pyright (strict) over
tests/typing/ (``assert_type`` lines, and lines that must be errors, whose
ignores turn into failures when they stop being needed), and over every
README snippet. Skipped, with one line, where a checker is not installed
(the ``lint`` extra installs both; .ci/run runs them too)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._snippets import PRELUDE, ROOT, snippets

# Every python block a user copies: the README's and the docs' (not the
# DBOS and Temporal blocks of the "coming from" pages, which are theirs).
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "bench" not in p.parts)]
SNIPPETS = [s for page in PAGES for s in snippets(page) if s.peer is None]

TYPING = ROOT / "tests" / "typing"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install '.[lint]')")
    return found


def _mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("mypy"), "--strict", "--warn-unused-ignores", "--no-incremental", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"MYPYPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )


def _pyright(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("pyright"), "--pythonpath", sys.executable, "-p", str(project)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mypy_pins_the_types() -> None:
    run = _mypy(TYPING / "check_types.py")
    assert run.returncode == 0, run.stdout + run.stderr


def test_pyright_pins_the_types() -> None:
    run = _pyright(TYPING)
    assert run.returncode == 0 and "0 errors" in run.stdout, run.stdout + run.stderr


def test_a_type_regression_fails_the_check(tmp_path: Path) -> None:
    """The pins can fail: a wrong ``assert_type`` and a must-fail line that
    no longer fails are both reported."""
    source = (TYPING / "check_types.py").read_text()
    broken = source.replace('assert_type(engine.run(crawl, "u"), int)', 'assert_type(engine.run(crawl, "u"), str)')
    broken = broken.replace("crawl(1)  # type: ignore[arg-type]", 'crawl("1")  # type: ignore[arg-type]')
    assert broken.count("str)") > source.count("str)")
    (tmp_path / "check_types.py").write_text(broken)
    run = _mypy(tmp_path / "check_types.py")
    assert run.returncode == 1
    assert 'Expression is of type "int", not "str"' in run.stdout and "Unused" in run.stdout, run.stdout
    config = (TYPING / "pyrightconfig.json").read_text().replace("../../src", str(ROOT / "src"))
    (tmp_path / "pyrightconfig.json").write_text(config)
    run = _pyright(tmp_path)
    assert run.returncode == 1
    assert '"assert_type" mismatch' in run.stdout and "Unnecessary" in run.stdout, run.stdout


def _snippet_modules(folder: Path) -> list[Path]:
    """Each README and docs snippet after the prelude tests/_snippets.py runs
    it with, as a module of ``folder``; with pyright's strict settings, less
    what the shared prelude causes (imports a snippet does not use, or
    imports again)."""
    paths = []
    for snippet in SNIPPETS:
        # apsw's own stubs leave its binding types Unknown (not durably's to fix)
        head = "# pyright: reportUnknownMemberType=false\n" if "import apsw" in snippet.code else ""
        name = snippet.where.replace("/", "_").replace(".md:", "_line").replace("-", "_")
        path = folder / f"{name}.py"
        path.write_text(head + PRELUDE + "\n" + snippet.code)
        paths.append(path)
    config = {
        "typeCheckingMode": "strict",
        "pythonVersion": "3.11",
        "extraPaths": [str(ROOT / "src")],
        "reportUnusedImport": "none",
        "reportDuplicateImport": "none",
    }
    (folder / "pyrightconfig.json").write_text(json.dumps(config))
    return paths


def test_readme_snippets_pass_mypy(tmp_path: Path) -> None:
    run = _mypy(*_snippet_modules(tmp_path))
    assert run.returncode == 0, run.stdout[-5000:]


def test_readme_snippets_pass_pyright(tmp_path: Path) -> None:
    _snippet_modules(tmp_path)
    run = _pyright(tmp_path)
    assert run.returncode == 0 and "0 errors" in run.stdout, run.stdout[-5000:]
