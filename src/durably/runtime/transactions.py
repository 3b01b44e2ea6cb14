"""Transaction steps: a step whose body runs SQL in the journal's batch.

``Transaction`` is what ``@engine.transaction`` returns. Its body runs on
the writer thread (``TxBody``, called by the store) in a SAVEPOINT of its
own, and its outcome record commits in the same transaction as its SQL:
exactly once. Replay and ordered delivery are the steps' (steps.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from types import MethodType
from typing import Any, Generic, ParamSpec, TypeVar

from .. import errors
from .._records import TX
from ..codec import Codec, decode_error, encode_error
from ..journal import Record
from .context import WorkflowContext, current, workflow_context
from .outcomes import encode_value
from .steps import StepSpec, _replay, as_awaitable

P = ParamSpec("P")
R = TypeVar("R", covariant=True)


class Transaction(Generic[P, R]):
    """What ``@engine.transaction`` returns: ``fn(tx, *args, **kwargs)``
    called as ``step(*args, **kwargs)``, the transaction passed first.

    The body runs on the journal's writer thread inside the batch
    transaction, in its own SAVEPOINT: its SQL commits in the same fsync as
    its outcome record, exactly once. A body that raises is rolled back and
    its error is the recorded outcome.
    """

    __slots__ = ("__durably_step__", "_spec", "_timeout", "__dict__")

    def __init__(self, spec: StepSpec, timeout: float | None = None) -> None:
        if spec.is_async:
            raise errors.UsageError(
                f"transaction step {spec.name!r} must be a plain def (it runs on the writer thread)"
            )
        self._spec = self.__durably_step__ = spec  # what the engine and tests look up
        self._timeout = timeout  # None: the engine's budget
        functools.update_wrapper(self, spec.fn)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else MethodType(self, obj)

    def __reduce__(self) -> str:
        return str(self.__dict__["__qualname__"])

    def __repr__(self) -> str:
        return f"<durably transaction step {self._spec.name!r}>"

    def aio(self, /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """The call from an async workflow, typed as awaitable (``Step.aio``)."""
        return as_awaitable(self(*args, **kwargs))

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        name = self._spec.name
        ctx = workflow_context()
        if ctx is None and current.get() is not None:
            raise errors.UsageError(
                f"transaction step {name!r} was called inside a step body; call it from the "
                "workflow (a step's outcome cannot cover a transaction's SQL)"
            )
        if ctx is None:
            raise errors.UsageError(
                f"transaction step {name!r} was called outside a workflow; it needs the "
                "engine's writer (call it from a workflow, or wrap it in one)"
            )
        tel = ctx.runner.telemetry
        if ctx.is_async:
            key = ctx.take_position()
            running = _tx_async(self, ctx, key, args, kwargs)
            if tel is not None:  # OpenTelemetry configured at open (_otel.py)
                running = tel.traced("durably.transaction", ctx, name, key, running)
            awaitable: R = running  # pyright: ignore[reportAssignmentType]  (R is the awaitable in an async workflow)
            return awaitable
        if tel is not None:
            with tel.span("durably.transaction", ctx, name, ctx.position, ctx.position in ctx.recorded):
                traced: R = self._tx_sync(ctx, args, kwargs)
            return traced
        result: R = self._tx_sync(ctx, args, kwargs)
        return result

    def _tx_sync(self, ctx: WorkflowContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        spec = self._spec
        pos = ctx.take_position()
        recorded = ctx.replayed(pos, spec.name)
        if recorded is not None:
            return _replay(ctx, spec, recorded, pos)
        box: list[Any] = []
        rec = Record(TX, (ctx.workflow_id, ctx.row(pos), spec.name, self.body(ctx, pos, args, kwargs, box)))
        ctx.journal.submit(rec)
        return _tx_outcome(rec, box)

    def body(
        self, ctx: WorkflowContext, pos: Any, args: tuple[Any, ...], kwargs: dict[str, Any], box: list[Any]
    ) -> TxBody:
        """What the writer runs for the call at ``pos``; ``box`` gets the
        value the workflow sees, or the exception the body raised."""
        spec = self._spec
        where = f"transaction {spec.name!r} (workflow {ctx.workflow_id!r}, position {pos})"
        # On the writer thread the body sees its workflow (engine.workflow_id
        # works) but may not start steps: they would wait on this very writer.
        inner = WorkflowContext(ctx.runner, ctx.workflow_id, ctx.name, {}, False)
        inner.interrupt = errors.UsageError(f"{where} may not call steps or start workflows")
        return TxBody(spec, ctx.codec, where, inner, args, kwargs, box, self._timeout)


class TxBody:
    """A transaction step's body, run by the store on the writer thread:
    ``body(tx) -> (stored value, stored error)``; ``timeout`` is its budget
    (None: the engine's)."""

    __slots__ = ("spec", "codec", "where", "inner", "args", "kwargs", "box", "timeout")

    def __init__(
        self,
        spec: StepSpec,
        codec: Codec,
        where: str,
        inner: WorkflowContext,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        box: list[Any],
        timeout: float | None,
    ) -> None:
        self.spec = spec
        self.codec = codec
        self.where = where
        self.inner = inner
        self.args = args
        self.kwargs = kwargs
        self.box = box
        self.timeout = timeout

    def __call__(self, tx: Any) -> tuple[Any, Any]:
        box = self.box
        box.clear()  # the store may run a body again after rolling back a batch (busy, isolation)
        token = current.set(self.inner)
        try:
            value = self.spec.fn(tx, *self.args, **self.kwargs)
        except Exception as exc:
            box.append(exc)
            return None, encode_error(exc)
        finally:
            current.reset(token)
        spec = self.spec
        raw, seen = encode_value(self.codec, value, self.where, spec.decode, spec.identity)
        box.append(seen)
        return raw, None


def _tx_outcome(rec: Record, box: list[Any]) -> Any:
    """What the workflow sees of a transaction step's durable outcome."""
    _output, error = rec.result
    if error is not None:
        seen = decode_error(error)
        # (the body may have returned a value: on PostgreSQL an SQL error it
        # caught, or the store's sandbox check, is still its outcome)
        seen.__cause__ = box[0] if box and isinstance(box[0], BaseException) else None
        raise seen
    return box[0] if box else None


async def _run_tx_async(
    step: Transaction[Any, Any], ctx: WorkflowContext, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    spec = step._spec
    recorded = ctx.replayed(key, spec.name)
    if recorded is not None:
        if not ctx.deliver_now():
            await ctx.turn(key)
        return _replay(ctx, spec, recorded, key)
    box: list[Any] = []
    rec = Record(TX, (ctx.workflow_id, ctx.row(key), spec.name, step.body(ctx, key, args, kwargs, box)))
    await ctx.journal.submit_async(rec)
    if not ctx.deliver_now():
        await ctx.turn(key)
    return _tx_outcome(rec, box)


_tx_async: Callable[..., Any] = _run_tx_async
