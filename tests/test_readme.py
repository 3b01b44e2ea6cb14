"""Every ```python snippet in README.md runs.

Each snippet runs in a fresh interpreter, in a temporary directory, after a
prelude that gives it what the surrounding prose assumes: an open engine
named ``engine`` (in memory, with a virtual clock so that waits of days
finish at once) and the helper functions the examples call. A snippet that
defines ``test_*`` functions has them called. A snippet whose tests take
fixtures is a test module of its own: it runs as it is under pytest, with
durably's plugin. The two shell commands are covered by CI itself (.ci/run
runs them exactly as written).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import durably

from .conftest import pg_schema_url

README = Path(__file__).resolve().parent.parent / "README.md"
SRC = str(Path(durably.__file__).resolve().parents[1])

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


def _snippets() -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


SNIPPETS = _snippets()


def test_the_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 7


def _under_pytest(tmp_path: Path, line: int, code: str) -> None:
    """A test module with fixtures: run by pytest, with durably's plugin."""
    from importlib.metadata import entry_points

    (tmp_path / "snippet.py").write_text(code)
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
    assert run.returncode == 0 and " passed" in run.stdout, f"README.md line {line}:\n{run.stdout[-3000:]}"


@pytest.mark.parametrize("line,code", SNIPPETS, ids=[f"line{line}" for line, _ in SNIPPETS])
def test_readme_snippet_runs(tmp_path: Path, line: int, code: str) -> None:
    if re.search(r"^def test_\w+\(\w", code, re.M):
        _under_pytest(tmp_path, line, code)
        return
    script = tmp_path / "snippet.py"
    script.write_text(PRELUDE + "\n" + code + "\n" + EPILOGUE)
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    urls = None
    if "DATABASE_URL" in code:  # a PostgreSQL snippet: a fresh schema of the test server
        urls = pg_schema_url()
        env["DATABASE_URL"] = next(urls)
    try:
        run = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
        )
    finally:
        if urls is not None:
            next(urls, None)
    assert run.returncode == 0 and "snippet ok" in run.stdout, f"README.md line {line}:\n{run.stderr[-3000:]}"
