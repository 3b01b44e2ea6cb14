"""OpenTelemetry, picked up at ``open()`` (extra ``durably[otel]``: the API only).

durably sends its spans and metrics to the global tracer and meter providers,
as instrumented libraries do: an application that configures OpenTelemetry
(``trace.set_tracer_provider``, ``metrics.set_meter_provider``) before it
opens its engine gets durably's telemetry with no durably-specific setup.

Each ``open()`` looks once: with the API not installed, or no provider set
(the API's default proxy, or its no-op provider), the engine keeps no
telemetry object and its step path makes no call for it at all (one
attribute read per step). A provider set after ``open()`` is seen at the
next open. ``DURABLY_OTEL=0`` turns it off whatever is configured.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._otel import Telemetry
    from .runtime.runner import Runner
    from .store.contract import StoreContract


def configured() -> tuple[bool, bool]:
    """(tracing, metrics): whether a real tracer / meter provider is set."""
    if os.environ.get("DURABLY_OTEL", "") == "0":
        return False, False
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return False, False
    tracer = trace.get_tracer_provider()
    meter = metrics.get_meter_provider()
    tracing = not isinstance(tracer, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    # The API's default meter provider is a private proxy class: told apart by name.
    metering = not isinstance(meter, metrics.NoOpMeterProvider) and type(meter).__name__ != "_ProxyMeterProvider"
    return tracing, metering


def detect(store: StoreContract, runner: Runner, executor: str) -> Telemetry | None:
    """The telemetry of one open, or None when nothing would receive it."""
    tracing, metering = configured()
    if not (tracing or metering):
        return None
    from ._otel import Telemetry

    return Telemetry(store, runner, executor, tracing, metering)


def traceparent(span: Any) -> str | None:
    """A span's context as a W3C ``traceparent`` (None if it is not valid)."""
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
