"""Delivery queues mail only for send requests the campaign service made, not for whatever someone publishes on NATS.

The forger here is an insider: it holds valid NATS credentials (the test's own NATS URL) and knows a
real user's ids, lists and emails. Its hand-made `campaign.send_requested` events look exactly like the
picker's, except for the signature only the campaign service can make.
"""

from __future__ import annotations

import json
from typing import Any

import nats
import psycopg
import pytest
from google.protobuf import json_format
from herald.campaign.v1 import campaign_pb2

from services.common import events
from services.common.natsutil import Subjects
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    assert_each_received_once,
    audience,
    create_campaign,
    create_email,
    send,
    status_of,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

NONEXISTENT_CAMPAIGN = 9_000_000_001


def forged_request(campaign_id: int, owner: int, email_id: int, list_id: int, **extra: Any) -> bytes:
    """A send request as the picker writes it (services/campaign/events.py, encoded as proto3 JSON), minus the
    signature only the campaign service can make."""
    request = campaign_pb2.CampaignSendRequestedEvent(
        campaign_id=campaign_id,
        owner_user_id=owner,
        name="Forged",
        email_id=email_id,
        targeting=campaign_pb2.Targeting(included=[campaign_pb2.RecipientSource(list_id=list_id)]),
        occurrence=1,
    )
    return json.dumps({**json_format.MessageToDict(request, preserving_proto_field_name=True), **extra}).encode()


async def publish(herald: DeliveryHerald, *payloads: bytes) -> None:
    """Publishes on the send request subject, with this Herald's own NATS credentials."""
    subjects = Subjects(herald.system.env["HERALD_NATS_NAMESPACE"])
    client = await nats.connect(herald.nats.url)
    try:
        js = client.jetstream()
        for payload in payloads:
            await js.publish(subjects.event(events.CAMPAIGN_SEND_REQUESTED), payload)
    finally:
        await client.close()


async def queue_rows(herald: DeliveryHerald, campaign_id: int) -> tuple[int, int]:
    """(runs, queue rows) delivery keeps for the campaign."""
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        runs = await (
            await conn.execute(
                "SELECT count(*) FROM delivery.campaign_runs WHERE campaign_id = %s", (campaign_id,)
            )
        ).fetchone()
        rows = await (
            await conn.execute("SELECT count(*) FROM delivery.recipients WHERE campaign_id = %s", (campaign_id,))
        ).fetchone()
    assert runs is not None and rows is not None
    return int(runs[0]), int(rows[0])


async def test_forged_send_requests_send_nothing_while_real_sends_still_work(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    domain, readers, list_id = await audience(herald, user, 5)
    email_id = await create_email(herald.api, user)
    draft = await create_campaign(herald.api, user, email_id, [list_id], name="Still a draft")

    await publish(
        herald,
        # A campaign that does not exist, aimed at a real user's list with a real email of theirs.
        forged_request(NONEXISTENT_CAMPAIGN, user.user_id, email_id, list_id),
        # The user's own Draft, which nobody approved or set Ready.
        forged_request(draft, user.user_id, email_id, list_id),
        # The same with a made-up signature.
        forged_request(draft, user.user_id, email_id, list_id, signature="bm90IGEgc2lnbmF0dXJl"),
    )

    # A real send published after the forged requests: once it is Sent, delivery has handled them too
    # (one consumer, in stream order), so what they did is visible now.
    witness_domain, witnesses, witness_list = await audience(herald, user, 3, list_name="Witnesses")
    witness = await create_campaign(herald.api, user, email_id, [witness_list], name="Witness")
    await send(herald.api, user, witness)
    assert await wait_for_status(herald.api, user, witness, "Sent", within=30) == "Sent"
    assert_each_received_once(herald.recorder, witness_domain, [p.email for p in witnesses])

    assert herald.recorder.messages_to(domain) == []
    assert await queue_rows(herald, NONEXISTENT_CAMPAIGN) == (0, 0)
    assert await queue_rows(herald, draft) == (0, 0)
    assert await status_of(herald.api, user, draft) == "Draft"

    # The draft, really sent, reaches each reader once.
    await send(herald.api, user, draft)
    assert await wait_for_status(herald.api, user, draft, "Sent", within=30) == "Sent"
    assert_each_received_once(herald.recorder, domain, [p.email for p in readers])
