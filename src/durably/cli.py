"""The ``durably`` command line: the demo, and a first look at a database."""

from __future__ import annotations

import argparse
import sys

from . import demo
from .errors import DurablyError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="durably", description="durable workflows on SQLite")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run a batch of workflows, SIGKILL the worker, recover, report")
    p.add_argument("--db", default="durably-demo.db", help="database file (recreated)")
    p.add_argument("--orders", type=int, default=5000)
    p.add_argument("--kill-at", type=float, default=0.4, help="fraction of steps done when the worker is killed")
    p.add_argument("--worker", metavar="DB", help=argparse.SUPPRESS)
    p = sub.add_parser("list", help="list workflows in a database")
    p.add_argument("db")
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("steps", help="show the recorded steps of one workflow")
    p.add_argument("db")
    p.add_argument("workflow_id")
    p = sub.add_parser("accept-wal-loss", help="after WalMissingError: go on without the lost -wal file "
                       "(its committed transactions are gone; a damaged file is still refused)")
    p.add_argument("db")
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.worker:
            demo.worker(args.worker, args.orders)
            return 0
        return demo.main(args.db, args.orders, args.kill_at)
    if args.command == "accept-wal-loss":
        from .store import accept_wal_loss

        try:
            accept_wal_loss(args.db)
        except DurablyError as exc:
            print(f"durably: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        print(f"durably: {args.db}: the loss of its -wal file is accepted; it passed quick_check and opens "
              "again. Workflows resume from what the file holds (steps recorded only in the lost -wal run again)")
        return 0
    from .handle import StepInfo, WorkflowInfo
    from .store import Store

    store = Store(args.db)
    try:
        store.open_readonly()  # inspection never writes, and never recovers anything
    except DurablyError as exc:
        print(f"durably: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "list":
            for row in store.list_workflows(args.status, None, args.limit):
                info = WorkflowInfo.from_row(row)
                print(f"{info.workflow_id}\t{info.status}\t{info.name}\t{info.parked or ''}")
        else:
            for step in (StepInfo.from_row(r) for r in store.step_rows(args.workflow_id)):
                print(f"{step.position}\t{step.name}\t{step.output if step.error is None else 'ERROR ' + step.error}")
    finally:
        store.close(clean=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
