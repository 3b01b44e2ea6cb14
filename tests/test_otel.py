"""OpenTelemetry (durably/_otel.py), with the SDK's in-memory exporter and
metric reader: spans and their attributes, a user's span nested in a step
body, child workflows, start() joining the caller's trace, the attempts of a
workflow linked across a SIGKILL and a recovery in another process, and
metric values against what ran. On both backends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="OpenTelemetry tests skipped: opentelemetry-sdk is not installed")

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import durably
from durably import telemetry

WORKER = str(Path(__file__).with_name("_otelworker.py"))


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()

    def finished(self, prefix: str = "") -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name.startswith(prefix)]

    def metric(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """A metric's points: sorted attributes -> value (sums) or count (histograms)."""
        points: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            key = tuple(sorted((p.attributes or {}).items()))
                            points[key] = getattr(p, "value", None) if hasattr(p, "value") else p.count
        return points


def _reset_globals() -> None:
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()


@pytest.fixture(scope="module")
def _providers() -> Iterator[Otel]:
    """The global providers, set once for this module and taken away after
    (the rest of the suite runs without telemetry)."""
    otel = Otel()
    _reset_globals()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(otel.spans))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[otel.reader]))
    yield otel
    _reset_globals()


@pytest.fixture
def otel(_providers: Otel) -> Otel:
    _providers.spans.clear()
    return _providers


def _engine(db_path: str) -> durably.Engine:
    return durably.Engine(db_path)


def test_nothing_configured_means_no_telemetry(tmp_path: Path) -> None:
    # (runs before the module's providers are set: nothing is configured yet)
    _reset_globals()
    assert telemetry.configured() == (False, False)
    engine = durably.Engine(str(tmp_path / "t.db"))
    with engine:
        assert engine.stats().journal_records >= 0  # opened and ran without a telemetry object


def test_spans_of_a_workflow_its_steps_and_waits(otel: Otel, db_path: str) -> None:
    engine = _engine(db_path)
    user = trace.get_tracer("user")

    @engine.step(name="add")
    def add(a: int, b: int) -> int:
        with user.start_as_current_span("user.http"):  # an instrumented call in the body
            return a + b

    @engine.transaction(name="note")
    def note(db: durably.Tx, n: int) -> None:
        db.execute("SELECT 1")

    @engine.workflow(name="flow")
    def flow(x: int) -> int:
        y = add(x, 1)
        note(y)
        engine.sleep(0.01)
        return y

    with engine:
        assert engine.run(flow, 1) == 2
    [attempt] = otel.finished("durably.workflow")
    [step] = otel.finished("durably.step")
    [tx] = otel.finished("durably.transaction")
    [sleep] = otel.finished("durably.sleep")
    [http] = otel.finished("user.http")
    wid = attempt.attributes["durably.workflow.id"]
    assert attempt.name == "durably.workflow flow"
    assert attempt.attributes["durably.workflow.outcome"] == "SUCCESS"
    assert attempt.attributes["durably.workflow.attempt"] == 1 and attempt.attributes["durably.replayed"] is False
    assert dict(step.attributes) == {
        "durably.workflow.id": wid,
        "durably.workflow.name": "flow",
        "durably.step.name": "add",
        "durably.step.position": 0,
        "durably.replayed": False,
        "durably.step.outcome": "success",
        "durably.step.retries": 0,
    }
    assert (tx.attributes["durably.step.position"], sleep.attributes["durably.step.position"]) == (1, 2)
    for span in (step, tx, sleep):
        assert span.parent.span_id == attempt.context.span_id
    assert http.parent.span_id == step.context.span_id  # the user's span nests in the step's
    assert len({s.context.trace_id for s in (attempt, step, tx, sleep, http)}) == 1


def test_async_steps_retries_and_errors(otel: Otel, db_path: str) -> None:
    engine = _engine(db_path)
    user = trace.get_tracer("user")
    tries: list[int] = []

    @engine.step(name="flaky", retries=2, initial_delay=0.001)
    async def flaky() -> int:
        tries.append(1)
        with user.start_as_current_span("user.async"):
            if len(tries) < 3:
                raise OSError("again")
        return 5

    @engine.step(name="boom")
    async def boom() -> None:
        raise ValueError("no")

    @engine.workflow(name="aflow")
    async def aflow() -> int:
        n = await flaky()
        await engine.sleep_async(0.01)
        await boom()
        return n

    async def main() -> None:
        async with engine:
            handle = await engine.start_async(aflow, workflow_id="a-1")
            with pytest.raises(durably.WorkflowFailedError):
                await handle.result_async(timeout=20)

    asyncio.run(main())
    steps = {s.attributes["durably.step.name"]: s for s in otel.finished("durably.step")}
    assert steps["flaky"].attributes["durably.step.retries"] == 2
    assert [e.name for e in steps["flaky"].events] == ["durably.retry", "durably.retry"]
    assert steps["boom"].attributes["durably.step.outcome"] == "error"
    assert all(u.parent.span_id == steps["flaky"].context.span_id for u in otel.finished("user.async"))
    [attempt] = otel.finished("durably.workflow")
    assert attempt.attributes["durably.workflow.outcome"] == "ERROR"
    assert attempt.status.status_code == trace.StatusCode.ERROR
    [sleep] = otel.finished("durably.sleep")
    assert sleep.parent.span_id == attempt.context.span_id


def test_start_joins_the_callers_trace_and_children_nest(otel: Otel, db_path: str) -> None:
    engine = _engine(db_path)

    @engine.workflow(name="kid")
    def kid(x: int) -> int:
        return x * 2

    @engine.workflow(name="parent")
    def parent(x: int) -> int:
        return kid(x) + 1

    with engine:
        with trace.get_tracer("app").start_as_current_span("request") as request:
            assert engine.run(parent, 3) == 7
    spans = {s.attributes.get("durably.workflow.name"): s for s in otel.finished("durably.workflow")}
    assert spans["parent"].parent.span_id == request.get_span_context().span_id
    assert spans["kid"].parent.span_id == spans["parent"].context.span_id
    assert {s.context.trace_id for s in spans.values()} == {request.get_span_context().trace_id}


def test_metrics_count_what_ran(otel: Otel, db_path: str) -> None:
    engine = _engine(db_path)

    @engine.step(name="s")
    def s(i: int) -> int:
        return i

    @engine.workflow(name="ok")
    def ok(n: int) -> int:
        return sum(s(i) for i in range(n))

    @engine.workflow(name="bad")
    def bad() -> None:
        s(0)
        raise RuntimeError("x")

    names = ("durably.steps", "durably.workflows.ended", "durably.workflows.started")
    before = {name: otel.metric(name) for name in names}  # counters are cumulative: compare deltas

    def delta(name: str, *attributes: tuple[str, Any]) -> Any:
        key = tuple(sorted(attributes))
        return otel.metric(name).get(key, 0) - before[name].get(key, 0)

    with engine:
        for n in (3, 4):
            engine.run(ok, n)
        with pytest.raises(durably.WorkflowFailedError):
            engine.run(bad)
        batches = otel.metric("durably.commit.batch_size")
        records = otel.metric("durably.journal.records")
        stats = engine.stats()
    ok_name, bad_name = ("durably.workflow.name", "ok"), ("durably.workflow.name", "bad")
    assert delta("durably.steps", ("durably.step.outcome", "success"), ok_name) == 7
    assert delta("durably.steps", ("durably.step.outcome", "success"), bad_name) == 1
    assert delta("durably.workflows.ended", ok_name, ("durably.workflow.status", "SUCCESS")) == 2
    assert delta("durably.workflows.ended", bad_name, ("durably.workflow.status", "ERROR")) == 1
    assert delta("durably.workflows.started", ok_name) == 2
    # this open's writer: 3 starts + 8 steps + 3 ends (and its own writes), each batch measured
    [mine] = [k for k in records if dict(k)["durably.executor"] == engine.executor_id]
    assert records[mine] == stats.journal_records >= 14
    assert batches[mine] == stats.journal_batches >= 1


def _spawn(db: str, out: str, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, WORKER, db, out, mode], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )


def test_attempts_are_linked_across_a_sigkill_and_recovery(otel: Otel, db_path: str, tmp_path: Path) -> None:
    out = str(tmp_path / "spans.json")
    first = _spawn(db_path, out, "crash")
    try:
        deadline = time.monotonic() + 60
        while not Path(out + ".ready").exists():
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the worker never reached its second step"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    attempt_one = Path(out + ".first").read_text()
    second = _spawn(db_path, out, "recover")
    _stdout, stderr = second.communicate(timeout=90)
    assert second.returncode == 0, stderr
    spans = json.loads(Path(out).read_text())
    [attempt] = [s for s in spans if s["name"] == "durably.workflow crashy"]
    assert attempt["links"] == [attempt_one]  # the first attempt's span, as stored with the workflow
    assert attempt["parent"] == attempt_one  # the trace goes on
    assert attempt["traceparent"].split("-")[1] == attempt_one.split("-")[1]
    assert attempt["attributes"]["durably.workflow.attempt"] == 2
    assert attempt["attributes"]["durably.replayed"] is True
    steps = {s["attributes"]["durably.step.name"]: s for s in spans if s["name"].startswith("durably.step")}
    assert steps["first"]["attributes"]["durably.replayed"] is True
    assert steps["second"]["attributes"]["durably.replayed"] is False
    if not db_path.startswith("postgresql"):
        import apsw

        conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
        [(stored,)] = conn.execute("SELECT trace FROM workflows WHERE workflow_id = 'otel-crash'").fetchall()
        assert stored == attempt_one
        conn.close()


def test_a_sampled_out_workflow_makes_no_step_spans_and_its_steps_are_counted(otel: Otel, db_path: str) -> None:
    # ParentBased(ALWAYS_OFF): the attempt's span does not record, so its
    # steps make none (a ParentBased sampler would drop them; making them
    # would cost more than the step); the step metric still counts them.
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    sampled_out = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    sampled_out.add_span_processor(SimpleSpanProcessor(otel.spans))
    saved = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = sampled_out  # (set-once global: swapped for this test)
    try:
        engine = _engine(db_path)

        @engine.step(name="a")
        async def a(i: int) -> int:
            return i

        @engine.step(name="b")
        def b(i: int) -> int:
            return i

        @engine.workflow(name="quiet")
        async def quiet(n: int) -> int:
            return sum([await a(i) for i in range(n)]) + await b(n)

        before = otel.metric("durably.steps")
        key = tuple(sorted((("durably.workflow.name", "quiet"), ("durably.step.outcome", "success"))))
        with engine:
            assert engine.run(quiet, 3) == 6
            counted = otel.metric("durably.steps").get(key, 0) - before.get(key, 0)
    finally:
        trace._TRACER_PROVIDER = saved
    assert counted == 4
    assert otel.finished("durably.") == []
