"""services/common/tracing.py without any process or server: when traces are on, and the log processor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path

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


# Run in a process of its own: logging's configuration is global, and other tests' logs must not change.
_LOGGING_SCRIPT = """
import structlog
from opentelemetry.sdk.trace import TracerProvider
from services.common import tracing
from services.common.logging import configure_logging

tracing.use(TracerProvider())
configure_logging("INFO", "json", process="test", trace_ids=True)
log = structlog.get_logger()
log.info("outside")
with tracing.span("work") as span:
    context = span.get_span_context()
    print(f"{context.trace_id:032x} {context.span_id:016x}", flush=True)
    log.info("inside")
"""


def test_configured_logging_writes_the_trace_and_span_ids_of_the_current_span() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _LOGGING_SCRIPT], cwd=root, capture_output=True, text=True, timeout=60, check=True
    )
    trace_id, span_id = done.stdout.split()
    outside, inside = (json.loads(line) for line in done.stderr.splitlines())
    assert outside["event"] == "outside" and "trace_id" not in outside
    assert inside["event"] == "inside"
    assert (inside["trace_id"], inside["span_id"]) == (trace_id, span_id)


def _serve(service: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", service],
        cwd=Path(__file__).resolve().parents[2],
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_process_refuses_to_start_with_an_otlp_protocol_it_cannot_export_by() -> None:
    done = _serve(
        "tag",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
    )
    assert done.returncode != 0
    assert "tag: OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported" in done.stderr


def test_tracing_starts_with_either_otlp_protocol() -> None:
    for chosen in tracing.PROTOCOLS:
        script = (
            "from services.common import tracing\n"
            "assert tracing.start('tag')\n"
            "assert tracing.grpc_server_interceptors() and tracing.grpc_client_interceptors()\n"
            "print(type(tracing._provider._active_span_processor._span_processors[0].span_exporter).__module__)\n"
        )
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": chosen}
        env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=Path(__file__).resolve().parents[2],
            env={**env, **environ},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        expected = "grpc" if chosen == "grpc" else "http"
        assert done.stdout.strip() == f"opentelemetry.exporter.otlp.proto.{expected}.trace_exporter", done.stdout
