"""The gRPC interceptors of services/common/grpcutil.py record every call's duration by method and status code, on
the server (CallInterceptor) and on the client (ClientInterceptor), into OpenTelemetry histograms.

A grpc.aio server on a free local port runs the real CallInterceptor in front of handlers registered under real
Herald method names (so that the permission table admits them); the client goes through the real ClientInterceptor.
Each test reads what was recorded from an in-memory reader of its own meter provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
import pytest_asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from services.common import auth, grpc_metrics
from services.common.errors import DomainError, ErrorKind
from services.common.grpcutil import CallInterceptor, ClientInterceptor, MeasuredChannel, StreamClientInterceptor

SECRET = "unit-test-secret-unit-test-secret"
GET_TAG = "/herald.tag.v1.TagService/GetTag"
LIST_TAGS = "/herald.tag.v1.TagService/ListTags"
STREAM = "/herald.audience.v1.AudienceService/StreamRecipients"


async def _get_tag(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"missing":
        raise DomainError(ErrorKind.NOT_FOUND, "TAG_NOT_FOUND", "no such tag")
    if request == b"slow":
        await asyncio.sleep(30)
    return b"tag:" + request


async def _list_tags(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("a bug")


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for index in range(int(request)):
        yield str(index).encode()


def _handlers() -> grpc.GenericRpcHandler:
    class Handlers(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return {
                GET_TAG: grpc.unary_unary_rpc_method_handler(_get_tag),
                LIST_TAGS: grpc.unary_unary_rpc_method_handler(_list_tags),
                STREAM: grpc.unary_stream_rpc_method_handler(_stream),
            }.get(details.method)

    return Handlers()


@dataclass
class Measured:
    channel: grpc.aio.Channel
    reader: InMemoryMetricReader
    metadata: tuple[tuple[str, str], ...]
    # A Herald service's own token, which internal RPCs such as StreamRecipients require.
    service_metadata: tuple[tuple[str, str], ...]

    def points(self, name: str) -> dict[tuple[str, str, str], HistogramDataPoint]:
        """The data points of histogram `name`, by (service, method, status code)."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[str, str, str], HistogramDataPoint] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        attributes: Any = point.attributes
                        assert attributes["rpc.system"] == "grpc"
                        key = (
                            attributes["rpc.service"],
                            attributes["rpc.method"],
                            attributes["rpc.grpc.status_code"],
                        )
                        found[key] = point
        return found

    def counts(self, name: str) -> dict[tuple[str, str, str], int]:
        return {key: point.count for key, point in self.points(name).items()}

    async def settled_counts(
        self, name: str, expected: dict[tuple[str, str, str], int]
    ) -> dict[tuple[str, str, str], int]:
        """The counts once they equal `expected`, or as they are after a few seconds: the server records a call
        after its status went out (the client may hold the answer first), and a client stream records from its
        done callback."""
        for _ in range(500):
            counts = self.counts(name)
            if counts == expected:
                break
            await asyncio.sleep(0.01)
        return counts


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield meter_provider, reader
    meter_provider.shutdown()


@pytest_asyncio.fixture(params=["client interceptor", "MeasuredChannel"])
async def measured(
    request: pytest.FixtureRequest, provider: tuple[MeterProvider, InMemoryMetricReader]
) -> AsyncIterator[Measured]:
    """A served tag service and a channel to it, measured as Herald's services measure their calls (a client
    interceptor, which forwards the principal) or as the translator does (MeasuredChannel)."""
    meter_provider, reader = provider
    server_durations = grpc_metrics.Durations(grpc_metrics.SERVER_DURATION, "server", meter_provider)
    client_durations = grpc_metrics.Durations(grpc_metrics.CLIENT_DURATION, "client", meter_provider)
    server = grpc.aio.server(interceptors=[CallInterceptor("tag", SECRET, server_durations)])
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel: grpc.aio.Channel
    if request.param == "MeasuredChannel":
        inner = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=[StreamClientInterceptor(durations=client_durations)]
        )
        channel = cast(grpc.aio.Channel, MeasuredChannel(inner, client_durations))
    else:
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            interceptors=[
                ClientInterceptor(forward_principal=False, durations=client_durations),
                StreamClientInterceptor(durations=client_durations),
            ],
        )
    token = auth.mint_token(auth.Principal(user_id=7, is_admin=False, permissions=frozenset({"*"})), SECRET, 60)
    service_token = auth.mint_token(
        auth.Principal(user_id=7, is_admin=False, permissions=frozenset({"*"}), service="campaign"), SECRET, 60
    )
    try:
        yield Measured(
            channel,
            reader,
            (("authorization", f"Bearer {token}"),),
            (("authorization", f"Bearer {service_token}"),),
        )
    finally:
        await channel.close()
        await server.stop(None)


async def test_calls_are_counted_by_method_and_status_code_on_both_sides(measured: Measured) -> None:
    get_tag = measured.channel.unary_unary(GET_TAG)
    assert await get_tag(b"1", metadata=measured.metadata) == b"tag:1"
    assert await get_tag(b"2", metadata=measured.metadata) == b"tag:2"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await get_tag(b"missing", metadata=measured.metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        await get_tag(b"3")
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await measured.channel.unary_unary(LIST_TAGS)(b"", metadata=measured.metadata)
    assert internal.value.code() == grpc.StatusCode.INTERNAL

    expected = {
        ("herald.tag.v1.TagService", "GetTag", "OK"): 2,
        ("herald.tag.v1.TagService", "GetTag", "NOT_FOUND"): 1,
        ("herald.tag.v1.TagService", "GetTag", "UNAUTHENTICATED"): 1,
        ("herald.tag.v1.TagService", "ListTags", "INTERNAL"): 1,
    }
    assert measured.counts(grpc_metrics.CLIENT_DURATION) == expected
    assert await measured.settled_counts(grpc_metrics.SERVER_DURATION, expected) == expected


async def test_a_server_stream_is_measured_once_it_ends(measured: Measured) -> None:
    call = measured.channel.unary_stream(STREAM)(b"3", metadata=measured.service_metadata)
    assert [item async for item in call] == [b"0", b"1", b"2"]
    assert await call.code() == grpc.StatusCode.OK
    expected = {("herald.audience.v1.AudienceService", "StreamRecipients", "OK"): 1}
    assert await measured.settled_counts(grpc_metrics.CLIENT_DURATION, expected) == expected
    assert await measured.settled_counts(grpc_metrics.SERVER_DURATION, expected) == expected


async def test_a_call_past_its_deadline_counts_as_deadline_exceeded_on_the_client(measured: Measured) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await measured.channel.unary_unary(GET_TAG)(b"slow", metadata=measured.metadata, timeout=0.2)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert measured.counts(grpc_metrics.CLIENT_DURATION) == {
        ("herald.tag.v1.TagService", "GetTag", "DEADLINE_EXCEEDED"): 1
    }


async def test_durations_land_in_the_buckets_of_their_size(measured: Measured) -> None:
    await measured.channel.unary_unary(GET_TAG)(b"1", metadata=measured.metadata)
    point = measured.points(grpc_metrics.SERVER_DURATION)[("herald.tag.v1.TagService", "GetTag", "OK")]
    assert tuple(point.explicit_bounds) == grpc_metrics.BUCKETS
    assert point.count == 1 and 0 < point.sum < 30
    assert sum(point.bucket_counts) == 1


def test_methods_are_split_into_service_and_method_whether_given_as_str_or_bytes() -> None:
    reader = InMemoryMetricReader()
    durations = grpc_metrics.Durations("test.duration", "test", MeterProvider(metric_readers=[reader]))
    durations.of(b"/herald.campaign.v1.CampaignService/GetCampaign").record(grpc.StatusCode.OK, 0.01)
    durations.of("/herald.campaign.v1.CampaignService/GetCampaign").record(grpc.StatusCode.OK, 0.01)
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    (point,) = metric.data.data_points
    assert dict(point.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "herald.campaign.v1.CampaignService",
        "rpc.method": "GetCampaign",
        "rpc.grpc.status_code": "OK",
    }
    assert isinstance(point, HistogramDataPoint) and point.count == 2
