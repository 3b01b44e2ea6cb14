"""A worker process for tests/test_otel.py's crash case, with OpenTelemetry's
SDK and an in-memory exporter configured before the engine opens.

    python tests/_otelworker.py DB OUT crash    start workflow "otel-crash", write
        OUT.first (the attempt span's traceparent, seen from its first step's
        body) and block in the second step until SIGKILLed
    python tests/_otelworker.py DB OUT recover  open (recovery runs it), wait
        for the result, write the finished spans as JSON to OUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import durably

EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)


def _traceparent(ctx: trace.SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def build(engine: durably.Engine, out: str, crash: bool) -> object:
    @engine.step(name="first")
    def first() -> int:
        if crash:
            parent = trace.get_current_span().parent  # type: ignore[attr-defined]  # (the SDK's span)
            Path(out + ".first").write_text(_traceparent(parent))
        return 1

    @engine.step(name="second")
    def second() -> int:
        if crash:
            Path(out + ".ready").write_text("1")
            time.sleep(600)  # killed here
        return 2

    @engine.workflow(name="crashy")
    def crashy() -> int:
        return first() + second()

    return crashy


def _span(span: object) -> dict[str, object]:
    s: object = span
    ctx = s.context  # type: ignore[attr-defined]
    parent = s.parent  # type: ignore[attr-defined]
    return {
        "name": s.name,  # type: ignore[attr-defined]
        "traceparent": _traceparent(ctx),
        "parent": None if parent is None else _traceparent(parent),
        "links": [_traceparent(link.context) for link in s.links],  # type: ignore[attr-defined]
        "attributes": dict(s.attributes),  # type: ignore[attr-defined]
    }


def main(db: str, out: str, mode: str) -> None:
    engine = durably.Engine(db)
    workflow = build(engine, out, mode == "crash")
    with engine:
        if mode == "crash":
            engine.start(workflow, workflow_id="otel-crash")
            time.sleep(600)
        else:
            assert engine.handle("otel-crash").result(timeout=60) == 3
    Path(out).write_text(json.dumps([_span(s) for s in EXPORTER.get_finished_spans()]))


if __name__ == "__main__":
    main(*sys.argv[1:4])
