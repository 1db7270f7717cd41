"""OpenTelemetry traces: on only when the standard OTEL_* variables name an OTLP endpoint, and W3C trace context
carried where a request goes on without a gRPC call (the outbox row, the NATS message, the campaign picked later).

Off (the default), nothing is installed: no SDK tracer provider, no gRPC or HTTP tracing interceptors, no log
processor; `span` is a shared null context and `traceparent` returns None, so the outbox writes NULL.
docs/operations.md ("Traces") lists the spans and how the context crosses each hop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Tracer
from opentelemetry.trace import SpanKind as SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# Set by `use` (`start` calls it) when tracing is on; None means off, and every function here returns at once.
_tracer: Tracer | None = None
_provider: trace.TracerProvider | None = None
_W3C = TraceContextTextMapPropagator()
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()

PROTOCOLS = ("http/protobuf", "grpc")


def configured_endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP traces endpoint the standard variables name, or None when traces are not to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return endpoint.strip() or None if endpoint else None


def protocol(environ: Mapping[str, str] = os.environ) -> str:
    """The OTLP protocol (the specification's default, http/protobuf, when unset); another value is refused."""
    chosen = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    if chosen not in PROTOCOLS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={chosen!r} is not supported: use http/protobuf or grpc")
    return chosen


def start(process: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Installs the SDK tracer provider exporting by OTLP when an endpoint is configured; False (and nothing
    installed) otherwise. The exporter, sampler and batch processor read their own OTEL_* variables."""
    if configured_endpoint(environ) is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    exporter: SpanExporter
    if protocol(environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    attributes: dict[str, Any] = {"herald.process": process}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = f"herald-{process}"
    # The provider shuts down (flushing its last spans) when the process exits.
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    use(provider)
    return True


def use(provider: trace.TracerProvider | None) -> None:
    """Turns tracing on with `provider`, or off with None (`start` does; tests give a provider with an in-memory
    exporter, without making it the process's global one)."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer("herald") if provider is not None else None


def enabled() -> bool:
    return _tracer is not None


def traceparent() -> str | None:
    """The W3C traceparent of the current span, to keep with what outlives it (an outbox row, a campaign); None
    when tracing is off or no span is current."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def _context(parent: str | None) -> otel_context.Context | None:
    if not parent:
        return None
    return _W3C.extract({"traceparent": parent})


def span(
    name: str,
    *,
    parent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[str] = (),
    exceptions_fail: bool = True,
) -> contextlib.AbstractContextManager[Any]:
    """A current span named `name`, the child of the traceparent `parent` when given (else of the current span),
    linked to the traceparents `links`; a null context when tracing is off. An exception leaving it is recorded
    and fails the span, unless `exceptions_fail` is False (an HTTP redirect raised as an exception)."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(
        name,
        context=_context(parent),
        kind=kind,
        attributes=dict(attributes) if attributes else None,
        links=[Link(ctx) for ctx in _span_contexts(links)],
        record_exception=exceptions_fail,
        set_status_on_exception=exceptions_fail,
    )


def _span_contexts(traceparents: Sequence[str]) -> Iterator[trace.SpanContext]:
    for each in traceparents:
        context = _context(each)
        if context is not None:
            span_context = trace.get_current_span(context).get_span_context()
            if span_context.is_valid:
                yield span_context


def set_attributes(attributes: Mapping[str, Any]) -> None:
    """Adds attributes to the current span (nothing when tracing is off)."""
    if _tracer is not None:
        trace.get_current_span().set_attributes(dict(attributes))


def consuming(
    subject: str, headers: Sequence[Mapping[str, str] | None], durable: str
) -> contextlib.AbstractContextManager[Any]:
    """The consumer span of NATS messages handled together (often one): the child of the traceparent in the first
    one's headers, linked to the others'."""
    if _tracer is None:
        return _NO_SPAN
    traceparents = [each["traceparent"] for each in headers if each and each.get("traceparent")]
    return span(
        f"{subject} process",
        parent=traceparents[0] if traceparents else None,
        links=traceparents[1:],
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.consumer.group.name": durable,
            "messaging.batch.message_count": len(headers),
        },
    )


def publishing(subject: str, msg_id: str, parent: str) -> contextlib.AbstractContextManager[Any]:
    """The producer span of a NATS message the outbox relay publishes: the child of the row's traceparent."""
    if _tracer is None:
        return _NO_SPAN
    return span(
        f"{subject} publish",
        parent=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.message.id": msg_id,
        },
    )


def mark_error(description: str) -> None:
    """Sets the current span's status to ERROR (nothing when tracing is off)."""
    if _tracer is not None:
        trace.get_current_span().set_status(trace.Status(trace.StatusCode.ERROR, description))


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: the current span's trace_id and span_id on every log line written inside it."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


def grpc_server_interceptors() -> list[Any]:
    """The OpenTelemetry gRPC server interceptor (health and reflection calls excluded) when on; none when off."""
    if _tracer is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.instrumentation.grpc.filters import negate, service_prefix

    return [aio_server_interceptor(_provider, filter_=negate(service_prefix("grpc.")))]


def grpc_client_interceptors() -> list[Any]:
    """The OpenTelemetry gRPC client interceptors (they inject traceparent into the call's metadata) when on."""
    if _tracer is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(_provider))
