"""A step's outcome: the one place a value is encoded for the journal and
the one place a STEP record is built.

Every durable call whose outcome is a STEP row (a step, a recorded value, a
patch marker, the wake of a sleep, the join of a child) builds it with
:func:`step_record`; a step's value or error becomes its stored form, and
what the workflow then sees, in :func:`settle`. The workflow sees the
*decoded* value, so that the live run and a replay see identical values.
"""

from __future__ import annotations

from typing import Any

from .. import _records as R
from ..codec import _IDENTITY, DECODE_FAILURES, Codec, Decoder, Where, decode_error, decode_failure, encode_error
from ..journal import Record
from .context import WorkflowContext


def step_record(ctx: WorkflowContext, key: Any, name: str, raw: Any, error: Any, started: float | None) -> Record:
    """The STEP record of the outcome of the durable call at ``key``.

    ``raw``: the encoded value (None for none), ``error``: the encoded
    exception (or None), ``started``: when a step body started (monotonic
    seconds; the store turns it into its own clock), None for other calls.
    In an async workflow the row takes the next position (submission =
    delivery order) and names its key when the two differ (ctx.row).
    """
    pos, ident = ctx.row(key)
    return Record(R.STEP, (ctx.workflow_id, pos, name, raw, error, ident, started))


def encode_value(codec: Codec, value: Any, where: Where, decode: Decoder, identity: bool) -> tuple[Any, Any]:
    """(stored form, what the workflow sees) of a step's live value.

    None stays None. ``identity`` says the decoder returns primitives
    unchanged, so a primitive skips the decode. A value that does not decode
    back would not replay: it is refused now, as an unencodable one.
    """
    if value is None:
        return None, None
    raw = codec.encode(value, where)
    if identity and type(value) in _IDENTITY:
        return raw, value
    try:
        return raw, decode(raw)
    except DECODE_FAILURES as exc:
        raise decode_failure(where, decode, exc) from exc


def encode_failure(exc: BaseException) -> tuple[Any, BaseException]:
    """(stored form, what the workflow sees) of a step's exception: the
    decoded error, as a replay raises it, caused by the original."""
    err = encode_error(exc)
    seen = decode_error(err)
    seen.__cause__ = exc
    return err, seen


def settle(
    ctx: WorkflowContext,
    name: str,
    decode: Decoder,
    identity: bool,
    key: Any,
    value: Any,
    exc: BaseException | None,
    started: float | None,
) -> tuple[Record, Any, BaseException | None]:
    """A step's outcome: its STEP record, the value the workflow sees and
    the error it raises (None, or the decoded exception)."""
    if exc is None:
        raw, seen = encode_value(ctx.codec, value, ("step", name, ctx.workflow_id, key), decode, identity)
        return step_record(ctx, key, name, raw, None, started), seen, None
    err, failure = encode_failure(exc)
    return step_record(ctx, key, name, None, err, started), None, failure
