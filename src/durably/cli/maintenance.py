"""The file's own care and the first minute: ``accept-wal-loss`` (after a
``WalMissingError``) and ``demo``, as they were before the CLI grew.
(``gc``, ``backup`` and ``copy`` belong to a module of their own, ``ops.py``.)"""

from __future__ import annotations

import click

from .. import demo as _demo
from ..errors import DurablyError
from ..store import is_postgres
from . import _common as C


@click.command("accept-wal-loss")
@C.DB_ARGUMENT
def accept_wal_loss(db: str) -> int:
    """After WalMissingError: go on without the lost -wal file (its committed
    transactions are gone; a damaged file is still refused)."""
    from ..store import accept_wal_loss as accept

    if is_postgres(db):  # (not echoed: it may hold a password)
        C.refuse(
            "accept-wal-loss applies to an SQLite file; a PostgreSQL database has no -wal file "
            "of durably's to lose (the server recovers its own WAL)"
        )
    try:
        accept(db)
    except DurablyError as exc:
        C.refuse(C.describe(exc))
    click.echo(
        f"durably: {db}: the loss of its -wal file is accepted; it passed quick_check and opens "
        "again. Workflows resume from what the file holds (steps recorded only in the lost -wal run again)"
    )
    return 0


@click.command()
@click.option(
    "--db",
    default="durably-demo.db",
    show_default=True,
    help="database file (recreated if it is an earlier demo's; any other file is refused)",
)
@click.option("--force", is_flag=True, help="replace --db even if it is not an earlier demo's")
@click.option("--orders", type=click.IntRange(1), default=5000, show_default=True)
@click.option(
    "--kill-at", type=float, default=0.4, show_default=True, help="fraction of steps done when the worker is killed"
)
@click.option("--worker", metavar="DB", hidden=True)
def demo(db: str, force: bool, orders: int, kill_at: float, worker: str | None) -> int:
    """Run a batch of workflows, SIGKILL the worker, recover, report."""
    if worker:
        _demo.worker(worker, orders)
        return 0
    return _demo.main(db, orders, kill_at, force=force)
