"""Where each Herald process serves its Prometheus metrics, the OpenTelemetry meter behind its gRPC instruments,
and the loop that samples gauges which need a query.

Herald's own metrics are prometheus-client instruments; the gRPC request metrics are OpenTelemetry instruments
(services/common/grpc_metrics.py) that the OpenTelemetry Prometheus exporter adds to the same registry, so one
`GET /metrics` answers both. docs/operations.md ("Metrics") lists every metric.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from opentelemetry import metrics as otel_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

from services.common.config import Settings

log = structlog.get_logger()

# The setting that holds each process's metrics port, by the name `herald serve` knows the process. The
# translator serves /metrics on HERALD_HTTP_PORT; the mail capture (a stand-in for a relay) serves none.
PORT_SETTINGS = {
    "campaign": "campaign_metrics_port",
    "tag": "tag_metrics_port",
    "audience": "audience_metrics_port",
    "delivery": "delivery_metrics_port",
    "bounce-receiver": "bounce_receiver_metrics_port",
    "delivery-worker": "delivery_worker_metrics_port",
}


def metrics_port(settings: Settings, process: str) -> int:
    """The port `process` serves /metrics on by itself (0: none)."""
    setting = PORT_SETTINGS.get(process)
    port: int = getattr(settings, setting) if setting else 0
    return port


def start(settings: Settings, process: str) -> None:
    """Sets up the process's meter and, when it has a metrics port, serves /metrics there in a thread."""
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader()],
        resource=Resource.create({"service.name": f"herald-{process}"}),
        # The Prometheus text format carries no exemplars: collecting them would only cost time on every call.
        exemplar_filter=AlwaysOffExemplarFilter(),
    )
    otel_metrics.set_meter_provider(provider)
    serve(settings, process)


def serve(settings: Settings, process: str) -> None:
    """Serves GET /metrics on the process's metrics port, if it has one; stops the process when it is taken."""
    port = metrics_port(settings, process)
    if not port:
        return
    try:
        start_http_server(port, addr=settings.bind)
    except OSError as exc:
        variable = f"HERALD_{PORT_SETTINGS[process].upper()}"
        raise SystemExit(
            f"{process}: cannot serve metrics on {settings.bind}:{port} ({exc.strerror or exc}); "
            f"set {variable} to a free port, or 0 for none"
        ) from None
    log.info("serving metrics", process=process, address=f"{settings.bind}:{port}")


async def sample_every(seconds: float, sample: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Runs `sample` now and then every `seconds` until `stop`; a failed sample is logged and tried again."""
    while not stop.is_set():
        try:
            await sample()
        except Exception as exc:
            # The database or NATS is away: the gauges keep their last values until the next sample.
            log.warning(
                "metrics sample failed",
                sample=getattr(sample, "__qualname__", "?"),
                error=str(getattr(exc, "orig", None) or exc),
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            pass
