"""The unit of work against the session's real PostgreSQL: its messages commit with it or not at all, and the relay is woken after commit only.

No Herald process runs here: each test gets a schema of its own with the outbox table, as a service's
migrations make it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from herald.campaign.v1 import campaign_pb2
from sqlalchemy import text

from services.common import db, events, natsutil
from services.common.config import Settings
from services.common.natsutil import Subjects
from services.common.outbox import Outbox
from tests.conftest import Backing, eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

DELETED = campaign_pb2.CampaignDeletedEvent(owner_user_id=3, campaign_ids=[5])


class Wakes:
    """Counts the relay's wake-ups."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest_asyncio.fixture(loop_scope="session")
async def outbox(backing: Backing, tmp_path: Path) -> AsyncIterator[Outbox]:
    engine = db.make_engine(Settings(database_url=backing.database_url), pool_size=2)
    schema = f"uow_{uuid.uuid4().hex[:10]}"
    await db.migrate(engine, schema, tmp_path)  # no migrations of its own: the outbox table only
    try:
        yield Outbox(engine, schema, Subjects("unit"))
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


async def outbox_rows(outbox: Outbox) -> list[tuple[str, str, bytes]]:
    """What another connection sees in the outbox table (committed rows only)."""
    async with outbox.engine.connect() as conn:
        rows = await conn.execute(
            text(f'SELECT subject, msg_id, payload FROM "{outbox.schema}".outbox ORDER BY id')
        )
        return [(subject, msg_id, bytes(payload)) for subject, msg_id, payload in rows]


async def test_messages_are_written_with_the_commit_and_the_relay_is_woken_after_it(outbox: Outbox) -> None:
    wakes = Wakes()
    outbox.after_publishing(wakes)
    async with outbox.unit_of_work() as work:
        await work.conn.execute(text("SELECT 1"))
        work.publish(events.CAMPAIGN_DELETED, DELETED)
        work.publish(events.CAMPAIGN_DELETED, DELETED, key="once")
        work.publish(events.CAMPAIGN_DELETED, DELETED, key="once")  # the same key is queued once
        assert await outbox_rows(outbox) == [] and wakes.count == 0
    rows = await outbox_rows(outbox)
    assert [subject for subject, _, _ in rows] == ["unit.events.campaign.deleted"] * 2
    assert rows[1][1] == "events.campaign.deleted:once"
    assert events.CAMPAIGN_DELETED.decode(rows[0][2]) == DELETED
    assert wakes.count == 1


async def test_a_unit_of_work_that_raises_publishes_nothing_and_wakes_nobody(outbox: Outbox) -> None:
    wakes = Wakes()
    outbox.after_publishing(wakes)
    with pytest.raises(RuntimeError):
        async with outbox.unit_of_work() as work:
            work.publish(events.CAMPAIGN_DELETED, DELETED)
            raise RuntimeError("the change failed")
    assert await outbox_rows(outbox) == [] and wakes.count == 0


async def test_only_a_unit_of_work_that_published_wakes_the_relay(outbox: Outbox) -> None:
    wakes = Wakes()
    outbox.after_publishing(wakes)
    async with outbox.unit_of_work() as work:
        await work.conn.execute(text("SELECT 1"))
    assert wakes.count == 0
    async with outbox.unit_of_work() as work:
        # A statement of the caller's own writing outbox rows, as delivery's batch SQL does.
        await work.conn.execute(
            text(
                f'INSERT INTO "{outbox.schema}".outbox (subject, msg_id, payload) '
                "VALUES (:s, '1:1:1', convert_to('{}', 'UTF8'))"
            ),
            {"s": work.subject(events.DELIVERY_BATCH)},
        )
        work.wrote_outbox_rows()
    assert wakes.count == 1
    assert [subject for subject, _, _ in await outbox_rows(outbox)] == ["unit.delivery.batches"]


async def test_a_signed_event_is_published_only_with_its_signer(outbox: Outbox) -> None:
    request = campaign_pb2.CampaignSendRequestedEvent(campaign_id=7, owner_user_id=3, occurrence=1)
    with pytest.raises(ValueError, match="signed"):
        async with outbox.unit_of_work() as work:
            work.publish(events.CAMPAIGN_SEND_REQUESTED, request)
    assert await outbox_rows(outbox) == []


async def test_the_relay_publishes_what_a_unit_of_work_committed_and_empties_the_outbox(
    backing: Backing, outbox: Outbox
) -> None:
    subjects = Subjects(f"u{uuid.uuid4().hex[:8]}")
    outbox = Outbox(outbox.engine, outbox.schema, subjects)
    client = await nats.connect(backing.nats_url)
    stop = asyncio.Event()
    relay: asyncio.Task[None] | None = None
    try:
        js = client.jetstream()
        await natsutil.ensure_events_stream(js, subjects)
        received = await client.subscribe(subjects.event(events.CAMPAIGN_DELETED))
        relay = asyncio.create_task(outbox.relay(js, stop))
        async with outbox.unit_of_work() as work:
            work.publish(events.CAMPAIGN_DELETED, DELETED)
        message = await received.next_msg(timeout=30)
        assert events.CAMPAIGN_DELETED.decode(message.data) == DELETED

        async def emptied() -> bool:
            return await outbox_rows(outbox) == []

        assert await eventually(emptied, within=30)
    finally:
        stop.set()
        if relay is not None:
            await relay
        await client.close()


async def test_rows_that_need_no_order_are_published_pipelined_and_a_failed_one_alone_stays(
    backing: Backing, outbox: Outbox
) -> None:
    subjects = Subjects(f"u{uuid.uuid4().hex[:8]}")
    unordered = f"{subjects.namespace}.unordered."
    outbox = Outbox(outbox.engine, outbox.schema, subjects, unordered_prefix=unordered)
    client = await nats.connect(backing.nats_url)
    stop = asyncio.Event()
    relay: asyncio.Task[None] | None = None
    try:
        js = client.jetstream()
        await natsutil.ensure_events_stream(js, subjects)
        await js.add_stream(name=f"{subjects.namespace.upper()}_UNORDERED", subjects=[f"{unordered}ok.>"])
        received = await client.subscribe(f"{subjects.namespace}.>")
        async with outbox.unit_of_work() as work:
            for key in range(20):
                work.publish(events.CAMPAIGN_DELETED, DELETED, key=str(key), subject=f"{unordered}ok.{key}")
            # No stream holds this subject: JetStream answers no one, and only this row stays for a retry.
            work.publish(events.CAMPAIGN_DELETED, DELETED, key="lost", subject=f"{unordered}lost")
            work.publish(events.CAMPAIGN_DELETED, DELETED, key="ordered")
        relay = asyncio.create_task(outbox.relay(js, stop))
        seen = [await received.next_msg(timeout=30) for _ in range(21)]
        assert sorted(message.subject for message in seen) == sorted(
            [f"{unordered}ok.{key}" for key in range(20)] + [subjects.event(events.CAMPAIGN_DELETED)]
        )

        async def only_the_failed_one_left() -> bool:
            return [msg_id for _, msg_id, _ in await outbox_rows(outbox)] == ["events.campaign.deleted:lost"]

        assert await eventually(only_the_failed_one_left, within=30)
        async with outbox.engine.connect() as conn:
            attempts, error = (
                await conn.execute(text(f'SELECT attempts, last_error FROM "{outbox.schema}".outbox'))
            ).one()
        assert attempts >= 1 and error
    finally:
        stop.set()
        if relay is not None:
            await relay
        await client.close()
