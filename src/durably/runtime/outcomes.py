"""A step's outcome: the one place a value is encoded for the journal and
the one place a STEP record is built.

Every durable call whose outcome is a STEP row (a step, a recorded value, a
patch marker, the wake of a sleep, the join of a child) builds it with
:func:`step_record`. A step's (or a transaction step's) value becomes its
stored form, and what the workflow then sees, in :func:`encode_value`; an
exception in :func:`encode_failure`. The workflow sees the *decoded* value,
so that the live run and a replay see identical values. These are plain
functions, called right from the step path (runtime/steps.py): it runs once
per step, and a layer of calls over them would cost on every step.
"""

from __future__ import annotations

from typing import Any

from .. import _records as R
from ..codec import _IDENTITY, DECODE_FAILURES, Codec, Decoder, Where, decode_error, decode_failure, encode_error
from ..journal import Record
from .context import WorkflowContext, encode_key

_STEP = R.STEP


def step_record(ctx: WorkflowContext, key: Any, name: str, raw: Any, error: Any, started: float | None) -> Record:
    """The STEP record of the outcome of the durable call at ``key``.

    ``raw``: the encoded value (None for none), ``error``: the encoded
    exception (or None), ``started``: when a step body started (monotonic
    seconds; the store turns it into its own clock), None for other calls.
    In an async workflow the row takes the next position (submission =
    delivery order) and names its key when the two differ (ctx.row).
    """
    if ctx.is_async:  # ctx.row, inlined: this runs once per step
        pos = ctx.position
        ctx.position = pos + 1
        return Record(_STEP, (ctx.workflow_id, pos, name, raw, error, None if key == pos else encode_key(key), started))
    return Record(_STEP, (ctx.workflow_id, key, name, raw, error, None, started))


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
