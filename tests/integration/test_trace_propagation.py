"""Trace context across the outbox and NATS, in-process, with the SDK's InMemorySpanExporter: the unit of work's
span is kept in the outbox row, the relay's producer span is its child and puts its traceparent into the NATS
message's headers, and the consumer's span is the child of that. With tracing off, nothing is kept or sent.

Runs on the session's real PostgreSQL and NATS (the `backing` fixture); no Herald process. The whole path through
`herald run`'s processes is tests/e2e/test_traces.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from herald.campaign.v1 import campaign_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind
from sqlalchemy import text

from services.common import db, events, natsutil, tracing
from services.common.config import Settings
from services.common.natsutil import Subjects
from services.common.outbox import Outbox, OutboxRelay
from tests.conftest import Backing

pytestmark = pytest.mark.asyncio(loop_scope="session")

DELETED = campaign_pb2.CampaignDeletedEvent(owner_user_id=3, campaign_ids=[5])


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, into memory (the process's global tracer provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest_asyncio.fixture(loop_scope="session")
async def outbox(backing: Backing, tmp_path: Path) -> AsyncIterator[Outbox]:
    engine = db.make_engine(Settings(database_url=backing.database_url), pool_size=2)
    schema = f"trace_{uuid.uuid4().hex[:10]}"
    await db.migrate(engine, schema, tmp_path)  # the outbox table only
    try:
        yield Outbox(engine, schema, Subjects(f"tp{uuid.uuid4().hex[:8]}"))
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


async def kept_traceparents(outbox: Outbox) -> list[str | None]:
    async with outbox.engine.connect() as conn:
        rows = await conn.execute(text(f'SELECT traceparent FROM "{outbox.schema}".outbox ORDER BY id'))
        return [traceparent for (traceparent,) in rows]


async def relay_and_consume(
    backing: Backing, outbox: Outbox, subjects: Subjects
) -> tuple[SpanContext, dict[str, str]]:
    """Publishes the outbox's one row to a real JetStream and hands it to an events.Consumer; returns the span
    context current in the consumer's handler, and the message's headers."""
    client = await nats.connect(backing.nats_url)
    seen: list[SpanContext] = []

    async def handle(_: campaign_pb2.CampaignDeletedEvent) -> None:
        seen.append(trace.get_current_span().get_span_context())

    try:
        js = client.jetstream()
        await natsutil.ensure_events_stream(js, subjects)
        subscription = await js.pull_subscribe(
            subjects.event(events.CAMPAIGN_DELETED),
            durable=f"d{uuid.uuid4().hex[:8]}",
            stream=subjects.events_stream,
        )
        assert await OutboxRelay(outbox.engine, outbox.schema, js, asyncio.Event()).publish_pending() == 1
        messages = await subscription.fetch(batch=1, timeout=10)
        consumer = events.Consumer("tests-deleted", events.CAMPAIGN_DELETED, handle)
        await consumer.handle_fetched(messages)
        [handled_in] = seen
        return handled_in, dict(messages[0].headers or {})
    finally:
        await client.close()


def named(spans: tuple[ReadableSpan, ...], suffix: str) -> ReadableSpan:
    [found] = [span for span in spans if span.name.endswith(suffix)]
    return found


async def test_the_trace_goes_from_the_unit_of_work_through_the_outbox_row_and_nats_headers_to_the_consumer(
    backing: Backing, outbox: Outbox, exported: InMemorySpanExporter
) -> None:
    subjects = Subjects(f"tp{uuid.uuid4().hex[:8]}")
    outbox = Outbox(outbox.engine, outbox.schema, subjects)
    with tracing.span("request", kind=SpanKind.SERVER):
        request_traceparent = tracing.traceparent()
        async with outbox.unit_of_work() as work:
            work.publish(events.CAMPAIGN_DELETED, DELETED)
    assert request_traceparent is not None
    assert await kept_traceparents(outbox) == [request_traceparent]

    handled_in, headers = await relay_and_consume(backing, outbox, subjects)
    spans = exported.get_finished_spans()
    request = named(spans, "request")
    subject = subjects.event(events.CAMPAIGN_DELETED)
    publish = named(spans, f"{subject} publish")
    process = named(spans, f"{subject} process")
    assert publish.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    # One trace: request → publish (relay) → process (consumer), each the parent of the next.
    assert publish.parent is not None and publish.parent.span_id == request.context.span_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert {span.context.trace_id for span in (request, publish, process)} == {request.context.trace_id}
    # The relay's span is the message's parent (its flags say sampled).
    assert headers["traceparent"][:-2] == f"00-{publish.context.trace_id:032x}-{publish.context.span_id:016x}-"
    assert process.attributes is not None and process.attributes["messaging.destination.name"] == subject
    # The handler ran inside the consumer's span.
    assert handled_in == process.context


async def test_with_tracing_off_no_traceparent_is_kept_or_sent(backing: Backing, outbox: Outbox) -> None:
    assert not tracing.enabled()
    assert tracing.grpc_server_interceptors() == [] and tracing.grpc_client_interceptors() == []
    subjects = Subjects(f"tp{uuid.uuid4().hex[:8]}")
    outbox = Outbox(outbox.engine, outbox.schema, subjects)
    with tracing.span("request"):
        assert tracing.traceparent() is None
        async with outbox.unit_of_work() as work:
            work.publish(events.CAMPAIGN_DELETED, DELETED)
    assert await kept_traceparents(outbox) == [None]
    handled_in, headers = await relay_and_consume(backing, outbox, subjects)
    assert "traceparent" not in headers
    assert not handled_in.is_valid
