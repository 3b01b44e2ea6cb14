"""PostgreSQL connections: the writer's, the read pool's, and the session settings every one gets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg_pool import ConnectionPool

from ... import errors
from ._settings import IDLE_IN_TX

if TYPE_CHECKING:
    from ._store import PgStore


def first(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a statement that always returns one (an aggregate, a
    setting): its absence is a broken invariant, not a value."""
    row = cur.fetchone()
    if row is None:
        raise errors.InternalError("a PostgreSQL statement that always returns a row returned none")
    return tuple(row)


def connect(store: PgStore, autocommit: bool = True) -> psycopg.Connection[Any]:
    try:
        conn = psycopg.connect(
            store._url,
            autocommit=autocommit,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            **store._timeout,
            application_name=f"durably:{store.schema}",
        )
    except psycopg.Error as exc:
        raise errors.DatabaseUnavailableError(f"cannot connect to {store.path}: {exc}", path=store.path) from exc
    return conn


def configure(store: PgStore, conn: psycopg.Connection[Any], writer: bool = False) -> None:
    """Our SQL is unqualified: durably's schema first on the path. A
    writer left idle inside its transaction (its process SIGSTOPped or
    frozen mid-batch) is cut off by the server after IDLE_IN_TX seconds,
    so the row lock of its fence check does not block takeovers for
    longer: resumed, it reconnects, finds that batch rolled back and
    writes it again, fenced. The writer's path has none of the user's
    schemas (nothing a transaction step creates can shadow what its SQL
    names); the readers' also has the user's (reads of the user's
    tables, as a transaction step sees them)."""
    conn.execute(settings_sql(store), settings(store, writer))


def settings(store: PgStore, writer: bool) -> tuple[str, ...]:
    path = f'"{store.schema}", pg_catalog, pg_temp' if writer else f'"{store.schema}", {store._user_path}'
    # Engine(synchronous="normal"): commits return before their WAL is
    # flushed (the last ones may be lost if the *server* crashes);
    # "full" keeps the server's own setting (docs/guides/postgresql.md).
    commit = "off" if store.synchronous == "normal" else None
    return (path, f"{int(IDLE_IN_TX * 1000)}ms") + ((commit,) if commit else ())


def settings_sql(store: PgStore) -> LiteralString:
    return (
        "SELECT pg_catalog.set_config('search_path', %s, false), pg_catalog.set_config("
        "'idle_in_transaction_session_timeout', %s, false)"
        + (", pg_catalog.set_config('synchronous_commit', %s, false)" if store.synchronous == "normal" else "")
    )


def step_path(store: PgStore) -> str:
    return ", ".join('"' + s.replace('"', '""') + '"' for s in store._user_schemas)


def open_pool(store: PgStore) -> None:
    store._pool = ConnectionPool(
        store._url,
        min_size=1,
        max_size=4,
        open=False,
        name=f"durably-{store.schema}",
        kwargs={"autocommit": True, "application_name": f"durably-read:{store.schema}", **store._timeout},
        configure=lambda conn: configure(store, conn),
        timeout=30.0,
    )
    try:
        store._pool.open(wait=True, timeout=15.0)
    except Exception as exc:
        raise errors.DatabaseUnavailableError(f"cannot connect to {store.path}: {exc}", path=store.path) from exc


def schema_version_ro(store: PgStore) -> int | None:
    rows = store.query("SELECT to_regclass(%s) IS NOT NULL", (f"{store.schema}.meta",))
    if not rows[0][0]:
        return None
    return int(store.query("SELECT value FROM meta WHERE key = 'version'")[0][0])
