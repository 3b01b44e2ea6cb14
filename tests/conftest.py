from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import durably

# PostgreSQL: the modules below run against both backends (their ``db_path``
# is a fresh schema of this server on the "postgresql" run); the others
# hold SQLite-specific tests (files, PRAGMAs, VFS faults, the sqlite3 shell).
PG_URL = os.environ.get("DURABLY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BOTH_BACKENDS = {
    "test_engine",
    "test_otel",
    "test_toolkit",
    "test_messages",
    "test_events",
    "test_queues",
    "test_schedule_management",
    "test_schedule_time_zones",
    "test_schedules",
    "test_management",
    "test_replay",
    "test_replay_concurrency",
    "test_async",
    "test_patching",
    "test_values",
    "test_model_values",
    "test_clock",
    "test_clock_jumps",
    "test_tx_budget",
    "test_async_close",
    "test_first_contact",
    "test_names",
    "test_retries",
    "test_inspection",
    "test_retention",
    "test_registry",
    "test_replayer",
    "test_crash_check",
    "test_bulk_starts",
    "test_recovery_scale",
}
_pg_state: dict[str, Any] = {}


def pg_unreachable() -> str | None:
    """None when the test server answers, else why the PostgreSQL tests skip."""
    if "why" not in _pg_state and os.environ.get("DURABLY_SKIP_PG"):
        # .ci/run's twin run (the pure-Python journal): SQLite only
        _pg_state["why"] = (
            "PostgreSQL tests skipped: DURABLY_SKIP_PG is set (the twin run checks the journal on SQLite)"
        )
    if "why" not in _pg_state:
        try:
            import psycopg

            psycopg.connect(PG_URL, connect_timeout=3).close()
            _pg_state["why"] = None
        except Exception as exc:  # ImportError, or no server
            _pg_state["why"] = (
                f"PostgreSQL tests skipped: no server at {PG_URL} ({type(exc).__name__}); to run "
                "them start PostgreSQL or set DURABLY_TEST_PG to a database URL "
                "(.ci/run requires them: DURABLY_REQUIRE_PG=1)"
            )
    return _pg_state["why"]


def pg_schema_url() -> Iterator[str]:
    """A fresh schema on the test server (dropped afterwards), as an engine URL."""
    why = pg_unreachable()
    if why is not None:
        if os.environ.get("DURABLY_REQUIRE_PG") and not os.environ.get("DURABLY_SKIP_PG"):
            pytest.fail(why.replace("skipped", "required"))
        pytest.skip(why)
    import psycopg

    # durably's schema, and the user's own (the search_path of the URL's
    # connections: a transaction step's tables land there): both dropped
    # after, and the role transaction steps ran as, if one was made.
    tag = uuid.uuid4().hex[:12]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA u_{tag}")
    yield f"{PG_URL}?schema=t_{tag}&options=-csearch_path%3Du_{tag}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS t_{tag} CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS u_{tag} CASCADE")
        drop_role(conn, f"durably_user_t_{tag}")


def drop_role(conn: Any, role: str) -> None:
    """Drop a role the tests made (roles are the server's, not a schema's)."""
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh database of ``kind`` ("sqlite": a file in a temporary
    directory, "postgresql": a fresh schema), for tests that build their own
    (Hypothesis examples, state machines)."""
    if kind == "postgresql":
        urls = pg_schema_url()
        try:
            yield next(urls)
        finally:
            next(urls, None)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield str(Path(tmp) / "test.db")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rpartition(".")[2]
    if module in BOTH_BACKENDS and "db_path" in metafunc.fixturenames:
        metafunc.parametrize("db_backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and (
            callspec.params.get("db_backend") == "postgresql" or callspec.params.get("any_path") == "postgresql"
        )
        if on_pg and item.get_closest_marker("sqlite_only") is not None:
            item.add_marker(pytest.mark.skip(reason="SQLite-specific (sqlite_only)"))


@pytest.fixture
def db_path(tmp_path: Path, db_backend: str) -> Iterator[str]:
    if db_backend == "postgresql":
        yield from pg_schema_url()
    else:
        yield str(tmp_path / "test.db")


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


@pytest.fixture(params=["file", "memory", "postgresql"])
def any_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        yield from pg_schema_url()
    else:
        yield str(tmp_path / "any.db") if request.param == "file" else ":memory:"


def expected_implementation() -> str:
    """The pure-Python journal when asked for at run time, or when the package
    was built without the extension (DURABLY_NO_EXTENSIONS=1 pip install .)."""
    from durably import journal

    return "python" if os.environ.get("DURABLY_NO_EXTENSIONS") or journal.PURE_BUILD else "cython"
