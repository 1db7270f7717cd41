"""Deferred recipients (issue 13) in every statistics answer: legacy campaign.get and campaigns.get, the campaign
service's GetCampaign and delivery's ListQueuedRecipients.

A campaign really goes out to the recorder; then some of its queue rows are set Deferred with SQL, as a
temporary failure leaves them (the worker that defers and retries is not part of these tests).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2

from tests.conftest import grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    assert_counts_match_queue,
    assert_each_received_once,
    audience,
    campaign_get,
    ok,
    queued_recipients,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_recipients_set_deferred_show_as_total_deferred_in_legacy_and_grpc_statistics(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    domain, subscribers, list_id = await audience(herald, user, 5)
    campaign_id = await started_campaign(herald, user, [list_id], name="Deferred")
    assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=30) == "Sent"
    assert_each_received_once(herald.recorder, domain, [person.email for person in subscribers])

    due = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as sql:
        cursor = await sql.execute(
            "UPDATE delivery.recipients SET status = 'Deferred', sent_at = NULL, message_id = NULL, "
            "last_error = '451 4.7.1 try again later', next_attempt_at = %(due)s, deferred_since = now() "
            "WHERE campaign_id = %(c)s AND recipient_id IN "
            "(SELECT recipient_id FROM delivery.recipients WHERE campaign_id = %(c)s ORDER BY recipient_id LIMIT 2) "
            "RETURNING recipient_id",
            {"c": campaign_id, "due": due},
        )
        deferred_ids = sorted(int(str(row[0])) for row in await cursor.fetchall())
    assert len(deferred_ids) == 2
    assert await assert_counts_match_queue(herald.system, campaign_id) == (5, 3, 0)

    # Legacy campaign.get: the totals and each recipient domain.
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (
        campaign["TotalRecipients"],
        campaign["TotalSent"],
        campaign["TotalFailed"],
        campaign["TotalDeferred"],
    ) == (5, 3, 0, 2)
    assert campaign["RecipientDomains"] == [
        {"Domain": domain, "TotalRecipients": 5, "TotalSent": 3, "TotalFailed": 0, "TotalDeferred": 2}
    ]

    # Legacy campaigns.get: each row, and the sums over every match.
    listing = await ok(
        herald.api, "campaigns.get", user.api_key, CampaignIDs=str(campaign_id), IncludeTotalRecipients=True
    )
    [row] = listing["Campaigns"]
    assert (row["TotalSent"], row["TotalDeferred"]) == (3, 2)
    assert (listing["TotalSent"], listing["TotalFailed"], listing["TotalDeferred"]) == (3, 0, 2)

    # The campaign service's GetCampaign, in both statistics views.
    async with grpc.aio.insecure_channel(herald.system.grpc_target("campaign")) as channel:
        stub = campaign_pb2_grpc.CampaignServiceStub(channel)
        totals, full = [
            (
                await stub.GetCampaign(
                    campaign_pb2.GetCampaignRequest(
                        campaign_id=campaign_id, view=campaign_pb2.CAMPAIGN_VIEW_FULL, statistics_view=view
                    ),
                    metadata=grpc_metadata(herald.system, user.user_id),
                )
            ).statistics
            for view in (campaign_pb2.STATISTICS_VIEW_TOTALS, campaign_pb2.STATISTICS_VIEW_FULL)
        ]
    assert (totals.total_sent, totals.total_failed, totals.total_deferred) == (3, 0, 2)
    assert (full.total_sent, full.total_failed, full.total_deferred) == (3, 0, 2)
    assert [(d.domain, d.total_sent, d.total_deferred) for d in full.domains] == [(domain, 3, 2)]

    # Delivery's queue listing filters on the Deferred state and tells when each is due.
    rows = await queued_recipients(herald.system, user, campaign_id, delivery_pb2.RECIPIENT_STATE_DEFERRED)
    assert [r.recipient_id for r in rows] == deferred_ids
    assert {r.state for r in rows} == {delivery_pb2.RECIPIENT_STATE_DEFERRED}
    assert {r.next_attempt_time.ToDatetime(tzinfo=UTC) for r in rows} == {due}
    sent = await queued_recipients(herald.system, user, campaign_id, delivery_pb2.RECIPIENT_STATE_SENT)
    assert len(sent) == 3 and not any(r.HasField("next_attempt_time") for r in sent)
