"""Schema and migrations, keyed by ``PRAGMA user_version``.

``MIGRATIONS[i]`` upgrades a database from version ``i`` to ``i + 1``; all
pending scripts run in one transaction (apsw doc/tips.rst, "Managing and
updating your schema"). A database whose version is above
``len(MIGRATIONS)`` was written by a newer durably and is refused.
"""

from __future__ import annotations

APPLICATION_ID = 0x44524231  # "DRB1": marks a durably database

MIGRATIONS: tuple[str, ...] = (
    # v1: workflows and their step journal.
    """
    CREATE TABLE workflows (
        workflow_id TEXT PRIMARY KEY NOT NULL,
        name        TEXT NOT NULL,
        status      TEXT NOT NULL
                    CHECK (status IN ('PENDING', 'SUCCESS', 'ERROR', 'CANCELLED')),
        inputs      NOT NULL,          -- (no type: BLOB affinity, stored as given) codec-encoded [args, kwargs]
        output,                        -- codec-encoded return value (SUCCESS)
        error,                         -- JSON error description (ERROR)
        parent_id   TEXT,              -- set for child workflows
        parked      TEXT,              -- why a PENDING workflow is not running
        created_at  REAL NOT NULL DEFAULT (unixepoch('subsec')),
        updated_at  REAL NOT NULL DEFAULT (unixepoch('subsec'))
    );
    -- serves recovery (status = 'PENDING') and list_workflows(status=...)
    CREATE INDEX workflows_status ON workflows (status, created_at);
    CREATE INDEX workflows_parent ON workflows (parent_id) WHERE parent_id IS NOT NULL;

    -- one row per recorded step outcome, keyed by call order in the workflow
    CREATE TABLE steps (
        workflow_id TEXT NOT NULL REFERENCES workflows (workflow_id),
        position    INTEGER NOT NULL,
        name        TEXT NOT NULL,
        output,
        error,
        recorded_at REAL NOT NULL DEFAULT (unixepoch('subsec')),
        PRIMARY KEY (workflow_id, position)
    ) WITHOUT ROWID;
    """,
    # v2: whether an engine has the file open, to tell a crash from a clean close.
    """
    CREATE TABLE engine_state (
        key   TEXT PRIMARY KEY NOT NULL,
        value
    ) WITHOUT ROWID;
    INSERT INTO engine_state (key, value) VALUES ('open', 0);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
