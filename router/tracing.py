"""Traces of the router's requests (OpenTelemetry); off unless an OTLP endpoint is set.

A traced request is one server span per RPC, which continues the W3C trace context a client
sends; the servicer sets the request's task, route, cache generation, model version and
outcome on it. Its children: the in-process cache tier, the Redis read, the model route of
each version asked, and under that each Triton call, whose metadata carries the trace context
on to Triton. No span holds a request's text.

With tracing off no server span is started, and every tracer is the API's no-op one, whose
spans record nothing.
"""

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import grpc
from opentelemetry import propagate, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from router.settings import RouterSettings

__all__ = ["NO_TRACER", "end_rpc", "rpc_span", "trace_headers", "tracer_of", "tracer_provider"]

NO_TRACER: trace.Tracer = trace.NoOpTracer()
_INSTRUMENTATION = "switchyard.router"
_SERVER_ERRORS = frozenset({
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
})  # fmt: skip


def tracer_provider(settings: "RouterSettings") -> "TracerProvider | None":
    """The provider exporting to the settings' OTLP endpoint (batched, off the request path);
    None when none is set."""
    if not settings.tracing_otlp_endpoint:
        return None
    # Imported here: the SDK and the exporter load only where tracing is on.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.tracing_service_name}),
        # A client's sampling decision stands; traces started here keep the ratio.
        sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)),
    )
    exporter = OTLPSpanExporter(
        endpoint=settings.tracing_otlp_endpoint, insecure=settings.tracing_otlp_insecure
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_of(provider: "TracerProvider | None") -> trace.Tracer:
    return NO_TRACER if provider is None else provider.get_tracer(_INSTRUMENTATION)


def rpc_span(
    tracer: trace.Tracer, service: str, method: str, context: grpc.aio.ServicerContext
) -> AbstractContextManager[trace.Span]:
    """The server span of one RPC, in the trace the caller's W3C context names (a new one
    without it); the RPC sets its status (`end_rpc`). A span of its own rather than the gRPC
    instrumentation's interceptor: any grpc.aio interceptor moves every call onto a slower
    path, and the bench measured that cost on requests sampled out too."""
    if tracer is NO_TRACER:
        return nullcontext(trace.INVALID_SPAN)
    parent = propagate.extract(dict(context.invocation_metadata() or ()))
    return tracer.start_as_current_span(
        f"{service}/{method}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system.name": "grpc", "rpc.method": f"{service}/{method}"},
        record_exception=False,
        set_status_on_exception=False,
    )


def end_rpc(span: trace.Span, code: grpc.StatusCode, message: str) -> None:
    """The RPC's outcome on its span: the status code, and an error status only for a
    server-side failure (OpenTelemetry's convention for gRPC servers: a client's bad request
    is not the server's error)."""
    span.set_attribute("rpc.response.status_code", code.name)
    if code in _SERVER_ERRORS:
        span.set_status(trace.Status(trace.StatusCode.ERROR, message))


def trace_headers() -> dict[str, str] | None:
    """The W3C trace context of the current span (sampled or not), as metadata of an outgoing
    call; None outside any trace (tracing off)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
