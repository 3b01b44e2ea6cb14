"""Starting workflows: ``Engine.start``, ``start_async``, ``run`` and a sync
workflow called directly (run inline, in the calling thread).

A start is vetted (the engine open, a registered workflow, its inputs
encoded, its deadline), then its START record is journaled: at a new
position of the parent for a child (a replay finds the child's id there
and starts nothing), else under the given id or a new one. The record's
result says whether the id existed (the start is idempotent); a new
workflow is launched on the runner, its deadline armed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import _crash, errors
from .. import _records as R
from .._ids import new_id
from .._names import check_name, check_workflow_id
from .._signatures import as_checked, as_checked_async, as_checked_run
from ..handle import WorkflowHandle
from ..journal import Record
from .context import workflow_context
from .toolkit import seconds_arg
from .workflows import WorkflowSpec, run_sync

if TYPE_CHECKING:
    from ..clock import Clock
    from ..codec import Codec
    from ..store.contract import StoreContract
    from .deadlines import Deadlines
    from .identity import Identity
    from .runner import Runner
    from .toolkit import Toolkit


def _by_name(*args: Any, **kwargs: Any) -> Any:
    """The stand-in function of a workflow a client starts by name."""
    raise errors.UsageError("a client engine does not run workflows")


class Starter:
    """Vets and journals starts, and launches what they create (a part of
    ``Engine``). ``workflows`` is the engine's registry (shared); records
    go to the runner's journal (the current open's); ``kit`` tells a
    workflow of another engine apart; ``check_open`` is the engine's."""

    __slots__ = ("identity", "store", "codec", "clock", "workflows", "runner", "deadlines", "kit", "check_open")

    def __init__(
        self,
        identity: Identity,
        store: StoreContract,
        codec: Codec,
        clock: Clock,
        workflows: dict[str, WorkflowSpec],
        runner: Runner,
        deadlines: Deadlines,
        kit: Toolkit,
        check_open: Callable[[], None],
    ) -> None:
        self.identity = identity
        self.store = store
        self.codec = codec
        self.clock = clock
        self.workflows = workflows
        self.runner = runner
        self.deadlines = deadlines
        self.kit = kit
        self.check_open = check_open

    # -- the public calls -------------------------------------------------------------

    def start(
        self, workflow: Any, *args: Any, workflow_id: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Start a workflow once its start record is durable; return its handle.

        ``workflow_id`` is an idempotency key: if it exists, the existing
        workflow's handle is returned and nothing new runs (a different
        workflow function under that id raises WorkflowConflictError; one
        recorded under an alias of this workflow is this workflow).
        ``timeout`` (seconds) sets a durable deadline: when it passes, even
        across restarts, the workflow and its children are cancelled.
        Inside a workflow this starts a child with id ``<parent>/<position>``.
        """
        spec, wid, rec = self.prepare(workflow, args, kwargs, workflow_id, timeout)
        if rec is not None:
            if _crash.ARMED:
                _crash.hit("workflow.before_start_record")
            existing = self.runner.journal.submit(rec)
            if _crash.ARMED:
                _crash.hit("workflow.after_start_record")
            self.started(spec, wid, rec, existing, loop=None)
        return WorkflowHandle.of(self.runner, wid)

    async def start_async(
        self, workflow: Any, *args: Any, workflow_id: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """``Engine.start_async``."""
        ctx = workflow_context()
        key = ctx.peek_key() if ctx is not None and ctx.is_async else None
        spec, wid, rec = self.prepare(workflow, args, kwargs, workflow_id, timeout)
        if rec is not None:
            if _crash.ARMED:
                _crash.hit("workflow.before_start_record")
            loop = asyncio.get_running_loop()
            existing = await self.runner.journal.submit_async(rec, loop)
            if _crash.ARMED:
                _crash.hit("workflow.after_start_record")
            self.started(spec, wid, rec, existing, loop=loop)
        if ctx is not None and key is not None:
            if not ctx.deliver_now():
                await ctx.turn(key)
        return WorkflowHandle.of(self.runner, wid)

    def start_many(
        self,
        workflow: Any,
        args: Iterable[tuple[Any, ...]],
        workflow_ids: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> list[WorkflowHandle[Any]]:
        """Start many runs of one workflow at once; return their handles, in order.

        ``args`` holds each run's positional arguments as a tuple (keyword
        arguments are not taken: pass them positionally), e.g.
        ``engine.start_many(send_mail, [(user,) for user in users])``. All
        the start records go to the journal as one record and commit in one
        transaction (one fsync), and the workflows are launched once it is
        durable: far cheaper per workflow than ``start`` in a loop.
        ``workflow_ids`` (optional, one per run) are idempotency keys as in
        ``start``: an id that exists (or comes twice) gets the existing
        workflow's handle and nothing new runs. An id that belongs to another
        workflow function raises WorkflowConflictError once the others are
        started (start_many again with the same ids returns their handles).
        ``timeout`` is each workflow's durable deadline, as in ``start``.
        Inside a workflow the runs are started one by one, as children (each
        journaled at its own position).
        """
        many = self._many(workflow, args, workflow_ids, timeout)
        if isinstance(many, list):
            return [self.start(workflow, *a, workflow_id=w, timeout=timeout) for a, w in many]
        spec, rec = many
        self.runner.journal.submit(rec)
        return self._started_many(spec, rec, loop=None)

    async def start_many_async(
        self,
        workflow: Any,
        args: Iterable[tuple[Any, ...]],
        workflow_ids: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> list[WorkflowHandle[Any]]:
        """``start_many`` for asyncio code. Async workflows run on the calling loop."""
        many = self._many(workflow, args, workflow_ids, timeout)
        if isinstance(many, list):
            return [await self.start_async(workflow, *a, workflow_id=w, timeout=timeout) for a, w in many]
        spec, rec = many
        await self.runner.journal.submit_async(rec)
        return self._started_many(spec, rec, loop=asyncio.get_running_loop())

    def _many(
        self, workflow: Any, args: Iterable[tuple[Any, ...]], workflow_ids: Iterable[str] | None, timeout: float | None
    ) -> tuple[WorkflowSpec, Record] | list[tuple[tuple[Any, ...], str | None]]:
        """Vet a start_many: (spec, the one record of its starts), or, inside
        a workflow, the (args, id) of each start to make one by one."""
        runs = [tuple(a) for a in args]
        ids = [None] * len(runs) if workflow_ids is None else list(workflow_ids)
        if len(ids) != len(runs):
            raise errors.UsageError(f"start_many: {len(ids)} workflow ids for {len(runs)} runs")
        if workflow_context() is not None:
            return list(zip(runs, ids, strict=True))
        spec, _inputs, deadline = self.vet(workflow, (), {}, None, timeout)
        encode, where, trace = self.codec.encode_inputs, spec.inputs_where, self._trace
        rows: list[tuple[Any, ...]] = []
        for run, wid in zip(runs, ids, strict=True):
            if wid is None:
                wid = new_id()
            else:
                check_workflow_id(wid)
            rows.append((wid, spec.name, encode(run, {}, where), deadline, trace(spec, wid)))
        owner = self.store.start_owner
        version = None if owner is None else self.store.app_version
        return spec, Record(R.OP, (None, None, "start_many", "start_many", (rows, owner, version)))

    def _started_many(self, spec: WorkflowSpec, rec: Record, loop: Any) -> list[WorkflowHandle[Any]]:
        if rec.error is not None:
            raise rec.error
        rows = rec.params[4][0]
        conflict: BaseException | None = None
        handles: list[WorkflowHandle[Any]] = []
        for (wid, _name, inputs, deadline, _trace), existing in zip(rows, rec.result[0], strict=True):
            try:
                self.launched(spec, wid, inputs, deadline, existing, loop)
            except errors.WorkflowConflictError as exc:
                conflict = conflict or exc
            handles.append(WorkflowHandle.of(self.runner, wid))
        if conflict is not None:
            raise conflict
        return handles

    def run_inline(self, spec: WorkflowSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A sync workflow called directly runs in the calling thread.

        Inside a workflow that makes it a child run by its parent's thread,
        so parents waiting on children can never starve the worker pool.
        """
        spec, wid, rec = self.prepare(spec, args, kwargs, None)
        runner = self.runner
        if rec is not None:
            existing = runner.journal.submit(rec)
            self.started(spec, wid, rec, existing, loop=None, launch=False)
            ctx = runner.register(spec, wid) if existing is None else None
            if ctx is not None:
                run_sync(ctx, spec, rec.params[2], False)
        else:
            # A replayed parent reaching a child it started before a crash: if
            # the child is still pending and nobody runs it, run it here.
            runner.steal(wid)
            row = self.store.get_workflow(wid)
            if row is not None and row.status == "PENDING":
                ctx = runner.register(spec, wid)
                if ctx is not None:
                    run_sync(ctx, spec, row.inputs, True)
        return WorkflowHandle.of(runner, wid).result()

    # -- vetting and recording -------------------------------------------------------

    def spec(self, workflow: Callable[..., Any] | str | WorkflowSpec) -> WorkflowSpec:
        """The registered workflow ``workflow`` names (its function, its
        decorated callable, its name or alias, its spec); a client's stand-in
        for a name it does not know. UsageError otherwise."""
        if isinstance(workflow, WorkflowSpec):
            spec: WorkflowSpec | None = workflow
        elif isinstance(workflow, str):
            spec = self.workflows.get(workflow)
        else:
            spec = getattr(workflow, "__durably_workflow__", None)
            declared = getattr(workflow, "__durably_declared__", None) if spec is None else None
            if declared is not None:  # declared on a durably.Registry: this engine's registration of it
                spec = self.workflows.get(declared.name)
                if spec is None or spec.fn is not declared.fn:
                    raise errors.UnboundError(
                        f"{workflow!r} is declared on a durably.Registry this engine does not include; bind it "
                        "with engine.include(registry) (or Engine(..., registry=registry))",
                        what=f"workflow {declared.name!r}",
                    )
            elif spec is None:  # the undecorated function
                spec = next((s for s in self.workflows.values() if s.fn is workflow), None)
        if spec is None and self.identity.client and isinstance(workflow, str):
            # A client starts by name, without the code: inputs are encoded
            # as given, the result read back untyped; an executor runs it.
            return WorkflowSpec(_by_name, check_name(workflow, "workflow name"), self.codec)
        if spec is not None and spec.fn is _by_name and self.identity.client:
            return spec  # a client's stand-in, passed back (a schedule's trigger)
        if spec is None or self.workflows.get(spec.name) is not spec:
            raise errors.UsageError(f"{workflow!r} is not a workflow registered with this engine")
        return spec

    def vet(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        timeout: float | None,
    ) -> tuple[WorkflowSpec, Any, float | None]:
        """Vet a start or an enqueue: (spec, encoded inputs, deadline or None)."""
        ctx = workflow_context()
        self.kit.mine(ctx, "start")
        self.check_open()
        spec = self.spec(workflow)
        if workflow_id is not None:
            check_workflow_id(workflow_id)
        seconds = seconds_arg(timeout, "workflow timeout", allow_none=True)
        if seconds is not None:
            deadline: float | None = self.clock.now() + seconds
        elif ctx is not None:
            # A child (started or enqueued) inherits its parent's absolute
            # deadline, so a whole tree is bounded by the root's timeout even
            # when the parent returns first (as DBOS does).
            deadline = self.store.deadline(ctx.workflow_id)
        else:
            deadline = None
        return spec, self.codec.encode_inputs(args, kwargs, spec.inputs_where), deadline

    def prepare(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        timeout: float | None = None,
    ) -> tuple[WorkflowSpec, str, Record | None]:
        """(spec, id, the START record to journal, or None: a replayed child start)."""
        spec, inputs, deadline = self.vet(workflow, args, kwargs, workflow_id, timeout)
        ctx = workflow_context()
        if ctx is None:
            wid = workflow_id or new_id()
            return spec, wid, Record(R.START, (wid, spec.name, inputs, None, None, deadline, self._trace(spec, wid)))
        # A child: journaled at the parent's next position.
        pos = ctx.take_position()
        step_name = f"start:{spec.name}"
        recorded = ctx.replayed(pos, step_name)
        if recorded is not None:
            return spec, self.codec.decoder(str)(recorded[0]), None
        wid = workflow_id or ctx.child_id(pos)
        parent_step = (ctx.workflow_id, ctx.row(pos), step_name, self.codec.encode(wid, "child id"))
        trace = self._trace(spec, wid)
        return spec, wid, Record(R.START, (wid, spec.name, inputs, ctx.workflow_id, parent_step, deadline, trace))

    def _trace(self, spec: WorkflowSpec, wid: str) -> str | None:
        """With OpenTelemetry on: the first attempt's span, made now (a child
        of the caller's current span), as the traceparent stored with the workflow."""
        tel = self.runner.telemetry
        return None if tel is None else tel.start(spec.name, wid)

    def started(self, spec: WorkflowSpec, wid: str, rec: Record, existing: Any, loop: Any, launch: bool = True) -> None:
        """The START record is durable: launch what it created (unless the
        id existed; another workflow under it is a conflict)."""
        deadline = rec.params[5] if len(rec.params) > 5 else None
        self.launched(spec, wid, rec.params[2], deadline, existing, loop, launch)

    def launched(
        self, spec: WorkflowSpec, wid: str, inputs: Any, deadline: Any, existing: Any, loop: Any, launch: bool = True
    ) -> None:
        """``started``, given the start's inputs and deadline."""
        tel = self.runner.telemetry
        if tel is not None:
            tel.started(wid, spec.name, existing is None, not self.identity.client)
        if existing is not None:
            name, _status = existing
            if name != spec.name and self.workflows.get(name) is not spec:  # an alias is this workflow
                raise errors.WorkflowConflictError(
                    f"workflow id {wid!r} already belongs to workflow {name!r}, not {spec.name!r}",
                    workflow_id=wid,
                    existing_name=name,
                    requested_name=spec.name,
                )
            return
        if deadline is not None:
            self.deadlines.arm(wid, deadline)
        if launch and not self.identity.client:
            self.runner.launch(spec, wid, inputs, replay=False, loop=loop)


class StartOptions:
    """``engine.options(workflow_id=..., timeout=...)``: ``start``,
    ``start_async`` and ``run`` with these options, the workflow's own
    arguments alone in the call (so type checkers check them all, which
    PEP 612 does not allow beside option keywords)."""

    __slots__ = ("_starts", "_workflow_id", "_timeout")

    def __init__(self, starts: Starter, workflow_id: str | None, timeout: float | None) -> None:
        self._starts, self._workflow_id, self._timeout = starts, workflow_id, timeout

    def __repr__(self) -> str:
        return f"<durably start options workflow_id={self._workflow_id!r} timeout={self._timeout!r}>"

    @as_checked
    def start(self, workflow: Any, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]:
        return self._starts.start(workflow, *args, workflow_id=self._workflow_id, timeout=self._timeout, **kwargs)

    @as_checked_async
    async def start_async(self, workflow: Any, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]:
        starts = self._starts
        return await starts.start_async(workflow, *args, workflow_id=self._workflow_id, timeout=self._timeout, **kwargs)

    @as_checked_run
    def run(self, workflow: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self.start(workflow, *args, **kwargs).result()
