"""OpenTelemetry's cost on the hot path: async 1,024 x 10 (as
``retention.async``) with the API absent, installed but not configured, and
with the SDK exporting to a no-op exporter (spans through a batch processor,
metrics aggregated; every workflow traced, or one in ten). run.py pairs
them: disabled / absent >= 0.97 and sdk / absent >= 0.85 are the targets
(issue 22). Each runs in a process of
its own (run.py's children), so the global providers do not leak."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from . import chain_engine, cleanup, fresh_path, register


def _configure(mode: str) -> None:
    if mode == "absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # import opentelemetry -> ImportError
        return
    if mode == "disabled":
        return  # the API installed, no provider set
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Nothing(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    # "sdk": every workflow traced (the SDK's default sampler); "sampled":
    # one in ten (ParentBased(TraceIdRatioBased(0.1)), as a service in
    # production would set); the other nine make no step spans at all.
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.1))) if mode == "sampled" else TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Nothing()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def otel_async(workdir: Path, quick: bool, mode: str, count: int = 1024, rounds: int = 10) -> dict[str, Any]:
    """``rounds`` x (``count`` concurrent async workflows of 10 steps)."""
    _configure(mode)

    path = fresh_path(workdir, f"otel-{mode}")
    engine, chain = chain_engine(path)

    async def go(n: int) -> None:
        handles = await asyncio.gather(*[engine.start_async(chain, 10) for _ in range(n)])
        assert await asyncio.gather(*[h.result_async() for h in handles]) == [10] * n

    with engine:
        asyncio.run(go(64))
        t0 = time.perf_counter()
        for _ in range(rounds if not quick else 2):
            asyncio.run(go(count))
        wall = time.perf_counter() - t0
    cleanup(path)
    return {"steps_per_s": (rounds if not quick else 2) * count * 10 / wall}


for _mode in ("absent", "disabled", "sdk", "sampled"):
    register(f"otel.async[c=1024,{_mode}]", otel_async, "observability", mode=_mode)
