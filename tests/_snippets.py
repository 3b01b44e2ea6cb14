"""Running the ```python blocks of a Markdown file (README.md, docs/**/*.md).

Each block runs in a fresh interpreter, in a temporary directory, after a
prelude that gives it what the surrounding prose assumes: an open engine
named ``engine`` (in memory, with a virtual clock so that waits of days
finish at once) and the helper functions the examples call. A block that
defines ``test_*`` functions has them called; one whose tests take fixtures
is a test module of its own, run as it is by pytest with durably's plugin.
A block that reads
``DATABASE_URL`` gets a fresh schema of the test PostgreSQL server.

A block titled after a peer engine (```python title="DBOS" or
title="Temporal": side-by-side code on the "coming from" pages) needs that
peer's server or package: it is parsed, not run. Shell, YAML and text blocks
are not run here (.ci/run runs the README's two commands as written).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import durably

from .conftest import pg_schema_url

ROOT = Path(__file__).resolve().parent.parent
SRC = str(Path(durably.__file__).resolve().parents[1])
PEERS = ("DBOS", "Temporal")

PRELUDE = textwrap.dedent("""
    import asyncio
    from datetime import datetime
    from typing import Any
    import durably

    path = "readme.db"
    clock = durably.VirtualClock()
    engine = durably.Engine(":memory:", clock=clock)

    @engine.step()
    def email(user: str, text: str) -> None: ...

    @engine.step()
    def pay_back(order: str) -> None: ...

    @engine.workflow()
    def send_email(address: str) -> None: ...

    engine.open()
    _prelude_engine = engine
""")

EPILOGUE = textwrap.dedent("""
    for _name, _fn in list(globals().items()):
        if _name.startswith("test_") and callable(_fn):
            _fn()
    _prelude_engine.close()
    if engine is not _prelude_engine:
        engine.close()
    print("snippet ok")
""")

FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.M | re.S)


class Snippet(NamedTuple):
    where: str  # "docs/guides/toolkit.md:42"
    code: str
    peer: str | None  # "DBOS", "Temporal": parsed only


def snippets(path: Path) -> list[Snippet]:
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        title = re.search(r'title="([^"]*)"', m.group(1))
        peer = title.group(1) if title and title.group(1) in PEERS else None
        line = text[: m.start()].count("\n") + 1
        found.append(Snippet(f"{path.relative_to(ROOT)}:{line}", m.group(2), peer))
    return found


def check(snippet: Snippet, tmp_path: Path) -> None:
    """Run the snippet (or, for a peer's, parse it) and fail with its place."""
    if snippet.peer is not None:
        ast.parse(snippet.code, filename=snippet.where)
        return
    if re.search(r"^def test_\w+\(\w", snippet.code, re.M):
        _under_pytest(snippet, tmp_path)
        return
    script = tmp_path / "snippet.py"
    script.write_text(PRELUDE + "\n" + snippet.code + "\n" + EPILOGUE)
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    urls = None
    if "DATABASE_URL" in snippet.code:  # a PostgreSQL snippet: a fresh schema of the test server
        urls = pg_schema_url()
        env["DATABASE_URL"] = next(urls)
    try:
        run = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
        )
    finally:
        if urls is not None:
            next(urls, None)
    assert run.returncode == 0 and "snippet ok" in run.stdout, f"{snippet.where}:\n{run.stderr[-3000:]}"


def _under_pytest(snippet: Snippet, tmp_path: Path) -> None:
    """A test module with fixtures: run by pytest, with durably's plugin."""
    from importlib.metadata import entry_points

    (tmp_path / "snippet.py").write_text(snippet.code)
    installed = any(ep.value == "durably.testing.plugin" for ep in entry_points(group="pytest11"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
        + ([] if installed else ["-p", "durably.testing.plugin"])
        + ["snippet.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": os.pathsep.join([SRC, *sys.path[1:]]), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0 and " passed" in run.stdout, f"{snippet.where}:\n{run.stdout[-3000:]}"
