"""Named writes on PostgreSQL: the same names and effects as store/_writes.py."""

from __future__ import annotations

_NOW = "extract(epoch from clock_timestamp())"

WRITES: dict[str, str] = {
    "cancel": f"UPDATE workflows SET status = 'CANCELLED', error = %s, updated_at = {_NOW}"
    " WHERE workflow_id = %s AND status = 'PENDING'",
    "resume": "UPDATE workflows SET status = 'PENDING', parked = NULL, output = NULL, error = NULL,"
    " recovery_attempts = 0, executor = %s, epoch = epoch + 1, app_version = %s,"
    f" updated_at = {_NOW} WHERE workflow_id = %s AND status <> 'SUCCESS'",
    "exceed": f"UPDATE workflows SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', error = %s, updated_at = {_NOW}"
    " WHERE workflow_id = %s AND status = 'PENDING'",
    "park": f"UPDATE workflows SET parked = %s, updated_at = {_NOW} WHERE workflow_id = %s AND status = 'PENDING'",
    "park_unregistered": "UPDATE workflows SET parked = %s WHERE workflow_id = %s AND status = 'PENDING'"
    " AND parked IS NULL",
    "release": "UPDATE workflows SET executor = NULL WHERE workflow_id = %s AND executor = %s",
    "barrier": "SELECT 1",
    "schedule_upsert": "INSERT INTO schedules (name, cron, workflow, last_slot, tz, missed)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET cron = excluded.cron,"
    " workflow = excluded.workflow, tz = excluded.tz, missed = excluded.missed",
    "schedule_advance": "UPDATE schedules SET last_slot = %s WHERE name = %s AND last_slot < %s",
    "schedule_pause": "UPDATE schedules SET paused = 1 WHERE name = %s",
    "schedule_resume": "UPDATE schedules SET paused = 0, last_slot = greatest(last_slot, %s)"
    " WHERE name = %s AND paused = 1",
    "schedule_delete": "DELETE FROM schedules WHERE name = %s",
}

# Writes that change a workflow's owner (their batch takes the fence lock exclusive).
OWNER_CHANGING = frozenset({"resume", "release"})
