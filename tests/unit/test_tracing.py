"""services/common/tracing.py without any process or server: when traces are on, and the log processor."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common import tracing


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def test_log_lines_written_inside_a_span_carry_its_trace_and_span_ids(exported: InMemorySpanExporter) -> None:
    lines: list[dict[str, object]] = []

    def keep(_: object, __: str, event: MutableMapping[str, object]) -> MutableMapping[str, object]:
        lines.append(dict(event))
        raise structlog.DropEvent

    logger = structlog.wrap_logger(None, processors=[tracing.add_trace_ids, keep])
    logger.info("outside")
    with tracing.span("work"):
        logger.info("inside")
    [work] = exported.get_finished_spans()
    assert "trace_id" not in lines[0]
    assert lines[1]["trace_id"] == f"{work.context.trace_id:032x}"
    assert lines[1]["span_id"] == f"{work.context.span_id:016x}"


def test_traces_are_exported_only_when_an_otlp_endpoint_is_set() -> None:
    assert tracing.configured_endpoint({}) is None
    assert tracing.configured_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == (
        "http://collector:4318"
    )
    assert tracing.configured_endpoint({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert (
        tracing.configured_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
        is None
    )
    assert (
        tracing.configured_endpoint(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
        )
        is None
    )
    assert tracing.start("test", {}) is False and not tracing.enabled()
    assert tracing.protocol({}) == "http/protobuf"
    assert tracing.protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == "grpc"
    with pytest.raises(ValueError, match="http/json"):
        tracing.protocol({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})
