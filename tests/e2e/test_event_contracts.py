"""Every consumer of Herald's events reads them with the event's one strict decoder and terminates what it cannot read.

A message that does not decode is terminated (JetStream `term()`), never acknowledged as if it had been
handled, nor redelivered forever: JetStream then publishes a MSG_TERMINATED advisory naming the
consumer and the message's stream sequence, which these tests wait for. The publisher is an insider
with Herald's own NATS credentials.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import psycopg
import pytest
import pytest_asyncio
from nats.aio.client import Client

from services.common import events
from services.common.events import EventType
from services.common.natsutil import Subjects
from tests.conftest import System
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    audience,
    eventually,
    ok,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Generous: the consumers start in the background and fetch once a second.
WAIT_SECONDS = 60


@pytest_asyncio.fixture(loop_scope="session")
async def bus(system: System) -> AsyncIterator[Client]:
    client = await nats.connect(system.env["NATS_URL"])
    try:
        yield client
    finally:
        await client.close()


async def publish_and_wait_for_terms(
    bus: Client, subjects: Subjects, event: EventType[object], payload: bytes, durables: list[str]
) -> None:
    """Publishes `payload` on `event`'s subject; returns once each of `durables` terminated that very message."""
    stream = (
        subjects.events_stream
        if event.subject.startswith("events.")
        else f"{subjects.namespace.upper()}_DELIVERY_BATCHES"
    )
    pending = {subjects.durable(durable) for durable in durables}
    terminated: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def on_advisory(message: nats.aio.msg.Msg) -> None:
        await terminated.put(json.loads(message.data))

    subscription = await bus.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.*", cb=on_advisory)
    try:
        ack = await bus.jetstream().publish(subjects.event(event), payload)
        async with asyncio.timeout(WAIT_SECONDS):
            while pending:
                advisory = await terminated.get()
                if advisory["stream_seq"] == ack.seq:
                    pending.discard(str(advisory["consumer"]))
    finally:
        await subscription.unsubscribe()


async def test_a_campaign_deleted_event_with_a_boolean_id_is_refused_by_both_of_its_consumers(
    system: System, bus: Client
) -> None:
    # The tag service refused this before while delivery read `true` as campaign 1; now they share a decoder.
    payload = json.dumps({"owner_user_id": 1, "campaign_ids": [True]}).encode()
    await publish_and_wait_for_terms(
        bus,
        Subjects.of(system.settings),
        events.CAMPAIGN_DELETED,
        payload,
        ["tag-campaign-deleted", "delivery-campaign-deleted"],
    )


UNREADABLE = [
    (events.CAMPAIGN_DELETED, ["tag-campaign-deleted", "delivery-campaign-deleted"]),
    (events.CAMPAIGN_STATUS_CHANGED, ["delivery-status-changed", "delivery-event-webhooks"]),
    (events.CAMPAIGN_SEND_REQUESTED, ["delivery-send-requested"]),
    (events.CAMPAIGN_FINISHED, ["campaign-campaign-finished"]),
    (events.DELIVERY_BATCH, ["delivery-workers"]),
]


@pytest.mark.parametrize(("event", "durables"), UNREADABLE, ids=[event.subject for event, _ in UNREADABLE])
@pytest.mark.parametrize("payload", [b"not json", b'{"campaign_id": "x"}'], ids=["not json", "wrong type"])
async def test_an_event_that_does_not_decode_is_terminated_by_every_consumer(
    system: System, bus: Client, event: EventType[object], durables: list[str], payload: bytes
) -> None:
    await publish_and_wait_for_terms(bus, Subjects.of(system.settings), event, payload, durables)


# --- what the producers publish, the consumers act on ---------------------------------------------------------


async def run_state(herald: DeliveryHerald, campaign_id: int) -> str | None:
    """The state delivery keeps for the campaign's run."""
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        row = await (
            await conn.execute("SELECT state FROM delivery.campaign_runs WHERE campaign_id = %s", (campaign_id,))
        ).fetchone()
    return None if row is None else str(row[0])


async def test_delivery_cancels_the_run_of_a_campaign_the_campaign_service_deleted(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    _, _, list_id = await audience(herald, user, 2)
    campaign = await started_campaign(herald, user, [list_id], name="Delivery")
    assert await wait_for_status(herald.api, user, campaign, "Sent", within=30) == "Sent"

    # Delivery learns of Sent from the campaign service's status event, a moment after the campaign shows it.
    async def sent() -> bool:
        return await run_state(herald, campaign) == "Sent"

    assert await eventually(sent, within=30)

    await ok(herald.api, "campaigns.delete", user.api_key, Campaigns=str(campaign))

    async def cancelled() -> bool:
        return await run_state(herald, campaign) == "Cancelled"

    assert await eventually(cancelled, within=30)
