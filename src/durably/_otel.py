"""durably's spans and metrics (imported only when OpenTelemetry is configured;
see durably/telemetry.py for when).

Spans (tracer ``durably``):

* ``durably.workflow <name>``: one per run attempt of a workflow. The first is
  made by ``start()`` as a child of the caller's current span (a child
  workflow's: of its parent's attempt), and its context is stored with the
  workflow (``workflows.trace``); a later attempt (recovery after a crash, a
  takeover, a resume) is a child of that stored context and links to it, so
  the trace goes on across processes.
* ``durably.step <name>``: one per step call, replayed ones included
  (``durably.replayed``); the body runs inside it, so spans the body makes
  (an instrumented HTTP or SQL call) nest under it.
* ``durably.transaction <name>``, and ``durably.sleep`` / ``durably.recv`` /
  ``durably.get_event`` for the durable waits.

Metrics (meter ``durably``): see ``_Instruments``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from . import __version__, errors
from . import _records as R
from .runtime.context import encode_key
from .telemetry import traceparent

if TYPE_CHECKING:
    from .runtime.context import WorkflowContext
    from .runtime.runner import Runner
    from .store.contract import StoreContract

_NO_SPAN = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)


class _StepState:
    """The step span running in this context, and the retries it made."""

    __slots__ = ("span", "retries")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.retries = 0


_STEP: ContextVar[_StepState | None] = ContextVar("durably_otel_step", default=None)


def parse(value: str | None) -> SpanContext | None:
    """A stored W3C traceparent as a (remote) span context, or None."""
    try:
        _version, trace_id, span_id, flags = (value or "").split("-")
        sc = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16)))
    except ValueError:
        return None
    return sc if sc.is_valid else None


class _Instruments:
    """durably's instruments on one meter provider (made once per provider:
    an SDK keeps the first instrument of a name, callbacks included)."""

    def __init__(self, meter: metrics.Meter) -> None:
        # Counted in plain dicts by each Telemetry (a synchronous counter's
        # add costs microseconds per step) and observed at collection.
        for name, unit, what, table, keys in (
            ("durably.steps", "{step}", "step outcomes recorded (replays not counted)", "step_counts", _STEP_KEYS),
            ("durably.workflows.started", "{workflow}", "workflows created by a start", "start_counts", _NAME_KEYS),
            (
                "durably.workflows.ended",
                "{workflow}",
                "workflow runs that ended here, by status",
                "end_counts",
                _END_KEYS,
            ),
        ):
            meter.create_observable_counter(name, [_table(table, keys)], unit, what)
        self.batch = meter.create_histogram("durably.commit.batch_size", "{record}", "journal records per commit")
        self.commit = meter.create_histogram(
            "durably.commit.duration", "s", "time to write and commit (fsync included) one journal batch"
        )
        for name, unit, what, read in (
            ("durably.recoveries", "{workflow}", "workflows resumed by an open's recovery", "recoveries"),
            ("durably.takeovers", "{workflow}", "workflows taken over from an executor that is gone", "takeovers"),
            ("durably.fenced", "{workflow}", "workflows lost to another executor (fenced)", "fenced"),
            (
                "durably.workflows.parked",
                "{workflow}",
                "workflows parked (replay mismatch, unregistered ...)",
                "parked",
            ),
        ):
            meter.create_observable_counter(name, [_counter(read)], unit, what)
        meter.create_observable_counter(
            "durably.journal.records", [_journal], "{record}", "journal records committed by this engine's writer"
        )
        meter.create_observable_gauge(
            "durably.queue.depth", [_queues(1)], "{workflow}", "workflows waiting in a queue (durably.queue)"
        )
        meter.create_observable_gauge(
            "durably.queue.running", [_queues(2)], "{workflow}", "workflows of a queue running (durably.queue)"
        )


_BY_PROVIDER: dict[int, tuple[Any, _Instruments]] = {}
_LIVE: weakref.WeakSet[Telemetry] = weakref.WeakSet()
# Counts of closed opens, kept: an observable counter must never go down.
_CLOSED: list[Telemetry] = []


def _instruments() -> _Instruments:
    provider = metrics.get_meter_provider()
    known = _BY_PROVIDER.get(id(provider))
    if known is None or known[0] is not provider:
        known = _BY_PROVIDER[id(provider)] = (provider, _Instruments(metrics.get_meter("durably", __version__)))
    return known[1]


def _counter(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(getattr(t.runner.counters, name), t.attrs) for t in list(_LIVE)]

    return observe


_STEP_KEYS = ("durably.workflow.name", "durably.step.outcome")
_NAME_KEYS = ("durably.workflow.name",)
_END_KEYS = ("durably.workflow.name", "durably.workflow.status")


def _table(table: str, keys: tuple[str, ...]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        seen: dict[tuple[Any, ...], int] = {}
        for t in list(_LIVE) + list(_CLOSED):
            for key, n in list(getattr(t, table).items()):
                seen[key] = seen.get(key, 0) + n
        return [Observation(n, dict(zip(keys, key, strict=True))) for key, n in seen.items()]

    return observe


def _journal(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(t.runner.journal.records, t.attrs) for t in list(_LIVE)]


def _queues(column: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        seen: list[Observation] = []
        for t in list(_LIVE):
            try:
                rows = t.store.queue_stats()
            except Exception:  # closed meanwhile: nothing to report
                continue
            seen += [Observation(int(row[column] or 0), {**t.attrs, "durably.queue": str(row[0])}) for row in rows]
        return seen

    return observe


def _key(key: Any) -> Any:
    return key if isinstance(key, int) else encode_key(key)


class Telemetry:
    """The telemetry of one open of an engine (``telemetry.detect``)."""

    def __init__(self, store: StoreContract, runner: Runner, executor: str, tracing: bool, metering: bool) -> None:
        self.store = store
        self.runner = runner
        self.tracer = trace.get_tracer("durably", __version__) if tracing else None
        self.inst = _instruments() if metering else None
        self.attrs = {"durably.executor": executor}
        self.pending: dict[str, Any] = {}  # first-attempt spans made by start(), not running yet
        self.step_counts: dict[tuple[str, str], int] = {}  # (workflow name, outcome) -> steps recorded
        self.start_counts: dict[tuple[str], int] = {}
        self.end_counts: dict[tuple[str, str], int] = {}
        _LIVE.add(self)

    def close(self) -> None:
        _LIVE.discard(self)
        if self.inst is not None and (self.step_counts or self.start_counts or self.end_counts):
            _CLOSED.append(self)
        for span in self.pending.values():
            span.end()
        self.pending.clear()

    # -- starts and attempts ------------------------------------------------------------

    def start(self, name: str, wid: str) -> str | None:
        """At ``start()``: the first attempt's span, child of the caller's
        current span; its traceparent goes into the START record."""
        if self.tracer is None:
            return None
        span = self.tracer.start_span(
            f"durably.workflow {name}",
            attributes={"durably.workflow.id": wid, "durably.workflow.name": name, "durably.workflow.attempt": 1},
        )
        self.pending[wid] = span
        return traceparent(span)

    def started(self, wid: str, name: str, created: bool, runs_here: bool) -> None:
        """The START record is durable: ``created`` (else the id existed)."""
        if created and self.inst is not None:
            self.start_counts[(name,)] = self.start_counts.get((name,), 0) + 1
        if created and runs_here:
            return  # its first attempt takes the span
        span = self.pending.pop(wid, None)
        if span is not None:  # runs elsewhere (a client's start), or nothing was created
            span.set_attribute("durably.workflow.created", created)
            span.end()

    def attempt(self, ctx: WorkflowContext, replay: bool) -> tuple[Any, Any]:
        """A run attempt begins here: (its span, the context token)."""
        span = self.pending.pop(ctx.workflow_id, None)
        if span is None and self.tracer is not None:
            stored, attempts = self.store.trace_of(ctx.workflow_id) or (None, 0)
            parent = parse(stored)
            span = self.tracer.start_span(
                f"durably.workflow {ctx.name}",
                context=trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else None,
                links=[Link(parent, {"durably.link": "earlier attempt"})] if parent is not None else None,
                attributes={
                    "durably.workflow.id": ctx.workflow_id,
                    "durably.workflow.name": ctx.name,
                    "durably.workflow.attempt": attempts + 1,
                },
            )
        if span is None:
            return None, None
        span.set_attribute("durably.replayed", replay)
        # A sampled-out attempt's steps make no spans: a ParentBased sampler
        # (the SDK's default) would drop them anyway, and creating them costs
        # more than the step (see step_async).
        ctx.traced = span.is_recording()
        return span, otel_context.attach(trace.set_span_in_context(span))

    def attempt_end(self, ctx: WorkflowContext, span: Any, token: Any, rec: Any, exc: BaseException | None) -> None:
        status = _status(ctx, rec, exc)
        if span is not None:
            otel_context.detach(token)
            span.set_attribute("durably.workflow.outcome", status)
            if status == "ERROR" and exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
        if self.inst is not None and status in ("SUCCESS", "ERROR", "CANCELLED"):
            key = (ctx.name, status)
            self.end_counts[key] = self.end_counts.get(key, 0) + 1

    # -- steps ----------------------------------------------------------------------------

    @contextmanager
    def span(self, kind: str, ctx: WorkflowContext, name: str, key: Any, replayed: bool) -> Generator[_StepState]:
        """A step-like span (step, transaction, durable wait) current while
        the block runs (a body nests what it does under it); none in an
        attempt that is not sampled (see attempt)."""
        if not ctx.traced:
            yield _StepState(_NO_SPAN)
            return
        attributes = {
            "durably.workflow.id": ctx.workflow_id,
            "durably.workflow.name": ctx.name,
            "durably.step.name": name,
            "durably.step.position": _key(key),
            "durably.replayed": replayed,
        }
        tracer = self.tracer
        span = _NO_SPAN if tracer is None else tracer.start_span(f"{kind} {name}", attributes=attributes)
        state = _StepState(span)
        token = otel_context.attach(trace.set_span_in_context(span))
        step_token = _STEP.set(state)
        outcome = "success"
        try:
            yield state
        except Exception as exc:
            outcome = "error"
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        except BaseException:
            outcome = "interrupted"  # the workflow stops here (cancel, close, fencing, park)
            raise
        finally:
            _STEP.reset(step_token)
            otel_context.detach(token)
            span.set_attribute("durably.step.outcome", outcome)
            span.set_attribute("durably.step.retries", state.retries)
            span.end()
            if self.inst is not None and outcome != "interrupted" and kind == "durably.step":
                self._count(ctx, replayed, outcome)

    def step_sync(self, step: Any, ctx: WorkflowContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pos = ctx.position
        if not ctx.traced:
            return self._counted(ctx, pos, step._step_sync, ctx, args, kwargs)
        with self.span("durably.step", ctx, step._name, pos, pos in ctx.recorded):
            return step._step_sync(ctx, args, kwargs)

    async def step_async(
        self, run: Callable[..., Any], step: Any, ctx: WorkflowContext, key: Any, args: Sequence[Any], kwargs: Any
    ) -> Any:
        if not ctx.traced:  # no span: only the count (a span costs more than the step itself)
            if self.inst is None:
                return await run(step, ctx, key, args, kwargs, True)
            replayed = key in ctx.recorded
            try:
                value = await run(step, ctx, key, args, kwargs, True)
            except Exception:
                self._count(ctx, replayed, "error")
                raise
            self._count(ctx, replayed, "success")
            return value
        with self.span("durably.step", ctx, step._name, key, key in ctx.recorded):
            return await run(step, ctx, key, args, kwargs, True)

    async def traced(self, kind: str, ctx: WorkflowContext, name: str, key: Any, awaitable: Any) -> Any:
        """An awaitable of an async workflow (a transaction step) in a span."""
        if not ctx.traced:
            return await awaitable
        with self.span(kind, ctx, name, key, key in ctx.recorded):
            return await awaitable

    def _counted(self, ctx: WorkflowContext, key: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """A step of an attempt without spans: its outcome counted."""
        if self.inst is None:
            return fn(*args)
        replayed = key in ctx.recorded
        try:
            value = fn(*args)
        except Exception:
            self._count(ctx, replayed, "error")
            raise
        self._count(ctx, replayed, "success")
        return value

    def _count(self, ctx: WorkflowContext, replayed: bool, outcome: str) -> None:
        if not replayed:
            counted = (ctx.name, outcome)
            self.step_counts[counted] = self.step_counts.get(counted, 0) + 1

    @staticmethod
    def retried(attempt: int, exc: BaseException, delay: float) -> None:
        """A step body failed and is tried again (runtime/retries.py)."""
        state = _STEP.get()
        if state is not None:
            state.retries += 1
            state.span.add_event(
                "durably.retry",
                {"durably.step.attempt": attempt, "exception.type": type(exc).__name__, "durably.retry.delay": delay},
            )

    # -- the writer -----------------------------------------------------------------------

    def timed(self, flush: Callable[[Sequence[Any]], None]) -> Callable[[Sequence[Any]], None]:
        """The store's flush, measured (batch size and commit time)."""
        if self.inst is None:
            return flush
        batch_size, commit, attrs, clock = (
            self.inst.batch.record,
            self.inst.commit.record,
            self.attrs,
            time.perf_counter,
        )

        def timed_flush(batch: Sequence[Any]) -> None:
            began = clock()
            flush(batch)
            commit(clock() - began, attrs)
            batch_size(len(batch), attrs)

        return timed_flush


def _status(ctx: WorkflowContext, rec: Any, exc: BaseException | None) -> str:
    """How an attempt ended: a workflow status, PARKED, or STOPPED (left
    PENDING: the engine closed, the process was interrupted, fenced)."""
    if rec is not None and rec.kind == R.COMPLETE and rec.error is None:
        return str(rec.params[0])
    if isinstance(exc, errors.WorkflowCancelled):
        return "CANCELLED"
    if ctx.parked is not None:
        return "PARKED"
    return "STOPPED"
