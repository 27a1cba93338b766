"""OpenTelemetry spans, with `--tracing on` and the `otel` extra (pip install 'jitnet[otel]').

A SERVER span per call, named `<service>/<method>` as OpenTelemetry's RPC conventions say,
with rpc.* attributes, the status code, and jitnet.model_id / jitnet.rows when the request has
them; its parent is the W3C trace context (`traceparent`) of the call's metadata, when sent.
Train's chunks (jitnet.train.chunk) and commits (jitnet.store.commit) become child spans,
drawn from the events.Events reports after the fact, with their real start and end times.

The tracer provider: the one the process configured (opentelemetry-instrument, or a test's),
else one made here from the standard variables: OTEL_SERVICE_NAME (default jitnet),
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_EXPORTER (otlp, the default, over gRPC to
OTEL_EXPORTER_OTLP_ENDPOINT; console; none), OTEL_TRACES_SAMPLER, OTEL_BSP_*.

Nothing imports this module, nor opentelemetry, unless tracing is on.
"""

from __future__ import annotations

import os
import time

import grpc

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # the extra is not installed
    raise RuntimeError("--tracing needs OpenTelemetry: pip install 'jitnet[otel]'") from exc

# OpenTelemetry's gRPC conventions: a server span is an error for these codes only (the
# others are the caller's doing).
SERVER_ERRORS = frozenset((grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                           grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                           grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS))


class Tracing:
    """Starts and ends call spans, and draws child spans inside the running call's span."""

    def __init__(self):
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):  # nobody configured one
            provider = _provider_from_environment()
            trace.set_tracer_provider(provider)
            provider = trace.get_tracer_provider()
        self._provider = provider
        self.tracer = trace.get_tracer("jitnet")

    def start(self, full_method: str, metadata, attributes: dict):
        """A SERVER span for a call, made current; returns (span, token for `end`)."""
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        parent = propagate.extract(carrier)
        service, _, method = full_method.lstrip("/").rpartition("/")
        span = self.tracer.start_span(
            f"{service}/{method}", context=parent, kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                        **attributes})
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def end(self, span, token, code: grpc.StatusCode, attributes: dict) -> None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        for key, value in attributes.items():
            span.set_attribute(key, value)
        if code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()
        otel_context.detach(token)

    @staticmethod
    def trace_id(span) -> str:
        return format(span.get_span_context().trace_id, "032x")

    def child(self, name: str, seconds: float, attributes: dict) -> None:
        """A finished span of `seconds` ending now, under the running call's span (none
        outside a call)."""
        if not trace.get_current_span().get_span_context().is_valid:
            return
        end = time.time_ns()
        span = self.tracer.start_span(name, start_time=end - int(seconds * 1e9),
                                      attributes=attributes)
        span.end(end_time=end)

    def flush(self) -> None:
        force_flush = getattr(self._provider, "force_flush", None)
        if force_flush is not None:
            force_flush()


def _provider_from_environment():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "jitnet"}))
    provider = TracerProvider(resource=resource)
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    for name in (n.strip().lower() for n in names.split(",")):
        if name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        elif name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name not in ("none", ""):
            raise RuntimeError(f"OTEL_TRACES_EXPORTER={names!r}: jitnet knows otlp, console "
                               "and none")
    return provider


def _otlp_exporter():
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError(f"the OTLP exporter for protocol {protocol} is not installed "
                           "(pip install 'jitnet[otel]' brings the grpc one)") from exc
    return OTLPSpanExporter()
