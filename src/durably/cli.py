"""The ``durably`` command line: the demo, and a first look at a database.

Conventions: bad input (an unknown workflow id, a bad ``--status``, a file
that is not a durably database, a PostgreSQL URL that does not parse or
whose server does not answer) prints one line on stderr and exits 2;
output piped into a command that stops reading (``| head``) ends quietly;
every string read from the database is printed with its control
characters escaped, so a stored id cannot drive the operator's terminal.
A PostgreSQL URL is never printed with its password, and waits at most
``connect_timeout`` seconds for the server (``CONNECT_TIMEOUT`` unless the
URL says: an operator is waiting).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import demo
from ._status import STATUSES
from .errors import DurablyError
from .store import StoreContract, is_postgres

CONNECT_TIMEOUT = 5  # seconds the CLI waits for a PostgreSQL server, unless the URL sets connect_timeout


def shown(value: Any) -> str:
    """``value`` as text for a terminal: control characters (C0, DEL, C1)
    and lone surrogates escaped as ``\\xNN``/``\\uNNNN``."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii") if ord(ch) < 0x10000 else ch)
    return "".join(out)


def _fail(what: Any) -> int:
    """One line on stderr (a server's multi-line reason joined), exit 2."""
    text = f"{type(what).__name__}: {what}" if isinstance(what, BaseException) else str(what)
    print("durably: " + shown(" ".join(text.split())), file=sys.stderr)
    return 2


def _where(db: str) -> str:
    """The database as the operator gave it, without a URL's password."""
    if not is_postgres(db):
        return db
    from .store.pg._settings import redact  # psycopg is there: the store was made

    return redact(db)


def _with_timeout(url: str) -> str:
    """``url`` with the CLI's connect_timeout if it sets none (and no
    PGCONNECT_TIMEOUT does); a URL that does not parse is left to the store
    to refuse."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "connect_timeout" in dict(parse_qsl(parts.query)) or "PGCONNECT_TIMEOUT" in os.environ:
        return url
    query = f"{parts.query}&" if parts.query else ""
    return parts._replace(query=f"{query}connect_timeout={CONNECT_TIMEOUT}").geturl()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durably", description="durable workflows on SQLite")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run a batch of workflows, SIGKILL the worker, recover, report")
    p.add_argument(
        "--db",
        default="durably-demo.db",
        help="database file (recreated if it is an earlier demo's; any other file is refused)",
    )
    p.add_argument("--force", action="store_true", help="replace --db even if it is not an earlier demo's")
    p.add_argument("--orders", type=int, default=5000)
    p.add_argument("--kill-at", type=float, default=0.4, help="fraction of steps done when the worker is killed")
    p.add_argument("--worker", metavar="DB", help=argparse.SUPPRESS)
    p = sub.add_parser("list", help="list workflows in a database")
    p.add_argument("db")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("steps", help="show the recorded steps of one workflow")
    p.add_argument("db")
    p.add_argument("workflow_id")
    p = sub.add_parser(
        "accept-wal-loss",
        help="after WalMissingError: go on without the lost -wal file "
        "(its committed transactions are gone; a damaged file is still refused)",
    )
    p.add_argument("db")
    p = sub.add_parser("backup", help="write a consistent copy of DB to the new file DEST while engines run")
    p.add_argument("db", help="an SQLite file, or a postgresql:// URL (written as an SQLite copy)")
    p.add_argument("dest", help="a new file (it must not exist; its folder must)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        if args.worker:
            demo.worker(args.worker, args.orders)
            return 0
        return demo.main(args.db, args.orders, args.kill_at, force=args.force)
    if args.command == "accept-wal-loss":
        return _accept_wal_loss(args.db)
    if args.command == "backup":
        return _backup(args.db, args.dest)
    return _inspect(args)


def _backup(db: str, dest: str) -> int:
    """Exit 0 done, 2 bad input (nothing written), 1 the backup failed."""
    from .errors import CantOpenError, UsageError
    from .operations.backup import backup

    try:
        report = backup(db, dest)
    except (UsageError, CantOpenError) as exc:
        return _fail(exc)
    except DurablyError as exc:
        _fail(exc)
        return 1
    print(f"durably: {_where(db)} backed up to {report.path}: {report.bytes} bytes in {report.seconds:.2f} s")
    return 0


def _accept_wal_loss(db: str) -> int:
    from .store import accept_wal_loss

    if is_postgres(db):  # (not echoed: it may hold a password)
        return _fail(
            "accept-wal-loss applies to an SQLite file; a PostgreSQL database has no -wal file "
            "of durably's to lose (the server recovers its own WAL)"
        )
    try:
        accept_wal_loss(db)
    except DurablyError as exc:
        return _fail(exc)
    print(
        f"durably: {db}: the loss of its -wal file is accepted; it passed quick_check and opens "
        "again. Workflows resume from what the file holds (steps recorded only in the lost -wal run again)"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    """``list`` and ``steps``: read the database, never write it."""
    from .store import make_store

    if args.command == "list" and not 0 <= args.limit < 2**63:
        return _fail(f"--limit must be from 0 to 2**63 - 1, not {args.limit}")
    try:
        # a file, or a postgresql:// URL (?schema=...)
        store = make_store(_with_timeout(args.db) if is_postgres(args.db) else args.db)
        store.open_readonly()  # inspection never writes, and never recovers anything
    except DurablyError as exc:
        return _fail(exc)
    try:
        if args.command == "list":
            _print_workflows(store, args.status, args.limit)
        elif not _print_steps(store, args.workflow_id):
            return _fail(f"no workflow with id {shown(args.workflow_id)!r} in {_where(args.db)}")
        sys.stdout.flush()
    except DurablyError as exc:  # the server went away mid-read, ...
        return _fail(exc)
    except BrokenPipeError:
        # The reader stopped (``| head``): end quietly, as cat and grep do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        store.close(clean=False)
    return 0


def _print_workflows(store: StoreContract, status: str | None, limit: int) -> None:
    from .handle import WorkflowInfo

    for row in store.list_workflows(status, None, limit):
        info = WorkflowInfo.from_row(row)
        print("\t".join(shown(v) for v in (info.workflow_id, info.status, info.name, info.parked)))


def _print_steps(store: StoreContract, workflow_id: str) -> bool:
    """Print the workflow's steps; False when there is no such workflow."""
    from .handle import StepInfo

    if store.get_workflow(workflow_id) is None:
        return False
    for step in (StepInfo.from_row(r) for r in store.step_rows(workflow_id)):
        outcome = step.output if step.error is None else "ERROR " + str(step.error)
        print("\t".join(shown(v) for v in (step.position, step.name, outcome)))
    return True


if __name__ == "__main__":
    sys.exit(main())
