"""Shortcuts on the hot path agree with the one definition they stand for.

The async path takes a few shortcuts (once per workflow start, once per
step); each keeps its general form as the reference. These tests pin that
both give the same result, error included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import inspect
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import durably
from durably import errors, testing
from durably._ids import new_id, uuid_text
from durably.codec import annotations_of, get_codec, inputs_plan


@dataclasses.dataclass
class Point:
    x: int
    y: int


def positional(
    a: int, b: str, c: Point, d: datetime.date, e, f: float = 1.0, g: bool = False
) -> None:  # (e: no annotation on purpose)
    pass


def only(a: int, /, b: list[Point]) -> None:
    pass


def star(a: int, *rest: int) -> None:
    pass


def keyword(a: int, *, b: int) -> None:
    pass


def var_kw(a: int, **kw: int) -> None:
    pass


def _both(codec_name: str, fn: Any, args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    codec = get_codec(codec_name)
    sig, hints = inspect.signature(fn), annotations_of(fn)
    raw = codec.encode_inputs(tuple(args), kwargs, "inputs")
    results = []
    for plan in (None, inputs_plan(sig, hints)):
        try:
            results.append(("ok", codec.decode_inputs(raw, sig, hints, plan)))
        except errors.SerializationError as exc:
            results.append(("error", str(exc)))
    return results[0], results[1]


def test_plan_only_for_positional_signatures() -> None:
    for fn in (star, keyword, var_kw):
        assert inputs_plan(inspect.signature(fn), annotations_of(fn)) is None
    plan = inputs_plan(inspect.signature(positional), annotations_of(positional))
    assert plan is not None and plan[0] == 5 and [n for n, _ in plan[1]] == list("abcdefg")
    assert inputs_plan(inspect.signature(only), annotations_of(only)) is not None


@pytest.mark.parametrize("codec_name", ["json", "pickle"])
@pytest.mark.parametrize(
    ("fn", "args", "kwargs"),
    [
        (positional, [1, "s", Point(1, 2), datetime.date(2024, 1, 2), {"k": [1]}], {}),
        (positional, [1, "s", Point(1, 2), datetime.date(2024, 1, 2), None, 2.5, True], {}),
        (positional, [1, "s", Point(1, 2), datetime.date(2024, 1, 2), None, 2, 1], {}),  # int for float, bool
        (positional, [True, "s", Point(1, 2), datetime.date(2024, 1, 2), None], {}),  # bool for int
        (positional, [1, "s", Point(1, 2)], {}),  # too few: left to the call
        (positional, [1, "s", Point(1, 2), datetime.date(2024, 1, 2), None, 1.0, True, 8], {}),  # too many
        (positional, [1, "s", Point(1, 2), datetime.date(2024, 1, 2)], {"e": 3}),  # a keyword: general path
        (positional, ["nope", "s", Point(1, 2), datetime.date(2024, 1, 2), None], {}),  # does not fit
        (positional, [2**70, "s", Point(1, 2), datetime.date(2024, 1, 2), None], {}),
        (only, [3, [Point(1, 2), Point(3, 4)]], {}),
        (only, [3], {}),
        (star, [1, 2, 3], {}),
        (keyword, [1], {"b": 2}),
        (var_kw, [1], {"x": 2}),
    ],
)
def test_decode_inputs_shortcut_agrees(codec_name: str, fn: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    reference, shortcut = _both(codec_name, fn, args, kwargs)
    assert shortcut == reference
    if reference[0] == "ok":  # same types too (1 == 1.0 == True)
        assert [type(v) for v in shortcut[1][0]] == [type(v) for v in reference[1][0]]


# What the async steps below return: values of every kind, one that does not
# encode, one that encodes but does not decode back to its annotation.
VALUES: list[Any] = [None, 5, "s", 1.5, True, [1, 2], {"a": 1}, Point(1, 2), datetime.date(2024, 1, 2), 2**70, object()]


def _run_fast_and_slow(engine: durably.Engine, flow: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Run ``flow("fast")`` and ``flow("slow")`` to their end; each one's step
    rows, with the step's name made the same (NAME) so that the two compare."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with engine:
        for which in ("fast", "slow"):
            wid = f"wf-{which}"
            engine.start(flow, which, workflow_id=wid).result()
            rows[which] = [
                (r.position, r.name.replace(which, "NAME"), r.output, r.error, r.ident, r.started_at is not None)
                for r in testing.steps(engine, wid)
            ]
    return rows


@pytest.mark.parametrize("codec", ["json", "pickle"])
def test_sync_step_shortcut_agrees(tmp_path: Path, codec: str) -> None:
    """A plain sync step (the inlined outcome of Step._live_sync) and the
    same step with a retry policy (encode_value and step_record, the
    reference) write the same rows and hand back the same values and errors."""
    engine = durably.Engine(str(tmp_path / "db"), codec=codec)
    seen: dict[str, list[Any]] = {"fast": [], "slow": []}

    @engine.step(name="fast")
    def fast(i: int) -> Any:
        return VALUES[i]

    @engine.step(name="slow", retries=1)
    def slow(i: int) -> Any:
        return VALUES[i]

    @engine.step(name="fast_point")
    def fast_point(x: Any) -> Point:
        return x  # type: ignore[no-any-return]

    @engine.step(name="slow_point", retries=1)
    def slow_point(x: Any) -> Point:
        return x  # type: ignore[no-any-return]

    @engine.workflow(name="flow")
    def flow(which: str) -> None:
        step, point = (fast, fast_point) if which == "fast" else (slow, slow_point)
        out = seen[which]
        calls = [(step, i) for i in range(len(VALUES))] + [(point, Point(3, 4)), (point, {"x": "no"})]
        for fn, arg in calls:
            try:
                value = fn(arg)
            except errors.SerializationError as exc:
                out.append(("error", str(exc).replace(which, "NAME")))
            else:
                out.append((type(value), value if type(value) is not object else "object"))

    rows = _run_fast_and_slow(engine, flow)
    assert rows["fast"] == rows["slow"]
    assert seen["fast"] == seen["slow"]
    # One row per call, but for the refused ones (JSON: object() and the point that does not decode back)
    assert len(rows["fast"]) == len(VALUES) + 2 - (2 if codec == "json" else 0)
    assert ("error" in str(seen["fast"])) == (codec == "json")  # (pickle takes any value)


@pytest.mark.parametrize("codec", ["json", "pickle"])
def test_async_step_shortcut_agrees(tmp_path: Path, codec: str) -> None:
    """A plain async step (the inlined outcome in runtime/steps.py) and the
    same step with a retry policy (encode_value and step_record, the
    reference) write the same rows and hand back the same values and errors."""
    engine = durably.Engine(str(tmp_path / "db"), codec=codec)
    seen: dict[str, list[Any]] = {"fast": [], "slow": []}

    def body(i: int) -> Any:
        return VALUES[i]

    @engine.step(name="fast")
    async def fast(i: int) -> Any:
        return body(i)

    @engine.step(name="slow", retries=1)
    async def slow(i: int) -> Any:
        return body(i)

    @engine.step(name="fast_point")
    async def fast_point(x: Any) -> Point:
        return x  # type: ignore[no-any-return]

    @engine.step(name="slow_point", retries=1)
    async def slow_point(x: Any) -> Point:
        return x  # type: ignore[no-any-return]

    @engine.workflow(name="flow")
    async def flow(which: str) -> None:
        step, point = (fast, fast_point) if which == "fast" else (slow, slow_point)
        out = seen[which]
        out.append(await asyncio.gather(step(1), step(2)))  # branches: rows whose key is not their position
        calls = [(step, i) for i in range(len(VALUES))] + [(point, Point(3, 4)), (point, {"x": "no"})]
        for fn, arg in calls:
            try:
                value = await fn(arg)
            except errors.SerializationError as exc:
                out.append(("error", str(exc).replace(which, "NAME")))
            else:
                out.append((type(value), value if type(value) is not object else "object"))

    rows = _run_fast_and_slow(engine, flow)
    assert rows["fast"] == rows["slow"]
    assert seen["fast"] == seen["slow"]
    assert len(rows["fast"]) > len(VALUES)
    assert ("error" in str(seen["fast"])) == (codec == "json")  # (pickle takes any value)


def test_uuid_text_agrees() -> None:
    for value in (0, 1, (1 << 128) - 1, 0x0123456789ABCDEF0123456789ABCDEF, *(uuid.uuid4().int for _ in range(100))):
        assert uuid_text(value) == str(uuid.UUID(int=value))
    made = [new_id() for _ in range(100)]
    assert all(uuid.UUID(w).version == 7 and str(uuid.UUID(w)) == w for w in made)
    assert len(set(made)) == len(made)


def _random_part(workflow_id: str) -> str:
    return workflow_id[15:]  # after the 48-bit time and the version digit


def test_ids_draw_on_shared_random_bytes_without_handing_any_out_twice() -> None:
    """The random bits are read from the OS in blocks (_ids.py): threads
    drawing at once never get the same bytes, and a forked child draws
    fresh ones, never the parent's next ones (the ids would repeat)."""
    new_id()  # the parent holds a block it has started on
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, ",".join(new_id() for _ in range(200)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(200)]
    assert len(child) == 200
    assert not {_random_part(w) for w in parent} & {_random_part(w) for w in child}

    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(out: list[str]) -> None:
        out.extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=draw, args=(out,)) for out in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [_random_part(w) for out in drawn for w in out]
    assert len(every) == 20_000 and len(set(every)) == len(every)
