"""The ``durably`` command line: the operator's tool (click, rich tables).

Every command takes the database first: an SQLite path or a
``postgresql://`` URL (``?schema=...``). Reads (``list``, ``show``,
``steps``, ``tail``, ``queues``, ``schedules``) open it read-only: nothing
written, migrated or recovered, no -wal/-shm left behind. Changes
(``cancel``, ``resume``, ``fork``, ``schedules pause|resume|trigger|
backfill``, ``gc``) go through a client-mode ``Engine``: journaled as any client's
call, fenced against the owning executor, and waking it. Both run while
engines use the database in other processes.

Conventions: bad input (an unknown workflow id or schedule, a bad flag or
value, a malformed URL, duration or time, a file that is not a durably
database, a PostgreSQL server that does not answer) prints one line on
stderr and exits 2, changing nothing; an operation that could not be done
(cancelling a workflow that already ended, resuming one that succeeded or
still runs, a database error mid-operation) exits 1; done is 0. Output
piped into a command that stops reading (``| head``) ends quietly; every
string read from the database is printed with its control characters
escaped (and never read as rich markup), so a stored id cannot drive the
operator's terminal. A PostgreSQL URL is never printed with its password,
and waits at most ``connect_timeout`` seconds for the server
(``CONNECT_TIMEOUT`` unless the URL says: an operator is waiting).

``--json`` (every read command, and the changes) prints one JSON document
on stdout. Field names are stable; times are unix seconds (floats) unless
named ``*_slot`` (ISO 8601 in the schedule's zone); values (``input``,
``output``, step outputs, event values, message payloads) are the stored
JSON, or ``{"pickle": "<base64>"}`` under the pickle codec; an ``error`` is
``{"type", "message"}`` or null.

* workflow: ``workflow_id, name, status, parent_id, parked, created_at,
  updated_at, deadline, queue, priority, dequeued_at, recovery_attempts,
  executor, input ({"args", "kwargs"}), output, error``
* step: ``position, name, output, error, started_at, recorded_at``
* ``list``: ``{"workflows": [workflow...]}``
* ``steps``: ``{"workflow_id", "steps": [step...]}``
* ``show``: ``{"workflow": workflow, "steps": [step...], "children":
  [workflow...], "events": {key: value}, "messages": [{"id", "topic",
  "payload", "created_at"}...]}``
* ``tail``: one object per line, ``{"event": "start"|"end", "at",
  "workflow": workflow}``
* ``queues``: ``{"queues": [{"queue", "enqueued", "running",
  "concurrency", "rate_limit": {"starts", "seconds"} | null,
  "declared_at"}...]}`` (limits as an executor serving it last declared;
  all null when none has since schema v6)
* ``schedules``: ``{"schedules": [{"name", "cron", "workflow", "tz",
  "missed", "paused", "last_slot", "next_slot"}...]}``
* ``cancel``/``resume``: ``{"workflow_id", "status"}`` (cancel adds
  ``"children"``); ``fork``: ``{"workflow_id", "forked_from", "from_step",
  "status"}``; ``schedules pause|resume|trigger|backfill``: ``{"action",
  "schedule": schedule}`` (trigger and backfill add ``"workflow_ids"``)
* ``gc``: ``{"workflows", "steps", "messages", "events", "queue_entries",
  "send_keys", "notices", "batches", "longest_batch", "pages_freed"}``
  (rows removed per kind; ``longest_batch`` in seconds)
* ``copy``: ``{"source", "dest", "seconds", "rows": {table: count}}``
* ``backup``: ``{"source", "path", "pages", "bytes", "seconds"}``

``replay DB --app module:engine`` replays recorded workflows against the
current code without running or writing anything (``durably.testing.replay``;
exit 1 if any would park); ``--json``: ``{"workflows": [{"workflow_id",
"name", "status", "outcome", "position", "recorded", "called", "detail",
"fails"}...], "failures"}``.

``ui`` serves the web view (``durably.ui``, extra ``durably[ui]``;
docs/guides/observability.md, "The web view"): read-only unless ``--allow-actions``.

Modules: ``workflows.py`` (list, show, steps, tail), ``manage.py`` (cancel,
resume, fork), ``queues.py`` (queues, schedules), ``maintenance.py``
(accept-wal-loss, demo), ``ops.py`` (gc, copy, backup), ``ui.py`` (ui).
"""

from __future__ import annotations

import logging
import os
import sys

import click

from ._common import CONNECT_TIMEOUT, Refused, describe, shown
from .maintenance import accept_wal_loss, demo
from .manage import cancel, fork, resume
from .ops import backup, copy, gc
from .queues import queues, schedules
from .replay import replay
from .ui import ui
from .workflows import list_, show, steps, tail

__all__ = ["CONNECT_TIMEOUT", "cli", "main", "shown"]

COMMANDS = (
    list_,
    show,
    steps,
    tail,
    cancel,
    resume,
    fork,
    queues,
    schedules,
    gc,
    backup,
    copy,
    ui,
    replay,
    accept_wal_loss,
    demo,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """durably: durable workflows on SQLite or PostgreSQL, from the shell.

    DB is an SQLite file or a postgresql:// URL (?schema=...). Exit codes:
    0 done, 1 the operation failed, 2 bad input.
    """


for _command in COMMANDS:
    cli.add_command(_command)


def _quiet_stdout() -> None:
    """The reader stopped (``| head``): end quietly, as cat and grep do
    (and let the interpreter's final flush go nowhere)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 failed, 2 bad input)."""
    # The CLI tells what went wrong in its one line: the engine's own log
    # records (a client's warnings) are not echoed by logging's last resort.
    logger = logging.getLogger("durably")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    try:
        result = cli.main(args=argv, prog_name="durably", standalone_mode=False)
        sys.stdout.flush()
    except Refused as exc:
        print(f"durably: {exc}", file=sys.stderr)
        return exc.code
    except click.UsageError as exc:  # a bad flag or value: one line, not click's usage block
        what = f" ({exc.ctx.command_path})" if exc.ctx is not None else ""
        print("durably: " + shown(" ".join(exc.format_message().split())) + what, file=sys.stderr)
        return 2
    except click.exceptions.Exit as exc:  # --help
        return int(exc.exit_code)
    except click.Abort:  # Ctrl-C while click was reading input
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Exception as exc:  # a database error mid-read (the server went away, ...)
        from ..errors import DurablyError

        if not isinstance(exc, DurablyError):
            raise
        print("durably: " + describe(exc), file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
