"""The PostgreSQL schema: durably's tables in a schema of their own
(default ``durably``), so several applications can share one database.

``MIGRATIONS[i]`` upgrades a schema from version ``i`` to ``i + 1``; all
pending scripts run in one transaction under an advisory lock (two
processes opening a new database at once: one creates, the other waits and
finds it created). The version lives in ``{schema}.meta``; a newer one is
refused. ``{V}`` is the type of stored values, fixed at creation by the
codec: ``text`` (json) or ``bytea`` (pickle).

Compared with the SQLite schema (store/_schema.py), two things are
PostgreSQL's own:

* every change of a workflow's owner counts itself in the ``takeovers`` row,
  which every journal batch reads with a share lock held to its commit, so
  no claim commits between a batch's ownership check and its commit
  (store/pg/_store.py, ``_FENCE``);
* a notice, or a workflow leaving PENDING, notifies the channel
  ``durably:{schema}`` at commit (LISTEN/NOTIFY wakes the other processes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, LiteralString

import psycopg
from psycopg import sql as pgsql

from ... import errors
from .._queries import literal_sql
from ._connection import first
from ._errors import map_error
from ._settings import lock_key

if TYPE_CHECKING:
    from ._store import PgStore

NOW: Final = "extract(epoch from clock_timestamp())"

MIGRATIONS: tuple[str, ...] = (
    # v1: everything the SQLite schema holds at its version 5.
    """
    CREATE TABLE {s}.workflows (
        seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- creation order: a total order
        workflow_id text PRIMARY KEY,
        name        text NOT NULL,
        status      text NOT NULL CHECK (status IN ('PENDING', 'SUCCESS', 'ERROR', 'CANCELLED',
                                                    'MAX_RECOVERY_ATTEMPTS_EXCEEDED')),
        inputs      {V} NOT NULL,
        output      {V},
        error       text,
        parent_id   text,
        parked      text,
        created_at  float8 NOT NULL DEFAULT {now},
        updated_at  float8 NOT NULL DEFAULT {now},
        deadline    float8,
        recovery_attempts integer NOT NULL DEFAULT 0,
        executor    text,
        epoch       bigint NOT NULL DEFAULT 0,
        app_version text
    );
    CREATE INDEX ON {s}.workflows (status, seq);
    CREATE INDEX ON {s}.workflows (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX ON {s}.workflows (name, seq);
    CREATE INDEX ON {s}.workflows (created_at);
    CREATE INDEX ON {s}.workflows (executor) WHERE status = 'PENDING';
    CREATE INDEX ON {s}.workflows (workflow_id text_pattern_ops);  -- id prefix listings

    -- no foreign key to workflows: PostgreSQL would lock the workflow row
    -- (a WAL-logged tuple lock) for every step row; the engine writes a
    -- step only for a workflow whose start committed before it
    CREATE TABLE {s}.steps (
        workflow_id text NOT NULL,
        position    integer NOT NULL,
        name        text NOT NULL,
        output      {V},
        error       text,
        ident       text,
        started_at  float8,
        recorded_at float8 NOT NULL DEFAULT {now},
        PRIMARY KEY (workflow_id, position)
    );

    CREATE TABLE {s}.engine_state (key text PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO {s}.engine_state (key, value) VALUES ('takeovers', 0);

    CREATE TABLE {s}.messages (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dest       text NOT NULL REFERENCES {s}.workflows (workflow_id),
        topic      text,
        payload    {V} NOT NULL,
        created_at float8 NOT NULL DEFAULT {now}
    );
    CREATE INDEX ON {s}.messages (dest, topic, id);

    CREATE TABLE {s}.events (
        workflow_id text NOT NULL REFERENCES {s}.workflows (workflow_id),
        key         text NOT NULL,
        value       {V},
        updated_at  float8 NOT NULL DEFAULT {now},
        PRIMARY KEY (workflow_id, key)
    );

    CREATE TABLE {s}.queue_entries (
        seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        workflow_id text NOT NULL UNIQUE REFERENCES {s}.workflows (workflow_id),
        queue       text NOT NULL,
        priority    integer NOT NULL DEFAULT 0,
        not_before  float8 NOT NULL,
        dedup_key   text,
        started_at  float8,
        done        integer NOT NULL DEFAULT 0
    );
    CREATE INDEX ON {s}.queue_entries (queue, priority, seq) WHERE started_at IS NULL;
    CREATE INDEX ON {s}.queue_entries (queue, started_at) WHERE started_at IS NOT NULL;
    CREATE UNIQUE INDEX ON {s}.queue_entries (queue, dedup_key) WHERE dedup_key IS NOT NULL AND done = 0;

    CREATE TABLE {s}.schedules (
        name      text PRIMARY KEY,
        cron      text NOT NULL,
        workflow  text NOT NULL,
        last_slot float8 NOT NULL,
        paused    integer NOT NULL DEFAULT 0,
        tz        text,
        missed    text NOT NULL DEFAULT 'latest'
    );

    CREATE TABLE {s}.send_keys (
        key        text PRIMARY KEY,
        dest       text NOT NULL,
        created_at float8 NOT NULL DEFAULT {now}
    );

    CREATE TABLE {s}.executors (
        executor_id text PRIMARY KEY,
        host        text NOT NULL,
        pid         integer NOT NULL,
        pid_started text,
        app_version text NOT NULL,
        started_at  float8 NOT NULL DEFAULT {now},
        lease_until float8 NOT NULL,
        stopped_at  float8
    );

    CREATE TABLE {s}.notices (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind        text NOT NULL,
        workflow_id text,
        detail      text,
        created_at  float8 NOT NULL DEFAULT {now}
    );

    -- a workflow leaving PENDING: its queue slot frees; a cancel leaves a
    -- notice; every process is told (a result() waiter elsewhere wakes)
    CREATE FUNCTION {s}.workflow_ended() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE {s}.queue_entries SET done = 1 WHERE workflow_id = NEW.workflow_id AND done = 0;
        IF NEW.status = 'CANCELLED' THEN
            INSERT INTO {s}.notices (kind, workflow_id) VALUES ('cancel', NEW.workflow_id);
        END IF;
        PERFORM pg_notify({channel}, 'end');
        RETURN NULL;
    END $$;
    CREATE TRIGGER workflow_ended AFTER UPDATE OF status ON {s}.workflows FOR EACH ROW
        WHEN (OLD.status = 'PENDING' AND NEW.status <> 'PENDING') EXECUTE FUNCTION {s}.workflow_ended();

    -- a change of owner is counted: the update locks the takeovers row,
    -- which every journal batch holds shared from its fence check to its commit
    CREATE FUNCTION {s}.workflow_owner_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE {s}.engine_state SET value = value + 1 WHERE key = 'takeovers';
        RETURN NULL;
    END $$;
    CREATE TRIGGER workflow_owner_changed AFTER UPDATE OF executor ON {s}.workflows FOR EACH ROW
        WHEN (OLD.executor IS NOT NULL AND NEW.executor IS DISTINCT FROM OLD.executor)
        EXECUTE FUNCTION {s}.workflow_owner_changed();

    -- the hot path's fence, inside a batch's one-round-trip transaction:
    -- the takeovers count still as this writer last saw it, share-locked to
    -- the commit; else the batch aborts (DRB01) and goes the general way
    CREATE FUNCTION {s}.fence(expected bigint) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM {s}.engine_state WHERE key = 'takeovers' AND value = expected FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'durably: a workflow changed owner' USING ERRCODE = 'DRB01';
        END IF;
    END $$;

    CREATE FUNCTION {s}.queue_slot_freed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}.notices (kind, workflow_id, detail) VALUES ('queue', NEW.workflow_id, NEW.queue);
        RETURN NULL;
    END $$;
    CREATE TRIGGER queue_slot_freed AFTER UPDATE OF done ON {s}.queue_entries FOR EACH ROW
        WHEN (NEW.done = 1 AND OLD.done = 0) EXECUTE FUNCTION {s}.queue_slot_freed();

    CREATE FUNCTION {s}.notice_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify({channel}, 'notice');
        RETURN NULL;
    END $$;
    CREATE TRIGGER notice_added AFTER INSERT ON {s}.notices FOR EACH STATEMENT
        EXECUTE FUNCTION {s}.notice_added();
    """,
    # v2, as SQLite's v6: the limits each queue was last declared with; and
    # for retention, a workflow's send keys and notices (deleted with it)
    # are found by these indexes.
    """
    CREATE TABLE {s}.queues (
        name        text PRIMARY KEY,
        concurrency integer,
        rate_starts integer,
        rate_period float8,
        declared_at float8 NOT NULL DEFAULT {now}
    );
    CREATE INDEX ON {s}.send_keys (dest);
    CREATE INDEX ON {s}.notices (workflow_id) WHERE workflow_id IS NOT NULL;
    """,
    # v3, as SQLite's v7: the OpenTelemetry span a workflow's runs descend
    # from and link to (a W3C traceparent; durably/telemetry.py).
    """
    ALTER TABLE {s}.workflows ADD COLUMN trace text;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(store: PgStore, conn: psycopg.Connection[Any], codec: str | None) -> None:
    s = store.schema
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(f"durably:migrate:{s}"),))
            exists = first(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{s}.meta",)))[0]
            if not exists:
                _create_meta(store, conn, codec)
            meta = dict(
                conn.execute(pgsql.SQL("SELECT key, value FROM {}.meta").format(pgsql.Identifier(s))).fetchall()
            )
            _apply_migrations(store, conn, int(meta["version"]), meta["value_type"])
            if codec is not None:
                _check_codec(store, conn, meta.get("codec"), codec)
    except psycopg.Error as exc:
        raise map_error(exc, store.path) from exc


def _create_meta(store: PgStore, conn: psycopg.Connection[Any], codec: str | None) -> None:
    """Create the schema and its meta table at version 0, unless the
    schema already holds tables that are not durably's."""
    s = store.schema
    tables = first(conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (s,)))[0]
    if tables:
        raise errors.SchemaVersionError(
            f"schema {s!r} in {store.path} already holds tables that are not durably's; "
            "choose another schema (Engine(..., schema=...))",
            path=store.path,
            found=0,
            supported=SCHEMA_VERSION,
        )
    conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(s)))
    conn.execute(
        pgsql.SQL("CREATE TABLE {}.meta (key text PRIMARY KEY, value text NOT NULL)").format(pgsql.Identifier(s))
    )
    value_type = "bytea" if codec == "pickle" else "text"
    conn.execute(
        pgsql.SQL("INSERT INTO {}.meta (key, value) VALUES ('version', '0'), ('value_type', %s)").format(
            pgsql.Identifier(s)
        ),
        (value_type,),
    )


def _apply_migrations(store: PgStore, conn: psycopg.Connection[Any], version: int, value_type: str) -> None:
    """Run the migrations after ``version`` and record the new version;
    refuse a schema newer than this durably."""
    s = store.schema
    if version > SCHEMA_VERSION:
        raise errors.SchemaVersionError(
            f"schema {s!r} in {store.path} has version {version}, newer than this durably supports "
            f"({SCHEMA_VERSION}); upgrade durably",
            path=store.path,
            found=version,
            supported=SCHEMA_VERSION,
        )
    store._value_type = literal_sql(value_type)  # as durably recorded it: "bytea" or "text"
    for script in MIGRATIONS[version:]:
        conn.execute(ddl(store, script))
    if version < SCHEMA_VERSION:
        conn.execute(
            pgsql.SQL("UPDATE {}.meta SET value = %s WHERE key = 'version'").format(pgsql.Identifier(s)),
            (str(SCHEMA_VERSION),),
        )


def _check_codec(store: PgStore, conn: psycopg.Connection[Any], stored: str | None, codec: str) -> None:
    """Record ``codec`` in a schema that has none; refuse a different one."""
    s = store.schema
    if stored is None:
        conn.execute(
            pgsql.SQL("INSERT INTO {}.meta (key, value) VALUES ('codec', %s)").format(pgsql.Identifier(s)),
            (codec,),
        )
    elif stored != codec:
        raise errors.CodecMismatchError(
            f"schema {s!r} in {store.path} holds values written with codec={stored!r}; open it with "
            f"durably.Engine(..., codec={stored!r}), not {codec!r}",
            path=store.path,
            stored=stored,
            requested=codec,
        )


def ddl(store: PgStore, script: str) -> LiteralString:
    return literal_sql(
        script.replace("{s}", store.schema)
        .replace("{V}", store._value_type)
        .replace("{now}", NOW)
        .replace("{channel}", "'" + store.channel + "'")
    )
