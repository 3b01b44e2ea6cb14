"""The Replayer: recorded histories replayed against the current code, with
nothing run and nothing written (``durably.testing.replay``, ``durably replay``).

Each workflow's code runs in a replay context (a :class:`WorkflowContext`
of the engine's own runtime) over the journal read from the database. Every
durable call checks its recorded row with the engine's own comparison
(``WorkflowContext.replayed``: the same names, the same aliases, the same
order), so the Replayer parks exactly where a real run would. Where a real
run would go on live (a call the journal does not hold, a wait not over),
the replay of that workflow stops instead: no step body, transaction step
or wait ever runs, and nothing is submitted to any writer.

The database is opened read-only (the store's ``open_readonly``: SQLite
without the write lock, no -wal/-shm made; PostgreSQL with every session
``default_transaction_read_only``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from .. import errors
from .._status import TERMINAL
from ..clock import SystemClock
from ..runtime.context import WorkflowContext, current, settle_for
from ..runtime.counters import Counters
from ..runtime.tasks import GuardedTask
from ..store import is_postgres, make_store

if TYPE_CHECKING:
    from ..engine import Engine
    from ..registry import Registry
    from ..runtime.runner import Runner
    from ..runtime.workflows import WorkflowSpec
    from ..store.contract import StoreContract, WorkflowView

# What a workflow's replay ended with (``ReplayResult.outcome``).
REPLAYED = "replayed"  # its whole history replayed (the code may go on live after it)
PARKED = "parked"  # the code called another step where the journal recorded one: a real run parks it
UNREGISTERED = "unregistered"  # no workflow of the current code has its name (or an alias of it)
STOPPED = "stopped"  # a call the Replayer cannot follow without writing (a child workflow's start)


class _ReachedLive(BaseException):
    """The replay reached a call its journal does not hold, or a wait not
    over: a real run would go on live from here. Not an Exception, so the
    workflow's own ``except Exception`` cannot swallow it."""


class _Recorded(dict[Any, tuple[Any, ...]]):
    """The journal's rows by key; never empty to the runtime's eyes, so every
    call (the async hot path tests ``if ctx.recorded``) asks :meth:`replayed`."""

    def __bool__(self) -> bool:
        return True


class _ReplayContext(WorkflowContext):
    """A workflow context that replays and stops where a run would go live."""

    __slots__ = ()

    def load(self, rows: list[tuple[Any, ...]]) -> None:
        super().load(rows)
        self.recorded = _Recorded(self.recorded)
        if not self.is_async:
            # A sync step at or past replay_len takes the live hot path (its
            # body first): keep every call on the path that asks replayed().
            self.replay_len = sys.maxsize

    def replayed(self, key: Any, name: str) -> tuple[Any, Any] | None:
        recorded = super().replayed(key, name)  # NonDeterminismError (parked) when the names differ
        if recorded is None:
            raise _ReachedLive(key, name)
        return recorded

    @property  # (the base's slot, watched: a wait would begin)
    def waiter(self) -> Any:
        return None

    @waiter.setter
    def waiter(self, value: Any) -> None:
        if value is not None:
            raise _ReachedLive("wait")


class _Journal:
    """The journal a replayed workflow is handed: it never writes."""

    running = True
    failure = None

    def submit(self, record: Any) -> Any:
        raise _ReachedLive("submit")

    async def submit_async(self, record: Any) -> Any:
        raise _ReachedLive("submit")


class _Runner:
    """What a replay context reads of its runner: the application engine's
    store (its toolkit checks a durable call is its own), codec, clock and
    accepted aliases; a journal that never writes; no telemetry. Anything
    else is read from the application engine's runner (a declared call's
    table of what it is bound to there), which is never opened: whatever
    would start, run or write through it raises NotOpenError first."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self.store = runner.store
        self.codec = runner.codec
        self.clock = runner.clock
        self.accepted = runner.accepted
        self.journal = _Journal()
        self.telemetry = None
        self.closing = False
        self.loop = None
        self.counters = Counters()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


@dataclass(frozen=True)
class ReplayResult:
    """One workflow's replay. ``outcome``: ``"replayed"``, ``"parked"``,
    ``"unregistered"`` or ``"stopped"``; for a park, ``position`` with the
    step name ``recorded`` there and the one the current code ``called``
    (None: the code never made the recorded call); ``detail`` says more."""

    workflow_id: str
    name: str
    status: str
    outcome: str
    position: Any = None
    recorded: str | None = None
    called: str | None = None
    detail: str = ""

    @property
    def fails(self) -> bool:
        """Would break this workflow: it parks, or it is unfinished and no
        workflow of the current code takes it."""
        return self.outcome == PARKED or (self.outcome == UNREGISTERED and self.status not in TERMINAL)


@dataclass
class ReplayReport:
    """Every workflow replayed; ``failures`` those that would park (or that
    nothing registered would run); ``ok`` when there is none."""

    results: list[ReplayResult] = field(default_factory=list[ReplayResult])

    @property
    def failures(self) -> list[ReplayResult]:
        return [r for r in self.results if r.fails]

    @property
    def ok(self) -> bool:
        return not self.failures

    def assert_ok(self) -> None:
        """AssertionError naming each workflow that would park."""
        if self.failures:
            raise AssertionError(
                "workflows that would park under this code:\n" + "\n".join(map(describe, self.failures))
            )


def why(result: ReplayResult) -> str:
    """Where and why it would park (or what its replay did)."""
    if result.outcome == PARKED:
        called = "nothing" if result.called is None else repr(result.called)
        return f"at step {result.position}: recorded {result.recorded!r}, the code calls {called}"
    return result.detail


def describe(result: ReplayResult) -> str:
    """One line: the workflow, and where and why it would park."""
    head = f"{result.workflow_id} ({result.name}, {result.status}): {result.outcome}"
    reason = why(result)
    return f"{head} {reason}" if result.outcome == PARKED else f"{head}{': ' + reason if reason else ''}"


def read_only_url(url: str) -> str:
    """A PostgreSQL URL whose sessions are all read-only transactions (the
    server refuses any write); a file path is returned as it is."""
    if not is_postgres(url):
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([v for k, v in query if k == "options"] + ["-cdefault_transaction_read_only=on"])
    query = [(k, v) for k, v in query if k != "options"] + [("options", options)]
    return parts._replace(query=urlencode(query, quote_via=quote)).geturl()  # libpq reads %20, not +


def replay(
    db: str,
    engine: Engine | Registry,
    *,
    workflow_ids: Iterable[str] | None = None,
    statuses: Iterable[str] | None = None,
    limit: int | None = None,
) -> ReplayReport:
    """Replay the histories recorded in ``db`` (an SQLite file, a copy of a
    production database, or a ``postgresql://`` URL) against the workflows
    registered with ``engine`` (the application's engine, not opened: only
    its registrations are used; or a ``durably.Registry``), without running any step body or writing
    anything. The pre-deploy check: ``report.ok`` is False, and
    ``report.failures`` name them, when the current code would park a
    recorded workflow (a step renamed, removed, added or moved before a
    recorded one).

    ``workflow_ids``: only these; ``statuses``: only workflows in these
    statuses (default: all); ``limit``: at most this many, newest first.

    Example::

        report = durably.testing.replay("prod-copy.db", myapp.engine)
        report.assert_ok()
    """
    engine = _engine_of(engine)
    store = make_store(read_only_url(db))
    store.open_readonly()
    runner = _runner_of(engine)
    try:
        rows = _select(store, workflow_ids, statuses, limit)
        return ReplayReport([_replay_one(store, runner, row) for row in rows])
    finally:
        store.close(clean=False)
        if not engine.is_open and isinstance(runner.clock, SystemClock):
            # A replayed sleep that was not over armed a timer on the clock
            # before the replay stopped at its wait: drop it (and the
            # clock's thread) unless an open engine uses that clock.
            runner.clock.close()


def _engine_of(app: Any) -> Engine:
    """The engine whose registrations are replayed: ``app`` itself, or, for
    a ``durably.Registry``, an engine bound to it (never opened)."""
    import durably

    if isinstance(app, durably.Registry):
        return durably.Engine(":memory:", registry=app)
    if not isinstance(app, durably.Engine):
        raise errors.UsageError(f"the application must be a durably.Engine (or a durably.Registry), not {app!r}")
    return app


def _runner_of(engine: Engine) -> Runner:
    # The one read of the application engine's parts: its registry and
    # aliases (runner.workflows, runner.accepted), its codec and store.
    runner: Runner = engine._runner
    return runner


def _select(
    store: StoreContract, ids: Iterable[str] | None, statuses: Iterable[str] | None, limit: int | None
) -> list[WorkflowView]:
    if ids is not None:
        found = [store.get_workflow(wid, user_view=True) for wid in ids]
        missing = [wid for wid, row in zip(ids, found, strict=True) if row is None]
        if missing:
            raise errors.UsageError(f"no workflow with id {missing[0]!r} in {store.path}")
        return cast("list[WorkflowView]", [row for row in found if row is not None])  # (user_view rows)
    wanted = list(statuses) if statuses is not None else [None]
    rows: list[WorkflowView] = []
    for status in wanted:
        rows.extend(store.list_workflows(status, None, limit))
    return rows if limit is None else rows[:limit]


def _replay_one(store: StoreContract, runner: Runner, row: WorkflowView) -> ReplayResult:
    wid, name, status = row.workflow_id, row.name, row.status
    spec = runner.workflows.get(name)
    if spec is None:
        return ReplayResult(wid, name, status, UNREGISTERED, detail="no workflow of this code has this name")
    ctx = _ReplayContext(cast("Runner", _Runner(runner)), wid, spec.name, {}, spec.is_async)  # what it reads of one
    ctx.load(store.load_steps(wid))
    try:
        args, kwargs = ctx.codec.decode_inputs(row.inputs, spec.signature, spec.hints, spec.plan)
    except errors.DurablyError as exc:
        return ReplayResult(wid, name, status, STOPPED, detail=f"its inputs do not decode: {exc}")
    ended = _run(ctx, spec, args, kwargs)
    parked = ctx.parked
    if parked is not None:
        return ReplayResult(
            wid,
            name,
            status,
            PARKED,
            getattr(parked, "position", None),
            getattr(parked, "recorded", None),
            getattr(parked, "called", None),
            str(parked),
        )
    if isinstance(ended, errors.NotOpenError):  # a child's start: the Replayer writes nothing to follow it
        return ReplayResult(wid, name, status, STOPPED, detail=f"at a call it cannot follow: {ended}")
    return ReplayResult(wid, name, status, REPLAYED, detail=_how(ended))


def _how(ended: BaseException | None) -> str:
    if ended is None:
        return "returned"
    if isinstance(ended, _ReachedLive):
        return "its history ends here; a run would go on live"
    return f"raised {type(ended).__name__}"


def _run(ctx: _ReplayContext, spec: WorkflowSpec, args: Any, kwargs: Any) -> BaseException | None:
    """Run the workflow's code in ``ctx``: None if it returned, else what it raised."""
    if spec.is_async:
        return asyncio.run(_guarded(_run_async(ctx, spec, args, kwargs)))
    token = current.set(ctx)
    try:
        spec.fn(*args, **kwargs)
    except BaseException as exc:  # the replay's end, a park, or the workflow's own error
        return exc
    finally:
        current.reset(token)
    return None


async def _guarded(coro: Any) -> BaseException | None:
    """In a task of the kind the engine runs an async workflow in."""
    result: BaseException | None = await GuardedTask(coro)
    return result


async def _run_async(ctx: _ReplayContext, spec: WorkflowSpec, args: Any, kwargs: Any) -> BaseException | None:
    current.set(ctx)  # (this task's own context copy)
    ctx.loop = asyncio.get_running_loop()
    ctx.settle = settle_for(ctx.loop)
    ctx.enter_root()
    try:
        await spec.fn(*args, **kwargs)
    except BaseException as exc:
        return exc
    return None
