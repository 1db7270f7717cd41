"""One trace from a legacy `campaign.update` (Ready, Immediate) to the SMTP send of each of its messages.

Herald's processes are subprocesses of `herald run`, so an in-memory exporter inside them could not be read from
here. Instead this module's Herald (its own database and NATS, mail to the SMTP recorder in this process) exports
by real OTLP/HTTP, configured only by the standard OTEL_* variables, to a receiver in this process that decodes
the export requests with opentelemetry-proto. The test sends the Ready update with a traceparent of its own and
rebuilds the trace from what every process exported: each span's parent must be in it, up to the test's.
The propagation pieces are tested in-process with the SDK's InMemorySpanExporter
(tests/integration/test_trace_propagation.py).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from tests.conftest import Backing, free_port
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    audience,
    create_campaign,
    create_email,
    delivery_herald,
    eventually,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # opentelemetry.proto.trace.v1.Span.SpanKind


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, object]


def _value(value: common_pb2.AnyValue) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (POST /v1/traces, protobuf) that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ExportedSpan(
                            service=str(resource.get("service.name", "")),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        )
                    )
        return web.Response(
            body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def trace(self, trace_id: str) -> list[ExportedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def receiver() -> AsyncIterator[OtlpReceiver]:
    running = OtlpReceiver()
    await running.start()
    try:
        yield running
    finally:
        await running.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def herald(
    backing: Backing, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DeliveryHerald]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        # Spans leave each process within 0.2 s rather than 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "HERALD_DELIVERY_BATCH_SIZE": "2",
    }
    async with delivery_herald(backing, tmp_path_factory.mktemp("traces"), env) as running:
        yield running


async def test_a_legacy_ready_update_and_the_smtp_sends_of_its_messages_are_one_trace(
    herald: DeliveryHerald, receiver: OtlpReceiver
) -> None:
    api = herald.api
    user = await herald.new_user()
    domain, _, list_id = await audience(herald, user, 3)
    email_id = await create_email(api, user)
    campaign_id = await create_campaign(api, user, email_id, [list_id], name="Traced")

    # The caller's own trace: the legacy request joins it, as a request from a traced client would.
    trace_id, caller_span = os.urandom(16).hex(), os.urandom(8).hex()
    async with api.session.post(
        api.base_url + "/api.php",
        json={
            "Command": "campaign.update",
            "APIKey": user.api_key,
            "CampaignID": campaign_id,
            "CampaignStatus": "Ready",
        },
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
    ) as response:
        assert response.status == 200
        assert (await response.json(content_type=None))["Success"] is True
    assert await wait_for_status(api, user, campaign_id, "Sent", within=60) == "Sent"
    assert await herald.recorder.wait_for(domain, 3, within=30) == 3

    async def all_sends_exported() -> list[ExportedSpan] | None:
        # A span is exported once it ends: a batch's span after its sends', the request's after the call's.
        spans = receiver.trace(trace_id)
        ids = {span.span_id for span in spans}
        complete = sum(span.parent_id not in ids for span in spans) == 1
        return spans if complete and sum(span.name == "smtp.send" for span in spans) == 3 else None

    spans = await eventually(all_sends_exported, within=20, interval=0.2)
    assert spans is not None, sorted({(s.service, s.name) for s in receiver.trace(trace_id)})

    by_id = {span.span_id: span for span in spans}
    # Connected: every span's parent is in the trace, except the request's, whose parent is the caller's.
    roots = [span for span in spans if span.parent_id not in by_id]
    assert [(root.service, root.name, root.parent_id) for root in roots] == [
        ("herald-translator", "POST /api.php", caller_span)
    ]
    assert roots[0].kind == SERVER
    assert roots[0].attributes["herald.command"] == "campaign.update"

    def path_to_root(span: ExportedSpan) -> list[tuple[str, str]]:
        path = [(span.service, span.name)]
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            path.append((span.service, span.name))
        return path[::-1]

    sends = [span for span in spans if span.name == "smtp.send"]
    assert {span.attributes["herald.campaign_id"] for span in sends} == {campaign_id}
    assert len({span.attributes["herald.recipient_id"] for span in sends}) == 3
    namespace = herald.system.env["HERALD_NATS_NAMESPACE"]
    send_requested = f"{namespace}.events.campaign.send_requested"
    for send in sends:
        assert send.kind == CLIENT
        hops = path_to_root(send)
        # Every hop of the path, in order (other spans may sit between them).
        expected = [
            ("herald-translator", "POST /api.php"),
            ("herald-translator", "/herald.campaign.v1.CampaignService/UpdateCampaign"),
            ("herald-campaign", "/herald.campaign.v1.CampaignService/UpdateCampaign"),
            ("herald-campaign", "campaign.start_sending"),
            ("herald-campaign", f"{send_requested} publish"),
            ("herald-delivery", f"{send_requested} process"),
        ]
        assert [hop for hop in hops if hop in expected] == expected, hops
        tail = hops[len(hops) - 3 :]
        assert [name.rsplit(" ", 1)[-1] for _, name in tail] == ["publish", "process", "smtp.send"], hops
        assert tail[0][0] == "herald-delivery" and tail[1][0] == "herald-delivery-worker", hops
    kinds = {(span.service, span.name): span.kind for span in spans}
    assert kinds[("herald-campaign", f"{send_requested} publish")] == PRODUCER
    assert kinds[("herald-delivery", f"{send_requested} process")] == CONSUMER
    # Delivery's calls while queueing are in the trace too: the audience it streamed, on both sides.
    assert ("herald-audience", "/herald.audience.v1.AudienceService/StreamRecipients") in kinds
