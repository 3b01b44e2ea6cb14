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
    # v3: the workflow toolkit: durable deadlines, messages, events, queues, schedules.
    """
    ALTER TABLE workflows ADD COLUMN deadline REAL;   -- unix time; cancelled when passed

    -- messages waiting to be received; a receive deletes the row in the same
    -- transaction that records the receiving step (exactly once)
    CREATE TABLE messages (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        dest       TEXT NOT NULL REFERENCES workflows (workflow_id),
        topic      TEXT,
        payload    NOT NULL,
        created_at REAL NOT NULL DEFAULT (unixepoch('subsec'))
    );
    CREATE INDEX messages_dest ON messages (dest, topic, id);

    -- the latest value of each (workflow, key) event
    CREATE TABLE events (
        workflow_id TEXT NOT NULL REFERENCES workflows (workflow_id),
        key         TEXT NOT NULL,
        value,
        updated_at  REAL NOT NULL DEFAULT (unixepoch('subsec')),
        PRIMARY KEY (workflow_id, key)
    ) WITHOUT ROWID;

    -- one row per enqueued workflow; kept after it ends (rate limits count starts)
    CREATE TABLE queue_entries (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,   -- FIFO order
        workflow_id TEXT NOT NULL UNIQUE REFERENCES workflows (workflow_id),
        queue       TEXT NOT NULL,
        priority    INTEGER NOT NULL DEFAULT 0,          -- lower runs first
        not_before  REAL NOT NULL,                       -- delayed start (unix time)
        dedup_key   TEXT,
        started_at  REAL,                                -- NULL: still waiting
        done        INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX queue_waiting ON queue_entries (queue, priority, seq) WHERE started_at IS NULL;
    CREATE INDEX queue_started ON queue_entries (queue, started_at) WHERE started_at IS NOT NULL;
    CREATE UNIQUE INDEX queue_dedup ON queue_entries (queue, dedup_key)
        WHERE dedup_key IS NOT NULL AND done = 0;
    CREATE TRIGGER queue_entry_done AFTER UPDATE OF status ON workflows
        WHEN new.status != 'PENDING' AND old.status = 'PENDING'
    BEGIN
        UPDATE queue_entries SET done = 1 WHERE workflow_id = new.workflow_id AND done = 0;
    END;

    -- cron schedules: the last slot fired, so no slot fires twice
    CREATE TABLE schedules (
        name      TEXT PRIMARY KEY NOT NULL,
        cron      TEXT NOT NULL,
        workflow  TEXT NOT NULL,
        last_slot REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # v4: replay under concurrency. In an async workflow a step is identified
    # by its task's branch and its index there (``ident``; NULL: the root
    # task's call at this very position, as every older row). In an async
    # workflow a row's position is the order outcomes were delivered, so a
    # replay delivers them in the same order (see runtime/context.py).
    #
    # Also: when a step body started (introspection); a terminal status for
    # workflows that exceeded their recovery attempts, with the count and the
    # executor that last ran each workflow (the workflows table is rebuilt:
    # SQLite cannot change a CHECK in place); a total order of workflows
    # (``seq``); runtime schedule state; idempotency keys of client sends.
    """
    ALTER TABLE steps ADD COLUMN ident TEXT;
    ALTER TABLE steps ADD COLUMN started_at REAL;

    CREATE TABLE workflows_v4 (
        seq         INTEGER PRIMARY KEY,   -- creation order: a total order for listings
        workflow_id TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL,
        status      TEXT NOT NULL
                    CHECK (status IN ('PENDING', 'SUCCESS', 'ERROR', 'CANCELLED',
                                      'MAX_RECOVERY_ATTEMPTS_EXCEEDED')),
        inputs      NOT NULL,
        output,
        error,
        parent_id   TEXT,
        parked      TEXT,
        created_at  REAL NOT NULL DEFAULT (unixepoch('subsec')),
        updated_at  REAL NOT NULL DEFAULT (unixepoch('subsec')),
        deadline    REAL,
        recovery_attempts INTEGER NOT NULL DEFAULT 0,  -- opens that found it running and ran it again
        executor    TEXT                               -- the engine that last ran it (host:pid:id)
    );
    INSERT INTO workflows_v4 (workflow_id, name, status, inputs, output, error, parent_id, parked,
                              created_at, updated_at, deadline)
        SELECT workflow_id, name, status, inputs, output, error, parent_id, parked,
               created_at, updated_at, deadline
        FROM workflows ORDER BY created_at, rowid;
    DROP TABLE workflows;
    ALTER TABLE workflows_v4 RENAME TO workflows;
    CREATE INDEX workflows_status ON workflows (status, seq);
    CREATE INDEX workflows_parent ON workflows (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX workflows_name ON workflows (name, seq);
    CREATE INDEX workflows_created ON workflows (created_at);
    CREATE INDEX queue_entries_queue ON queue_entries (queue, workflow_id);   -- list_workflows(queue=)
    CREATE TRIGGER queue_entry_done AFTER UPDATE OF status ON workflows
        WHEN new.status != 'PENDING' AND old.status = 'PENDING'
    BEGIN
        UPDATE queue_entries SET done = 1 WHERE workflow_id = new.workflow_id AND done = 0;
    END;

    ALTER TABLE schedules ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE schedules ADD COLUMN tz TEXT;          -- NULL: UTC
    ALTER TABLE schedules ADD COLUMN missed TEXT NOT NULL DEFAULT 'latest';  -- the missed-slot policy

    -- idempotency keys of sends from outside a workflow: a retried send
    -- with the same key delivers nothing new
    CREATE TABLE send_keys (
        key        TEXT PRIMARY KEY NOT NULL,
        dest       TEXT NOT NULL,
        created_at REAL NOT NULL DEFAULT (unixepoch('subsec'))
    ) WITHOUT ROWID;
    """,
    # v5: several processes on one file. Every engine that opens the file is
    # an executor with a lease it keeps alive; a PENDING workflow is owned by
    # the executor in ``workflows.executor`` with a fencing ``epoch`` raised
    # at each change of owner; ``takeovers`` counts changes of owner, so a
    # writer re-checks what it owns only when it moved. ``notices`` carry
    # wake-ups across processes (a message, an event, a cancel, a queue
    # entry, a workflow waiting for an owner), read by every executor's watcher.
    """
    CREATE TABLE executors (
        executor_id TEXT PRIMARY KEY NOT NULL,
        host        TEXT NOT NULL,     -- hostname/boot id: pids are comparable only on one boot of one host
        pid         INTEGER NOT NULL,
        pid_started TEXT,              -- the process's start time (a reused pid is another process)
        app_version TEXT NOT NULL,
        started_at  REAL NOT NULL DEFAULT (unixepoch('subsec')),
        lease_until REAL NOT NULL,     -- unix time; renewed by its heartbeat
        stopped_at  REAL               -- set by a clean close
    ) WITHOUT ROWID;
    ALTER TABLE workflows ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workflows ADD COLUMN app_version TEXT;
    CREATE INDEX workflows_owner ON workflows (executor) WHERE status = 'PENDING';
    INSERT INTO engine_state (key, value) VALUES ('takeovers', 0);
    CREATE TABLE notices (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL,     -- msg, event, cancel, queue, start
        workflow_id TEXT,
        detail      TEXT,              -- the topic, event key or queue name
        created_at  REAL NOT NULL DEFAULT (unixepoch('subsec'))
    );
    CREATE TRIGGER workflow_owner_changed AFTER UPDATE OF executor ON workflows
        WHEN old.executor IS NOT NULL AND new.executor IS NOT old.executor
    BEGIN
        UPDATE engine_state SET value = value + 1 WHERE key = 'takeovers';
    END;
    CREATE TRIGGER queue_slot_freed AFTER UPDATE OF done ON queue_entries
        WHEN new.done = 1 AND old.done = 0
    BEGIN
        INSERT INTO notices (kind, workflow_id, detail) VALUES ('queue', new.workflow_id, new.queue);
    END;
    CREATE TRIGGER workflow_cancelled AFTER UPDATE OF status ON workflows
        WHEN new.status = 'CANCELLED' AND old.status = 'PENDING'
    BEGIN
        INSERT INTO notices (kind, workflow_id) VALUES ('cancel', new.workflow_id);
    END;
    """,
    # v6: the limits each queue was last declared with by an executor serving
    # it (``engine.queue(name, concurrency=, rate_limit=)``), for operators
    # (``durably queues``); the dispatchers keep using their own declaration.
    # And for retention: deleting a workflow deletes its send keys and
    # notices too, found by these indexes, not by a scan of either table.
    """
    CREATE TABLE queues (
        name        TEXT PRIMARY KEY NOT NULL,
        concurrency INTEGER,           -- NULL: no limit
        rate_starts INTEGER,           -- rate_limit=(rate_starts, rate_period); NULL: none
        rate_period REAL,
        declared_at REAL NOT NULL DEFAULT (unixepoch('subsec'))
    ) WITHOUT ROWID;
    CREATE INDEX send_keys_dest ON send_keys (dest);
    CREATE INDEX notices_workflow ON notices (workflow_id) WHERE workflow_id IS NOT NULL;
    """,
    # v7: the OpenTelemetry span a workflow's runs descend from and link to
    # (a W3C traceparent), written with its start when telemetry is on
    # (durably/telemetry.py): a run after a crash continues its trace.
    """
    ALTER TABLE workflows ADD COLUMN trace TEXT;
    """,
    # v8: the status CHECK as comparisons. SQLite evaluates ``IN`` over more
    # than two constants through an ephemeral B-tree built and freed at
    # every row it checks: every start and every end of a workflow paid
    # about 2 us in the journal's writer for it (half of those two
    # statements' cost). The rule is the same; SQLite cannot change a CHECK
    # in place, so the table is rebuilt as in v4 (its rows, their ``seq``,
    # its indexes and triggers).
    """
    CREATE TABLE workflows_v8 (
        seq         INTEGER PRIMARY KEY,   -- creation order: a total order for listings
        workflow_id TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL,
        status      TEXT NOT NULL
                    CHECK (status = 'PENDING' OR status = 'SUCCESS' OR status = 'ERROR'
                           OR status = 'CANCELLED' OR status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'),
        inputs      NOT NULL,
        output,
        error,
        parent_id   TEXT,
        parked      TEXT,
        created_at  REAL NOT NULL DEFAULT (unixepoch('subsec')),
        updated_at  REAL NOT NULL DEFAULT (unixepoch('subsec')),
        deadline    REAL,
        recovery_attempts INTEGER NOT NULL DEFAULT 0,  -- opens that found it running and ran it again
        executor    TEXT,                              -- the engine that last ran it (host:pid:id)
        epoch       INTEGER NOT NULL DEFAULT 0,        -- raised at each change of owner (fencing)
        app_version TEXT,
        trace       TEXT                               -- W3C traceparent its runs descend from
    );
    INSERT INTO workflows_v8 (seq, workflow_id, name, status, inputs, output, error, parent_id, parked,
                              created_at, updated_at, deadline, recovery_attempts, executor, epoch,
                              app_version, trace)
        SELECT seq, workflow_id, name, status, inputs, output, error, parent_id, parked,
               created_at, updated_at, deadline, recovery_attempts, executor, epoch, app_version, trace
        FROM workflows;
    DROP TABLE workflows;
    ALTER TABLE workflows_v8 RENAME TO workflows;
    CREATE INDEX workflows_status ON workflows (status, seq);
    CREATE INDEX workflows_parent ON workflows (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX workflows_name ON workflows (name, seq);
    CREATE INDEX workflows_created ON workflows (created_at);
    CREATE INDEX workflows_owner ON workflows (executor) WHERE status = 'PENDING';
    CREATE TRIGGER queue_entry_done AFTER UPDATE OF status ON workflows
        WHEN new.status != 'PENDING' AND old.status = 'PENDING'
    BEGIN
        UPDATE queue_entries SET done = 1 WHERE workflow_id = new.workflow_id AND done = 0;
    END;
    CREATE TRIGGER workflow_owner_changed AFTER UPDATE OF executor ON workflows
        WHEN old.executor IS NOT NULL AND new.executor IS NOT old.executor
    BEGIN
        UPDATE engine_state SET value = value + 1 WHERE key = 'takeovers';
    END;
    CREATE TRIGGER workflow_cancelled AFTER UPDATE OF status ON workflows
        WHEN new.status = 'CANCELLED' AND old.status = 'PENDING'
    BEGIN
        INSERT INTO notices (kind, workflow_id) VALUES ('cancel', new.workflow_id);
    END;
    """,
    # v9: the steps table keyed by a rowid, in the order rows are written,
    # with (workflow_id, position) a unique index, and the values last. In
    # the ``WITHOUT ROWID`` table of v1 every cell was an entire row, and
    # SQLite compares a seek key with a cell that spills onto overflow pages
    # by reading the whole cell: any read or write whose search passed a
    # step holding a 25 MB value read those 25 MB (and left them in the
    # reading thread's malloc arena). Now a search compares only the
    # index's small keys and a row's value is read only when it is asked
    # for. A step now writes the table's last page and the index (whose
    # cells are a third of a row) instead of one B-tree: the writer's cost
    # per step measured the same. Rows, and their order within each
    # workflow, are kept (older rows take their seq in key order).
    """
    CREATE TABLE steps_v9 (
        seq         INTEGER PRIMARY KEY,   -- write order
        workflow_id TEXT NOT NULL REFERENCES workflows (workflow_id),
        position    INTEGER NOT NULL,
        name        TEXT NOT NULL,
        ident       TEXT,
        started_at  REAL,
        recorded_at REAL NOT NULL DEFAULT (unixepoch('subsec')),
        error,
        output
    );
    INSERT INTO steps_v9 (workflow_id, position, name, ident, started_at, recorded_at, error, output)
        SELECT workflow_id, position, name, ident, started_at, recorded_at, error, output
        FROM steps ORDER BY workflow_id, position;
    DROP TABLE steps;
    ALTER TABLE steps_v9 RENAME TO steps;
    CREATE UNIQUE INDEX steps_key ON steps (workflow_id, position);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
