"""Where each Herald process serves its Prometheus metrics, the OpenTelemetry meter behind its gRPC instruments,
and the loop that samples gauges which need a query.

Herald's own metrics are prometheus-client instruments; the gRPC request metrics are OpenTelemetry instruments
(services/common/grpc_metrics.py) that the OpenTelemetry Prometheus exporter adds to the same registry, so one
`GET /metrics` answers both. docs/operations.md ("Metrics") lists every metric.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from opentelemetry import metrics as otel_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from services.common import health
from services.common.config import Settings
from services.common.logging import RepeatingFailure

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
    """Serves GET /metrics, and GET /livez and /readyz (services/common/health.py), on the process's metrics port,
    if it has one; stops the process when it is taken."""
    port = metrics_port(settings, process)
    if not port:
        return
    try:
        _start_server(settings.bind, port)
    except OSError as exc:
        variable = f"HERALD_{PORT_SETTINGS[process].upper()}"
        raise SystemExit(
            f"{process}: cannot serve metrics on {settings.bind}:{port} ({exc.strerror or exc}); "
            f"set {variable} to a free port, or 0 for none"
        ) from None
    log.info("serving metrics", process=process, address=f"{settings.bind}:{port}")


async def sample_every(seconds: float, sample: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Runs `sample` now and then every `seconds` until `stop`; a failed sample is logged and tried again."""
    failing = RepeatingFailure("metrics sample failed", sample=getattr(sample, "__qualname__", "?"))
    while not stop.is_set():
        try:
            await sample()
        except Exception as exc:
            # The database or NATS is away: the gauges keep their last values until the next sample.
            failing.failed(exc)
        else:
            failing.recovered()
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            pass


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes are not logged: one line each every few seconds says nothing."""


def _health_app(metrics_app: Any) -> Any:
    """The WSGI app of a metrics port: /livez and /readyz from the process's health, anything else the metrics."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/livez", "/readyz"):
            return metrics_app(environ, start_response)
        if path == "/livez":
            ok = health.PROCESS.alive()
            body: dict[str, Any] = (
                {"status": "ok"} if ok else {"status": "stuck", "down": {"event_loop": "no answer"}}
            )
        else:
            ok = health.PROCESS.ready
            body = health.PROCESS.body()
        payload = json.dumps(body).encode()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return app


def _start_server(bind: str, port: int) -> None:
    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET

    server = make_server(bind, port, _health_app(make_wsgi_app(REGISTRY)), Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
