"""Named writes: the single-statement changes the runtime makes to durably's
tables, by name (record kind ``WRITE``: ``(name, params)``). The runtime
names the change; only the store holds the SQL, so a second backend
implements the same names (store/contract.py). Each applies atomically with
the rest of its journal batch; its result is the number of rows changed.
"""

from __future__ import annotations

WRITES: dict[str, str] = {
    # (error, workflow_id): a PENDING workflow ends CANCELLED (its queue slot frees,
    # a notice wakes its owner if that is another process: schema triggers)
    "cancel": "UPDATE workflows SET status = 'CANCELLED', error = ?, updated_at = unixepoch('subsec')"
    " WHERE workflow_id = ? AND status = 'PENDING'",
    # (executor, app_version, workflow_id): run it again from its journal, owned here
    "resume": "UPDATE workflows SET status = 'PENDING', parked = NULL, output = NULL, error = NULL,"
    " recovery_attempts = 0, executor = ?, epoch = epoch + 1, app_version = ?,"
    " updated_at = unixepoch('subsec') WHERE workflow_id = ? AND status != 'SUCCESS'",
    # (error, workflow_id): a poison workflow's terminal state
    "exceed": "UPDATE workflows SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', error = ?,"
    " updated_at = unixepoch('subsec') WHERE workflow_id = ? AND status = 'PENDING'",
    # (reason, workflow_id): replay found changed code; it stays PENDING
    "park": "UPDATE workflows SET parked = ?, updated_at = unixepoch('subsec')"
    " WHERE workflow_id = ? AND status = 'PENDING'",
    # (reason, workflow_id): nobody registered its function (first reason kept)
    "park_unregistered": "UPDATE workflows SET parked = ? WHERE workflow_id = ? AND status = 'PENDING'"
    " AND parked IS NULL",
    # (workflow_id, executor): give up a claimed workflow (its function is not registered here)
    "release": "UPDATE workflows SET executor = NULL WHERE workflow_id = ? AND executor = ?",
    # (): a no-op whose commit orders what was submitted before it
    "barrier": "SELECT 1",
    # schedules: (name, cron, workflow, last_slot, tz, missed)
    "schedule_upsert": "INSERT INTO schedules (name, cron, workflow, last_slot, tz, missed) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, workflow = excluded.workflow,"
    " tz = excluded.tz, missed = excluded.missed",
    # (slot, name, slot): progress only moves forward (two runners fire a slot once)
    "schedule_advance": "UPDATE schedules SET last_slot = ? WHERE name = ? AND last_slot < ?",
    "schedule_pause": "UPDATE schedules SET paused = 1 WHERE name = ?",
    # (now, name): resuming skips what fell while paused
    "schedule_resume": "UPDATE schedules SET paused = 0, last_slot = max(last_slot, ?) WHERE name = ? AND paused = 1",
    "schedule_delete": "DELETE FROM schedules WHERE name = ?",
}
