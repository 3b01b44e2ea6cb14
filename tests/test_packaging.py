"""Packaging: the sdist carries what builds the wheel and runs the suite, the
wheel built from it carries the compiled journal, a build whose compiler
fails fails, and DURABLY_NO_EXTENSIONS=1 builds the pure-Python package on
purpose (which then runs the pure-Python journal with no variable set).

CI builds the sdist and the wheel once (`python -m build`, .ci/run) and
hands them over in DURABLY_DIST; without it this module builds them itself.
Builds run in isolated environments (pip fetches setuptools and Cython).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        importlib.util.find_spec("build") is None, reason="`build` not installed (the test extra has it)"
    ),
]


def _build(source: Path, outdir: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DURABLY_NO_EXTENSIONS"} | env
    return subprocess.run(
        [sys.executable, "-m", "build", *flags, "--outdir", str(outdir), str(source)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=540,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("DURABLY_DIST")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("dist")
    run = _build(ROOT, out)  # the sdist, then a wheel built from it
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def unpacked_sdist(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    (sdist,) = dist.glob("durably-*.tar.gz")
    out = tmp_path_factory.mktemp("sdist")
    with tarfile.open(sdist) as tar:
        tar.extractall(out, filter="data")
    (top,) = out.iterdir()
    return top


def _names(archive: Path) -> Iterator[str]:
    if archive.suffix == ".whl":
        yield from zipfile.ZipFile(archive).namelist()
    else:
        with tarfile.open(archive) as tar:
            yield from (name.split("/", 1)[1] for name in tar.getnames() if "/" in name)


def test_the_sdist_builds_the_wheel_and_runs_the_suite(dist: Path) -> None:
    (sdist,) = dist.glob("durably-*.tar.gz")
    names = set(_names(sdist))
    for needed in [
        "LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in", "conftest.py", "mkdocs.yml",
        "csrc/_journal.pyx", "src/durably/py.typed", "src/durably/ui/static/index.html",
        "src/durably/journal/_journal_py.py", "tests/conftest.py", "tests/test_packaging.py",
        "crashtests/workload.py", "examples/checkout.py", "docs/index.md", "docs/ui.png",
        "tools/griffe_documented.py",
    ]:  # fmt: skip
        assert needed in names, needed
    assert len([n for n in names if n.startswith("tests/test_")]) >= 40
    # Cython's generated C, built objects and databases stay out
    assert [n for n in names if n.endswith((".c", ".so", ".pyd", ".db", ".pyc")) or "PURE_BUILD" in n] == []


def test_the_wheel_from_the_sdist_carries_the_compiled_journal(dist: Path) -> None:
    (wheel,) = [w for w in dist.glob("durably-*.whl") if "none-any" not in w.name]
    names = set(_names(wheel))
    assert any(n.startswith("durably/journal/_journal_c.") and n.endswith((".so", ".pyd")) for n in names)
    assert {"durably/py.typed", "durably/ui/static/app.js", "durably/journal/_journal_py.py"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "durably/journal/PURE_BUILD" not in names
    assert not any(n.startswith(("tests/", "crashtests/", "csrc/")) for n in names)
    metadata = next(zipfile.Path(wheel, n).read_text() for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: MIT" in metadata


def test_a_failing_compiler_fails_the_build(unpacked_sdist: Path, tmp_path: Path) -> None:
    run = _build(unpacked_sdist, tmp_path, "--wheel", CC="/bin/false", LDSHARED="/bin/false")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "/bin/false" in output and "did not build" in output
    assert "DURABLY_NO_EXTENSIONS=1 pip install" in output  # what to do instead, said where it fails
    assert list(tmp_path.glob("*.whl")) == []


def test_the_pure_python_build_is_explicit_and_runs_the_twin(unpacked_sdist: Path, tmp_path: Path) -> None:
    run = _build(unpacked_sdist, tmp_path, "--wheel", DURABLY_NO_EXTENSIONS="1", CC="/bin/false")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (wheel,) = tmp_path.glob("durably-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")  # no compiled code: one wheel for every platform
    names = set(_names(wheel))
    assert "durably/journal/PURE_BUILD" in names
    assert not any(n.endswith((".so", ".pyd")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "DURABLY_NO_EXTENSIONS"} | {"PYTHONPATH": str(site)}
    probe = (
        "import durably, durably.journal as j;"
        "e = durably.Engine(':memory:'); w = e.workflow(name='w')(lambda n: n * 2); e.open();"
        "print(durably.__file__, j.IMPLEMENTATION, e.run(w, 21)); e.close()"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    where, implementation, result = out.stdout.split()
    assert where.startswith(str(site)) and implementation == "python" and result == "42"
