from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import durably


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "test.db")


@pytest.fixture
def make_engine(db_path: str) -> Iterator[Callable[..., durably.Engine]]:
    """Build engines on the test's database (opened by the test); closes them all."""
    made: list[durably.Engine] = []

    def make(path: str | None = None, **kw: Any) -> durably.Engine:
        engine = durably.Engine(path or db_path, **kw)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture(params=["file", "memory"])
def any_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "any.db") if request.param == "file" else ":memory:"


def expected_implementation() -> str:
    return "python" if os.environ.get("DURABLY_NO_EXTENSIONS") else "cython"
