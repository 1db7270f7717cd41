"""gRPC request metrics, server and client side: one OpenTelemetry histogram each of call durations, by service,
method and status code, whose Prometheus `_count` series are the request counts.

services/common/grpcutil.py records into them from its interceptors (the server's CallInterceptor and the
channels' ClientInterceptor). The instruments are made on first use from the global meter provider, which
services/common/metrics.py sets up with the Prometheus exporter when a process starts; before that (or in a
process that never sets one) the API's no-op provider makes recording cost next to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from opentelemetry import metrics as otel_metrics

SERVER_DURATION = "rpc.server.duration"
CLIENT_DURATION = "rpc.client.duration"
# Their names in Prometheus (the exporter turns dots into underscores and adds the unit).
SERVER_DURATION_PROMETHEUS = "rpc_server_duration_seconds"
CLIENT_DURATION_PROMETHEUS = "rpc_client_duration_seconds"

# Seconds: from a cached read (a fraction of a millisecond) to a deadline-long wait.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MethodDurations:
    """Durations of one full method's calls (`/package.Service/Method`) on one side, by status code.

    The attributes of each (method, code) are built once: a call only looks them up and records.
    """

    def __init__(self, histogram: otel_metrics.Histogram, full_method: str | bytes) -> None:
        self._histogram = histogram
        name = full_method.decode(errors="replace") if isinstance(full_method, bytes) else full_method
        service, _, method = name.lstrip("/").rpartition("/")
        self._base = {"rpc.system": "grpc", "rpc.service": service or "unknown", "rpc.method": method}
        self._attributes: dict[grpc.StatusCode, Mapping[str, str]] = {}

    def record(self, code: grpc.StatusCode, seconds: float) -> None:
        attributes = self._attributes.get(code)
        if attributes is None:
            attributes = self._attributes[code] = {**self._base, "rpc.grpc.status_code": code.name}
        self._histogram.record(seconds, attributes)


class Durations:
    """The MethodDurations of every method seen on one side (server or client) of a process."""

    def __init__(
        self, name: str, description: str, meter_provider: otel_metrics.MeterProvider | None = None
    ) -> None:
        self._name = name
        self._description = description
        # None: the global provider, as it is when the first call is recorded.
        self._meter_provider = meter_provider
        self._histogram: otel_metrics.Histogram | None = None
        self._methods: dict[str | bytes, MethodDurations] = {}

    def of(self, full_method: str | bytes) -> MethodDurations:
        """The durations of `full_method` (grpc.aio gives clients the method as bytes, servers as str)."""
        durations = self._methods.get(full_method)
        if durations is None:
            if self._histogram is None:
                meter = otel_metrics.get_meter("herald.grpc", meter_provider=self._meter_provider)
                self._histogram = meter.create_histogram(
                    self._name,
                    unit="s",
                    description=self._description,
                    explicit_bucket_boundaries_advisory=BUCKETS,
                )
            durations = self._methods[full_method] = MethodDurations(self._histogram, full_method)
        return durations


SERVER = Durations(SERVER_DURATION, "Duration of gRPC calls this process served, by method and status code")
CLIENT = Durations(CLIENT_DURATION, "Duration of gRPC calls this process made, by method and status code")
