"""The crash tiers' view of a database, on either backend.

A database is a SQLite file path or a ``postgresql://...?schema=NAME`` URL
(durably's own ``schema=`` parameter). :func:`connect` opens a plain
connection for the checker (apsw for a file; psycopg for a URL, ``schema=``
taken out and ``SET search_path`` to that schema: the tables and columns
have the same names on both). SQL is written once with ``?`` placeholders.

The PostgreSQL crash tiers need the test server (``tests/conftest.py``:
``DURABLY_TEST_PG``, skipped with one reason when none answers, failed
under ``DURABLY_REQUIRE_PG=1``), a command restarting it
(``DURABLY_PG_RESTART``, default ``pg_ctlcluster 15 main restart``; and
``DURABLY_PG_RESTART_IMMEDIATE``, a crash of the server: ``-m immediate``), and
:func:`backends_of` finds the server backends of given client processes
(their TCP ports in ``pg_stat_activity``), so the chaos terminates this run's
connections only, never another test's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

PG_URL = os.environ.get("DURABLY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
RESTART = os.environ.get("DURABLY_PG_RESTART", "pg_ctlcluster 15 main restart")
# a server crash: shut down without a checkpoint, WAL recovery at the start
RESTART_IMMEDIATE = os.environ.get("DURABLY_PG_RESTART_IMMEDIATE", "pg_ctlcluster -m immediate 15 main restart")


def split_url(url: str) -> tuple[str, str]:
    """libpq's URL (durably's own parameters, ``schema=``, ``listen=``, taken
    out) and the schema named (default ``durably``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = [v for k, v in query if k == "schema"]
    rest = urlencode([(k, v) for k, v in query if k not in ("schema", "listen")])
    return urlunsplit(parts._replace(query=rest)), (schema[-1] if schema else "durably")


def is_pg(db: str | Path) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


class Reader:
    """A plain connection to the database (the checker's, the negative
    controls' forgeries): ``rows(sql, params)``, ``execute(sql, params)``."""

    def __init__(self, db: str | Path, readonly: bool = True) -> None:
        self.pg = is_pg(db)
        if self.pg:
            import psycopg

            url, schema = split_url(str(db))
            self.conn: Any = psycopg.connect(url, autocommit=True, application_name="crashtests-reader")
            self.conn.execute("SELECT set_config('search_path', %s, false)", (f'"{schema}"',))
        else:
            import apsw

            flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
            self.conn = apsw.Connection(str(db), flags=flags)

    def _sql(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s") if self.pg else sql

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(_text(v) for v in row) for row in self.conn.execute(self._sql(sql), tuple(params)).fetchall()]

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.conn.execute(self._sql(sql), tuple(params))

    def integrity_ok(self) -> bool:
        if self.pg:  # the server's own business: no file to check
            return True
        return self.conn.execute("PRAGMA integrity_check").get == "ok"

    def close(self) -> None:
        self.conn.close()


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, memoryview)) and not isinstance(value, bytes):
        return bytes(value)
    return value


def placeholders(sql: str, pg: bool) -> str:
    """``?`` placeholders for the store's own ``query`` (psycopg wants ``%s``)."""
    return sql.replace("?", "%s") if pg else sql


# -- the PostgreSQL test server -------------------------------------------------------------


def require_pg() -> None:
    """Skip (one reason) when no server answers; fail under DURABLY_REQUIRE_PG."""
    from tests.conftest import pg_unreachable

    why = pg_unreachable()
    if why is not None:
        if os.environ.get("DURABLY_REQUIRE_PG"):
            pytest.fail(why.replace("skipped", "required"))
        pytest.skip(why)


def require_restart() -> None:
    """The server-restart command must exist (else skip; fail under DURABLY_REQUIRE_PG)."""
    if shutil.which(shlex.split(RESTART)[0]) is None:
        why = f"PostgreSQL restart tests skipped: no {RESTART!r} (set DURABLY_PG_RESTART)"
        if os.environ.get("DURABLY_REQUIRE_PG"):
            pytest.fail(why)
        pytest.skip(why)


def fresh_schema() -> Iterator[str]:
    """An engine URL naming a fresh schema of the test server, dropped afterwards."""
    require_pg()
    import psycopg

    schema = f"crash_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    import time

    for _attempt in range(30):  # the server may be coming back from a restart
        try:
            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
                # A test that failed may leave a connection of its own inside a
                # transaction (a worker SIGSTOPped, an engine not closed): end
                # this schema's connections (named durably:<schema>, durably-read:<schema>)
                # rather than wait on their locks for ever.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
                    (f"%:{schema}",),
                )
                conn.execute("SET lock_timeout = '20s'")
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            return
        except psycopg.errors.LockNotAvailable:
            continue
        except psycopg.OperationalError:
            time.sleep(1.0)


def control() -> Any:
    """A fresh autocommit connection for the driver's chaos (not a durably one)."""
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5, application_name="crashtests-driver")


def restart_server(immediate: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        shlex.split(RESTART_IMMEDIATE if immediate else RESTART), capture_output=True, text=True, timeout=120
    )


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _local_ports(inodes: set[str]) -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def backends_of(conn: Any, pids: Iterable[int]) -> list[int]:
    """The server pids of durably's connections held by these client processes
    (TCP connections only: ``pg_stat_activity.client_port``)."""
    inodes: set[str] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    ports = _local_ports(inodes)
    if not ports:
        return []
    return [
        pid
        for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) AND application_name LIKE 'durably%%'"
            " AND pid <> pg_backend_pid()",
            (sorted(ports),),
        ).fetchall()
    ]


def terminate(conn: Any, backend_pids: list[int]) -> int:
    if not backend_pids:
        return 0
    return sum(
        1
        for (ok,) in conn.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (backend_pids,)
        ).fetchall()
        if ok
    )
