"""The database as a whole: ``gc`` (delete old finished workflows), ``copy``
(between SQLite and PostgreSQL) and ``backup``. Each prints one line (or, with ``--json``, one
document) of what it did; bad input (a destination that is not empty, a
source in use, a missing file, a URL that does not parse) exits 2, a failure
while the operation ran exits 1, with nothing left half done."""

from __future__ import annotations

import dataclasses

import click

from ..errors import CantOpenError, DatabaseUnavailableError, DurablyError, SchemaVersionError
from . import _common as C

# A source that is missing, unreachable or not a durably database is the operator's input.
_INPUT_ERRORS = (CantOpenError, DatabaseUnavailableError, SchemaVersionError)


def _code(exc: DurablyError) -> int:
    return C.BAD_INPUT if isinstance(exc, _INPUT_ERRORS) else C.code_of(exc)


@click.command()
@click.argument("source")
@click.argument("dest")
@C.json_option
def copy(source: str, dest: str, as_json: bool) -> int:
    """Copy a whole database to a new SQLite file or an empty PostgreSQL
    schema (SQLite <-> PostgreSQL; stop the engines on SOURCE first, or copy
    a `durably backup` of it). SOURCE, DEST: a file or a postgresql:// URL
    (?schema=NAME)."""
    from ..operations.copy import copy as copy_database

    try:
        report = copy_database(C.with_timeout(source), C.with_timeout(dest))
    except DurablyError as exc:
        C.refuse(C.describe(exc), _code(exc))
    if as_json:
        C.emit_json(
            {"source": C.where(source), "dest": C.where(dest), "seconds": report.seconds, "rows": dict(report.rows)}
        )
        return 0
    rows = ", ".join(f"{n} {table}" for table, n in report.rows.items() if n)
    click.echo(
        f"durably: copied {C.shown(C.where(source))} to {C.shown(C.where(dest))} in {report.seconds:.1f} s: {rows or 'nothing'}"
    )
    return 0


_TERMINAL = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


@click.command()
@C.DB_ARGUMENT
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 7d, 12h, 30m, 0s")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(_TERMINAL),
    help="only workflows that ended so (repeatable; default: every finished status)",
)
@C.json_option
def gc(db: str, older_than: str, statuses: tuple[str, ...], as_json: bool) -> int:
    """Delete workflows that finished longer ago than --older-than, with
    everything that belongs to them (never a pending, enqueued or parked
    one, nor a child whose parent is still there). Safe while engines run:
    it goes through a client engine, in small batches."""
    cutoff = C.seconds(older_than, "--older-than")
    with C.client(db) as engine:
        try:
            report = engine.gc(older_than=cutoff, statuses=list(statuses) or None)
        except DurablyError as exc:
            C.refuse(C.describe(exc), C.code_of(exc))
    if as_json:
        C.emit_json(dataclasses.asdict(report))
        return 0
    click.echo(
        f"durably: gc removed {report.workflows} workflows ({report.steps} steps, {report.messages} messages, "
        f"{report.events} events) in {report.batches} batches; longest {report.longest_batch * 1000:.1f} ms"
    )
    return 0


@click.command()
@C.DB_ARGUMENT
@click.argument("dest")
@C.json_option
def backup(db: str, dest: str, as_json: bool) -> int:
    """Write a consistent copy of DB to the new file DEST while engines run
    (an SQLite file: SQLite's online backup; a postgresql:// URL: an SQLite
    copy of one snapshot). An engine opened on DEST resumes its pending
    workflows: restore it in place of DB, never run it beside DB."""
    from ..operations.backup import backup as back_up

    try:
        report = back_up(C.with_timeout(db), dest)
    except DurablyError as exc:
        C.refuse(C.describe(exc), _code(exc))
    if as_json:
        C.emit_json(
            {
                "source": C.where(db),
                "path": report.path,
                "pages": report.pages,
                "bytes": report.bytes,
                "seconds": report.seconds,
            }
        )
        return 0
    click.echo(
        f"durably: {C.shown(C.where(db))} backed up to {C.shown(report.path)}: "
        f"{report.bytes} bytes in {report.seconds:.2f} s"
    )
    return 0
