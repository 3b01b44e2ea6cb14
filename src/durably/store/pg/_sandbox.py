"""The role a transaction step's SQL runs as on PostgreSQL, and the writer's
session put back after each step.

A statement check is a friendly first error, not a wall: comments,
``U&"..."`` identifiers, ``E'...'`` escapes and function bodies hide names
and semicolons from any regex. The wall is PostgreSQL's own privilege
system: each step's savepoint starts with ``SET LOCAL ROLE <role>``, a role
with no rights on durably's schema (default ``durably_user_<schema>``,
or ``?tx_role=name``), so whatever the SQL says, durably's tables are out of
its reach.

* :func:`prepare` makes the role usable, once per store, in a transaction
  of its own under an advisory lock: creates it where this login may
  (CREATEROLE or superuser) with USAGE and CREATE on the user's schemas
  (the connection's ``search_path`` without durably's schema), every right
  on their tables and sequences, now and (default privileges) later, and
  lets this login ``SET ROLE`` to it. A role an operator created is used as
  it is. A role that is missing and cannot be created, that this login
  cannot switch to, or that can reach durably's schema is not used: the
  step is refused with :class:`~durably.errors.TxRoleError` naming the
  setup, never run unsandboxed.
* ``SET ROLE`` is no wall against SQL that resets it (``set_config('role',
  'none', ...)`` is always allowed): the role is checked before each
  statement and after the step, and so are durably's tables' row counters
  for this transaction (``pg_stat_get_xact_tuples_*``): a step that switched
  role or wrote durably's rows is rolled back and fails (:func:`breach`).
  Beyond any sandbox inside one session: SQL that switches role, changes
  durably's schema (DDL) and switches back within one statement.
* After each step the writer's session is put back (:data:`RESTORE`):
  ``RESET ROLE``, ``RESET SESSION AUTHORIZATION``, ``RESET ALL`` and
  durably's own settings again, ``UNLISTEN *``, session advisory locks
  released. A ``set_config(..., false)`` inside a savepoint that is released
  would otherwise outlive the step (it persists at session level after the
  commit). Prepared statements are not transactional: if a step created or
  dropped one, all are dropped and psycopg forgets its own
  (``DEALLOCATE ALL``).

Everything this module runs after the user's SQL names ``pg_catalog``
explicitly: the step may have changed ``search_path`` to put its own
functions first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final, LiteralString

import psycopg
from psycopg import sql as pgsql

from ... import _logs, errors
from .._queries import literal_sql
from ._connection import first

log = _logs.get("durably.store")

# The step's savepoint, its search_path and idle budget, a snapshot (the
# session's prepared statements, durably's row counters), then the role.
ENTER: Final = (
    "SAVEPOINT durably_tx; SELECT pg_catalog.set_config('search_path', %s, true),"
    " pg_catalog.set_config('idle_in_transaction_session_timeout', %s, true); {snapshot}; SET LOCAL ROLE {role}"
)
# Before each statement of the step: its time budget, and who it runs as.
STATEMENT: Final = "SELECT pg_catalog.set_config('statement_timeout', %s, true), current_user, session_user"
# After a step whose SQL went well, before its savepoint is released (its
# own statement_timeout, if it set one, is not for durably's statements).
CHECK: Final = (
    "SELECT pg_catalog.set_config('statement_timeout', '0', true); SELECT current_user, session_user,"
    " pg_catalog.current_setting('transaction_read_only'); {snapshot}"
)
RESTORE: Final = (
    "RELEASE SAVEPOINT durably_tx; RESET ROLE; RESET SESSION AUTHORIZATION; RESET ALL; UNLISTEN *;"
    " SELECT pg_catalog.pg_advisory_unlock_all(); {settings}; {snapshot}"
)


def snapshot_sql(table_oids: Sequence[int]) -> LiteralString:
    """One row: the session's prepared statements, and durably's tables'
    rows inserted, updated and deleted so far in this transaction."""
    oids = "'{" + ",".join(str(int(o)) for o in table_oids) + "}'::pg_catalog.oid[]"
    counts = ", ".join(
        f"ARRAY(SELECT pg_catalog.pg_stat_get_xact_tuples_{what}(o) FROM pg_catalog.unnest({oids}) o)"
        for what in ("inserted", "updated", "deleted")
    )
    return literal_sql(f"SELECT ARRAY(SELECT name FROM pg_catalog.pg_prepared_statements ORDER BY name), {counts}")


def rows(cur: psycopg.Cursor[Any]) -> list[tuple[Any, ...]]:
    """The first row of each statement that returns rows, of a
    multi-statement execute, in order."""
    out: list[tuple[Any, ...]] = []
    while True:
        if cur.description is not None:
            out.append(tuple(cur.fetchone() or ()))
        if not cur.nextset():
            return out


def breach(
    role: str, login: str, current: str, session: str, read_only: str, before: tuple[Any, ...], after: tuple[Any, ...]
) -> errors.UsageError | None:
    """Why a step's session is not what it ran in (None: it is)."""
    if current != role or session != login:
        return errors.UsageError(
            f"a transaction step runs as role {role!r} and may not change it (it ran as {current!r}, session "
            f"{session!r}): its SQL was rolled back"
        )
    if read_only != "off":
        return errors.UsageError(
            "a transaction step may not make the batch's transaction read-only: its SQL was rolled back"
        )
    if tuple(before[1:]) != tuple(after[1:]):
        return errors.UsageError(
            "a transaction step wrote durably's own tables (outside its role's rights): its SQL was rolled back"
        )
    return None


def prepare(
    conn: psycopg.Connection[Any], role: str, schema: str, user_schemas: Sequence[str], path: str
) -> errors.TxRoleError | None:
    """Make ``role`` usable for transaction steps (module docstring), in one
    transaction on ``conn`` (autocommit). None: ready; else why not."""
    key = int.from_bytes(hashlib.blake2b(f"durably:role:{role}".encode(), digest_size=8).digest(), "big", signed=True)
    ident = pgsql.Identifier(role)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        created = False
        if row is None:
            created = _try(conn, pgsql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if row is None:
                return _refused(
                    role, schema, path, "does not exist, and this login may not create it (it needs CREATEROLE)"
                )
        if row[0]:
            return _refused(role, schema, path, "is a superuser: it would reach durably's schema")
        kind = "SET" if conn.info.server_version >= 160000 else "MEMBER"
        member = first(conn.execute("SELECT pg_has_role(session_user, %s, %s)", (role, kind)))[0]
        if not member and not _try(conn, pgsql.SQL("GRANT {} TO {}").format(ident, pgsql.Identifier(_login(conn)))):
            return _refused(role, schema, path, f"cannot be switched to by this login ({_login(conn)!r})")
        if first(conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, schema)))[0]:
            return _refused(
                role, schema, path, f"has USAGE on durably's schema {schema!r}: it must have no rights there"
            )
        for name in user_schemas:
            s = pgsql.Identifier(name)
            has = first(
                conn.execute(
                    "SELECT has_schema_privilege(%s, %s, 'USAGE') AND has_schema_privilege(%s, %s, 'CREATE')",
                    (role, name, role, name),
                )
            )[0]
            grants = [] if has else [pgsql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(s, ident)]
            if created:  # what the login could use in its schemas, the role may use too (not durably's schema)
                grants += [
                    pgsql.SQL(q).format(s, ident)
                    for q in (
                        "GRANT ALL ON ALL TABLES IN SCHEMA {} TO {}",
                        "GRANT ALL ON ALL SEQUENCES IN SCHEMA {} TO {}",
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT ALL ON TABLES TO {}",
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT ALL ON SEQUENCES TO {}",
                    )
                ]
            for grant in grants:
                if not _try(conn, grant):
                    log.warning(
                        "durably: could not run %s on %s; transaction steps may lack rights there",
                        grant.as_string(conn),
                        path,
                        extra=_logs.fields("store.grant_failed"),
                    )
    return None


def _login(conn: psycopg.Connection[Any]) -> str:
    login: str = first(conn.execute("SELECT session_user"))[0]
    return login


def _try(conn: psycopg.Connection[Any], statement: pgsql.Composed) -> bool:
    """Run one statement in a savepoint; False if the server refused it."""
    try:
        with conn.transaction():
            conn.execute(statement)
        return True
    except (
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.DuplicateObject,
        psycopg.errors.UndefinedObject,
        psycopg.errors.InvalidGrantOperation,
        psycopg.errors.FeatureNotSupported,
    ) as exc:
        log.debug("durably: %s refused: %s", statement, exc, extra=_logs.fields("store.sandbox_refused"))
        return False


def _refused(role: str, schema: str, path: str, why: str) -> errors.TxRoleError:
    return errors.TxRoleError(
        f"transaction steps are refused on {path}: their SQL runs as role {role!r}, which {why}. "
        f"An operator sets it up once: CREATE ROLE {role} NOLOGIN; GRANT {role} TO <this login>; "
        f"GRANT USAGE, CREATE ON SCHEMA <your schema> TO {role}; and no rights on schema {schema!r} "
        '(docs/guides/postgresql.md, "Transaction steps")',
        path=path,
        role=role,
    )
