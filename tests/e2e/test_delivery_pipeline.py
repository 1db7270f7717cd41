"""The send pipeline's happy path through the legacy API: a Ready, Immediate campaign reaches every recipient exactly once.

The picker starts the campaign, delivery queues its audience in batches, the workers send them to the
SMTP server in this test process, and the campaign ends Sent with its statistics.
"""

from __future__ import annotations

import pytest

from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    assert_each_received_once,
    audience,
    campaign_get,
    started_campaign,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_ready_immediate_campaign_reaches_every_recipient_once_personalized_and_ends_sent(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    domain, subscribers, list_id = await audience(herald, user, 40)
    campaign_id = await started_campaign(herald, user, [list_id], name="Happy path")
    assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=30) == "Sent"

    assert_each_received_once(herald.recorder, domain, [person.email for person in subscribers])
    names = {person.email: person.first_name for person in subscribers}
    message_ids = set()
    for received in herald.recorder.messages_to(domain):
        first_name = names[received.recipient]
        assert received.header("Subject") == f"Hello {first_name}"
        assert received.header("To") == received.recipient
        assert f"Dear {first_name}," in received.text()
        unsubscribe = received.header("List-Unsubscribe")
        assert unsubscribe.startswith("<http") and "/t/u/" in unsubscribe, unsubscribe
        # The unsubscribe link in the body is the recipient's own, the one the header names.
        assert unsubscribe.strip("<>") in received.text()
        assert received.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        message_ids.add(received.header("Message-ID"))
    assert len(message_ids) == len(subscribers)

    body = await campaign_get(herald.api, user, campaign_id)
    campaign = body["Campaign"]
    statistics = campaign["Statistics"] if "Statistics" in campaign else campaign
    assert statistics["TotalRecipients"] == len(subscribers)
    assert statistics["TotalSent"] == len(subscribers)
    assert statistics["TotalFailed"] == 0
    throughput = body["CampaignThroughput"]
    assert throughput["EmailsPerSecond"] > 0
    assert isinstance(throughput["Duration"], int)
