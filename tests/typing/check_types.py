"""Typing pins: checked by mypy --strict and pyright (strict), never run
for behaviour (tests/test_typing.py runs both checkers over it). Each
``assert_type`` is what a user's editor sees; each line marked with an
ignore MUST be an error (warn_unused_ignores and
reportUnnecessaryTypeIgnoreComment turn a regression into a failure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, assert_type

import durably

engine = durably.Engine(":memory:")
reg = durably.Registry()


@engine.step()
def fetch(url: str, retries: int = 0) -> bytes:
    return url.encode()


@engine.step()
async def fetch_async(url: str) -> bytes:
    return url.encode()


@engine.transaction()
def record(db: durably.Tx, order: str) -> int:
    return len(order)


@engine.workflow()
def crawl(url: str, depth: int = 1) -> int:
    assert_type(fetch(url), bytes)
    assert_type(record(url), int)  # the transaction's db is hidden
    record(url, url)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    fetch(1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    return len(fetch(url))


@engine.workflow()
async def crawl_async(url: str) -> str:
    assert_type(await fetch_async(url), bytes)
    return (await fetch_async(url)).decode()


@reg.step()
def d_step(x: int) -> str:
    return str(x)


@reg.transaction()
def d_tx(db: durably.Tx, x: int) -> float:
    return float(x)


@reg.workflow()
def d_flow(x: int) -> str:
    assert_type(d_step(x), str)
    assert_type(d_tx(x), float)
    d_step("x")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    return d_step(x)


@reg.workflow()
async def d_flow_async(x: int) -> int:
    return x


@reg.workflow()
def d_durable_calls(to: str) -> str:
    """The engine's durable calls on the registry, typed as the engine's."""
    reg.sleep(3 * 86400)
    assert_type(reg.now(), datetime)
    assert_type(reg.random(), float)
    assert_type(reg.patched("change"), bool)
    assert_type(reg.recv("topic", timeout=5.0), Any)
    assert_type(reg.get_all_events(to), dict[str, Any])
    reg.send(to, "hello", topic="greeting")
    reg.sleep("3 days")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    return reg.uuid4()


@reg.workflow()
async def d_durable_calls_async(to: str) -> str:
    await reg.sleep_async(60)
    assert_type(await reg.now_async(), datetime)
    await reg.send_async(to, "hello")
    return await reg.uuid4_async()


queue = engine.queue("q")
d_queue = reg.queue("dq")

# -- starts: arguments checked, the result typed ---------------------------------
assert_type(engine.start(crawl, "u"), durably.WorkflowHandle[int])
assert_type(engine.start(crawl, "u", depth=2), durably.WorkflowHandle[int])
assert_type(engine.start(crawl, "u").result(), int)
assert_type(engine.start(crawl_async, "u").result(), str)  # awaited type of an async workflow
assert_type(engine.start(d_flow, 1).result(), str)
assert_type(engine.start(d_flow_async, 1).result(), int)
assert_type(engine.start("by.name", 1), durably.WorkflowHandle[Any])
assert_type(engine.run(crawl, "u"), int)
assert_type(engine.run(crawl_async, "u"), str)
assert_type(engine.run("by.name"), Any)
assert_type(engine.handle("id"), durably.WorkflowHandle[Any])
# options keep the result type (PEP 612: the workflow's own arguments are not checked then)
assert_type(engine.start(crawl, "u", workflow_id="w1"), durably.WorkflowHandle[int])
assert_type(engine.run(crawl, "u", timeout=5.0), int)
assert_type(queue.enqueue(crawl, "u"), durably.WorkflowHandle[int])
assert_type(queue.enqueue(crawl, "u", priority=1), durably.WorkflowHandle[int])
assert_type(d_queue.enqueue(d_flow, 1), durably.WorkflowHandle[str])
assert_type(engine.enqueue("q", crawl, "u"), durably.WorkflowHandle[int])
assert_type(crawl("u"), int)  # called directly
assert_type(d_flow(1), str)

# options apart: every argument checked, the result typed
assert_type(engine.options(workflow_id="w2", timeout=5.0).start(crawl, "u", depth=2), durably.WorkflowHandle[int])
assert_type(engine.options(workflow_id="w3").run(crawl_async, "u"), str)
assert_type(engine.options().start("by.name"), durably.WorkflowHandle[Any])
engine.options(workflow_id="w4").start(crawl, 1)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]
engine.options(timeout=1.0).run(d_flow)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue]

engine.start(crawl, 1)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]
engine.start(crawl)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue]
engine.start(crawl, "u", nope=1)  # type: ignore[call-arg, arg-type]  # pyright: ignore[reportCallIssue]
engine.run(d_flow, "x")  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]
queue.enqueue(crawl, 1)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]
crawl(1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
x: str = engine.run(crawl, "u")  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]


async def starts_async() -> None:
    handle = await engine.start_async(crawl_async, "u")
    assert_type(handle, durably.WorkflowHandle[str])
    assert_type(await handle.result_async(), str)
    assert_type(await queue.enqueue_async(crawl, "u"), durably.WorkflowHandle[int])
    assert_type(await d_queue.enqueue_async(d_flow, 1), durably.WorkflowHandle[str])
    assert_type(await engine.options(workflow_id="w5").start_async(crawl, "u"), durably.WorkflowHandle[int])
