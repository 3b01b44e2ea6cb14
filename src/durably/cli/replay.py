"""``durably replay DB --app module:engine``: the Replayer, the pre-deploy
check (``durably.testing.replay``; docs/guides/testing.md, "The Replayer")."""

from __future__ import annotations

from typing import Any

import click

from .._status import STATUSES
from ..errors import DurablyError
from . import _common as C


@click.command()
@C.DB_ARGUMENT
@click.option(
    "--app",
    "app",
    required=True,
    help="the application's engine (or registry), as module:name (e.g. myapp.flows:engine)",
)
@click.option("--workflow", "workflow_ids", multiple=True, metavar="ID", help="only this workflow (repeatable)")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES), help="only this status (repeatable)")
@click.option("--limit", type=click.IntRange(0), default=0, help="at most this many, newest first (0: all)")
@C.json_option
def replay(
    db: str, app: str, workflow_ids: tuple[str, ...], statuses: tuple[str, ...], limit: int, as_json: bool
) -> int:
    """Replay recorded workflows against the current code, running no step
    and writing nothing; exit 1 if any would park (nondeterminism), else 0."""
    from ..testing import _imports
    from ..testing._replay import replay as run
    from ..testing._replay import why

    try:
        engine = _imports.import_object(app, "--app")
    except DurablyError as exc:
        C.refuse(C.describe(exc))
    try:
        report = run(
            C.with_timeout(db),
            engine,
            workflow_ids=workflow_ids or None,
            statuses=statuses or None,
            limit=limit or None,
        )
    except DurablyError as exc:  # not a durably database, no server, an unknown id, not an Engine
        C.refuse(C.describe(exc))
    if as_json:
        C.emit_json({"workflows": [_doc(r) for r in report.results], "failures": len(report.failures)})
    else:
        out = C.table("ID", "STATUS", "NAME", "REPLAY", "DETAIL")
        for r in report.results:
            out.add_row(*C.cells(r.workflow_id, r.status, r.name, r.outcome, why(r)))
        console = C.console()
        console.print(out)
        verdict = f"{len(report.failures)} of {len(report.results)} workflow(s) would park" if report.failures else None
        console.print(verdict or f"{len(report.results)} workflow(s) replayed: none would park", markup=False)
    return 1 if report.failures else 0


def _doc(r: Any) -> dict[str, Any]:
    return {
        "workflow_id": r.workflow_id,
        "name": r.name,
        "status": r.status,
        "outcome": r.outcome,
        "position": r.position,
        "recorded": r.recorded,
        "called": r.called,
        "detail": r.detail,
        "fails": r.fails,
    }
