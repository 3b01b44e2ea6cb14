"""Transaction steps cannot damage the engine: every durably table, index
and trigger is read-only to user SQL (derived from the schema), and nothing
may be attached to or named like them. Each hostile statement fails its
step with a typed error recorded as the step's outcome; the engine's tables
and behaviour are unchanged afterwards."""

from __future__ import annotations

import pytest

import durably
from durably import errors, testing

HOSTILE = [
    "DELETE FROM messages",
    "DROP TABLE messages",
    "DELETE FROM queue_entries",
    "UPDATE schedules SET last_slot = 0",
    "DROP TABLE events",
    "UPDATE engine_state SET value = 0",
    "INSERT INTO send_keys (key, dest) VALUES ('k', 'd')",
    "DROP INDEX workflows_status",
    "DROP TRIGGER queue_entry_done",
    "CREATE TRIGGER evil AFTER INSERT ON workflows BEGIN UPDATE workflows SET status = 'PENDING'; END",
    "CREATE TEMP TRIGGER evil AFTER UPDATE ON steps BEGIN SELECT 1; END",
    "CREATE INDEX evil ON steps (name)",
    "CREATE TEMP TABLE workflows (x)",
    "CREATE TEMP VIEW steps AS SELECT 1",
    "CREATE VIEW messages_dest AS SELECT 1",
    "ALTER TABLE workflows ADD COLUMN x",
    "ALTER TABLE steps RENAME TO old_steps",
    "UPDATE workflows SET status = 'SUCCESS'",
    "INSERT INTO steps (workflow_id, position, name) VALUES ('x', 0, 'y')",
    "PRAGMA foreign_keys = OFF",
    "ATTACH ':memory:' AS other",
    "COMMIT",
    "SAVEPOINT s",
]


def _schema(engine: durably.Engine) -> list[tuple]:
    return testing.query(engine, "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name")


@pytest.mark.parametrize("sql", HOSTILE)
def test_a_transaction_step_cannot_change_durablys_own_schema_or_tables(make_engine, sql: str) -> None:
    engine = make_engine()

    @engine.transaction(name="hostile")
    def hostile(db: durably.Tx) -> None:
        db.execute(sql)

    @engine.transaction(name="mine")
    def mine(db: durably.Tx) -> int:
        db.execute("CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, v)")
        db.execute("CREATE INDEX IF NOT EXISTS sales_v ON sales (v)")  # on its own tables: allowed
        db.execute("INSERT INTO sales (v) VALUES (1)")
        return db.query_one("SELECT count(*) FROM workflows")[0]  # reading durably's tables: allowed

    @engine.workflow(name="attack")
    def attack() -> str:
        try:
            hostile()
        except errors.UsageError as exc:
            return f"refused: {exc}"
        return "allowed"

    @engine.workflow(name="own")
    def own() -> int:
        return mine()

    @engine.workflow(name="inbox")
    def inbox() -> str:
        return engine.recv("t", timeout=30)

    with engine:
        before = _schema(engine)
        waiting = engine.start(inbox)
        assert engine.run(attack).startswith("refused")
        assert _schema(engine) == before
        engine.send(waiting.workflow_id, "still works", topic="t")
        assert waiting.result(timeout=10) == "still works"
        assert engine.run(own) >= 1
    with make_engine() as again:  # and the file opens cleanly afterwards
        assert again.list_workflows()
