"""Campaign delivery end to end through the legacy API, checked at the SMTP server: personalization, pause, cancel, retries, A/B, audience rules.

Every test sends to recipients of a domain of its own and checks at the recorder (the SMTP server
Herald sends to) that nobody got two messages and nobody who should have one is missing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import grpc
import pytest
import pytest_asyncio
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2

from tests.conftest import User, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    Person,
    assert_counts_match_queue,
    assert_each_received_once,
    assert_nobody_twice,
    audience,
    campaign_get,
    create_campaign,
    create_email,
    create_list,
    eventually,
    import_people,
    new_domain,
    ok,
    people,
    queued_recipients,
    send,
    started_campaign,
    status_of,
    unsubscribe,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

# How long a pause or a cancel may take to stop every worker (RULINGS 6-7, issue 5).
STOP_WITHIN = 1.0
RETRY_TEXT = "Campaign is not in Sent or Failed status"


@pytest.fixture
def herald(delivery_system: DeliveryHerald) -> DeliveryHerald:
    return delivery_system


@pytest_asyncio.fixture(loop_scope="session")
async def user(herald: DeliveryHerald) -> User:
    return await herald.new_user()


def accepted_after(herald: DeliveryHerald, domain: str, moment: float) -> int:
    return sum(1 for message in herald.recorder.messages_to(domain) if message.accepted_at > moment)


# --- the happy path ---------------------------------------------------------------------------------------


async def test_every_recipient_gets_one_personalized_message_and_statistics_add_up(
    herald: DeliveryHerald, user: User
) -> None:
    domain = new_domain()
    subscribers = [*people(119, domain), Person(f"nameless@{domain}", "")]
    list_id = await create_list(herald.api, user)
    await import_people(herald.api, user, list_id, subscribers)
    campaign_id = await started_campaign(herald, user, [list_id], name="Happy path")

    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)

    assert_each_received_once(herald.recorder, domain, [p.email for p in subscribers])
    names = {p.email.lower(): p.first_name for p in subscribers}
    message_ids = []
    for received in herald.recorder.messages_to(domain):
        first_name = names[received.recipient.lower()]
        assert received.header("Subject") == f"Hello {first_name or 'friend'}"
        assert f"Dear {first_name}," in received.text()
        assert received.header("To").endswith(received.recipient)
        unsubscribe_header = received.header("List-Unsubscribe")
        assert re.search(r"<https?://[^>]+/t/u/[^>]+>", unsubscribe_header), unsubscribe_header
        assert received.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        message_ids.append(received.header("Message-ID"))
    assert all(message_ids) and len(set(message_ids)) == len(subscribers)

    body = await campaign_get(herald.api, user, campaign_id)
    campaign = body["Campaign"]
    assert campaign["CampaignStatus"] == "Sent"
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (120, 120, 0)
    assert campaign["SendStartDateTime"] and campaign["SendFinishDateTime"]
    # RetrieveRecipientDomains defaults to true: the breakdown is asked of delivery and rendered.
    assert campaign["RecipientDomains"] == [
        {"Domain": domain, "TotalRecipients": 120, "TotalSent": 120, "TotalFailed": 0, "TotalDeferred": 0}
    ]
    assert await assert_counts_match_queue(herald.system, campaign_id) == (120, 120, 0)
    throughput = body["CampaignThroughput"]
    assert throughput["EmailsPerSecond"] > 0 and isinstance(throughput["Duration"], int)
    if throughput["Duration"] >= 2:
        # RULINGS 11: emails sent over the seconds between the first and the last send.
        assert throughput["EmailsPerSecond"] == pytest.approx(120 / throughput["Duration"], rel=0.5)

    listing = await ok(
        herald.api, "campaigns.get", user.api_key, CampaignIDs=str(campaign_id), RetrieveStatistics=True
    )
    [row] = listing["Campaigns"]
    assert (row["CampaignStatus"], row["TotalRecipients"], row["TotalSent"]) == ("Sent", 120, 120)


# --- pause, resume, cancel --------------------------------------------------------------------------------


async def test_pause_stops_every_worker_within_a_second_and_resume_sends_the_rest_once(
    herald: DeliveryHerald, user: User
) -> None:
    domain, subscribers, list_id = await audience(herald, user, 300)
    herald.recorder.slow_down(domain, 0.05)
    campaign_id = await started_campaign(herald, user, [list_id], name="Pause")

    assert await herald.recorder.wait_for(domain, 30, within=20) >= 30
    await ok(herald.api, "campaign.pause", user.api_key, CampaignID=campaign_id)
    paused_at = time.monotonic()
    assert await status_of(herald.api, user, campaign_id) == "Paused"
    await asyncio.sleep(STOP_WITHIN + 1.0)
    late = accepted_after(herald, domain, paused_at + STOP_WITHIN)
    assert late == 0, f"{late} messages arrived more than {STOP_WITHIN} s after the pause"
    sent_while_running = len(herald.recorder.messages_to(domain))
    assert sent_while_running < len(subscribers), "the campaign finished before the pause could stop it"
    assert await status_of(herald.api, user, campaign_id) == "Paused"

    await ok(herald.api, "campaign.resume", user.api_key, CampaignID=campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert_each_received_once(herald.recorder, domain, [p.email for p in subscribers])
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (300, 300, 0)


async def test_cancel_stops_sending_within_a_second_and_drops_the_unsent(
    herald: DeliveryHerald, user: User
) -> None:
    domain, subscribers, list_id = await audience(herald, user, 300)
    herald.recorder.slow_down(domain, 0.05)
    campaign_id = await started_campaign(herald, user, [list_id], name="Cancel")

    assert await herald.recorder.wait_for(domain, 30, within=20) >= 30
    # While the workers write, the kept counts agree with the queue rows at every snapshot.
    # Queued in chunks of 100, at most two ahead of the sending (TEST_DELIVERY_ENV): not all 300 rows may be in yet.
    total, _, _ = await assert_counts_match_queue(herald.system, campaign_id)
    assert 200 <= total <= 300
    await ok(herald.api, "campaign.cancel", user.api_key, CampaignID=campaign_id)
    cancelled_at = time.monotonic()
    await asyncio.sleep(STOP_WITHIN + 1.0)
    assert accepted_after(herald, domain, cancelled_at + STOP_WITHIN) == 0
    assert await status_of(herald.api, user, campaign_id) == "Cancelled"
    assert_nobody_twice(herald.recorder, domain)
    received = herald.recorder.counts(domain)
    assert 0 < len(received) < len(subscribers)

    async def settled() -> list[delivery_pb2.QueuedRecipient] | None:
        rows = await queued_recipients(herald.system, user, campaign_id)
        busy = {delivery_pb2.RECIPIENT_STATE_PENDING, delivery_pb2.RECIPIENT_STATE_SENDING}
        return None if any(row.state in busy for row in rows) else rows

    rows = await eventually(settled, within=5)
    assert rows, "rows stay Pending or Sending after the cancel"
    states = Counter(row.state for row in rows)
    sent = {row.email_address.lower() for row in rows if row.state == delivery_pb2.RECIPIENT_STATE_SENT}
    assert sent == set(received), "the queue's Sent rows are not exactly who received a message"
    # The queueing stopped at the cancel: recipients not queued by then have no row (nothing to drop).
    queued = len(rows)
    assert len(received) < queued <= len(subscribers)
    assert states[delivery_pb2.RECIPIENT_STATE_DROPPED] == queued - len(received)
    assert await assert_counts_match_queue(herald.system, campaign_id) == (queued, len(received), 0)
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (
        queued,
        len(received),
        0,
    )


# --- temporary and permanent failures ---------------------------------------------------------------------


async def test_a_4xx_answer_is_retried_and_everybody_gets_one_message(herald: DeliveryHerald, user: User) -> None:
    domain, subscribers, list_id = await audience(herald, user, 60)
    deferred = [p.email for p in subscribers[::3]]
    # A temporary failure that is not a request to slow down (services/delivery/pacing.py `slows_down`): "try again
    # later" would also cut the domain's shared rate, and this test is about the retry, not about pacing.
    herald.recorder.answer(deferred, "451 4.3.0 Temporary local problem", attempts=1)
    campaign_id = await started_campaign(herald, user, [list_id], name="Greylisted")

    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    # Deferred recipients are retried through JetStream after the campaign is Sent (tests/e2e/test_deferred.py).
    assert await herald.recorder.wait_for(domain, 60, within=30) == 60
    assert_each_received_once(herald.recorder, domain, [p.email for p in subscribers])
    assert all(herald.recorder.attempts[address.lower()] == 2 for address in deferred)

    async def settled() -> bool:
        campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
        return (campaign["TotalSent"], campaign["TotalFailed"]) == (60, 0)

    assert await eventually(settled, within=10)


async def retry(herald: DeliveryHerald, key: str, **params: object) -> dict[str, object]:
    body: dict[str, object] = await herald.api.call("admin.campaign.retryfailed", key, **params)
    return body


async def test_5xx_fails_the_recipient_and_retryfailed_sends_exactly_those_again(
    herald: DeliveryHerald, user: User
) -> None:
    admin = await herald.new_admin()
    domain, subscribers, list_id = await audience(herald, user, 80)
    rejected = [p.email for p in subscribers[5::8]]
    herald.recorder.answer(rejected, "550 5.1.1 Mailbox unavailable")
    campaign_id = await started_campaign(herald, user, [list_id], name="Bounces")

    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    delivered = [p.email for p in subscribers if p.email not in rejected]
    assert_each_received_once(herald.recorder, domain, delivered)
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (80, 70, 10)
    assert await assert_counts_match_queue(herald.system, campaign_id) == (80, 70, 10)
    failed = await queued_recipients(herald.system, user, campaign_id, delivery_pb2.RECIPIENT_STATE_FAILED)
    assert {row.email_address for row in failed} == set(rejected)
    # A 5xx is permanent: one attempt, and the server's reply is kept.
    assert all(row.attempts == 1 and "550" in row.last_error for row in failed), failed[0]
    assert all(herald.recorder.attempts[address.lower()] == 1 for address in rejected)

    # Only an admin may retry.
    assert (await retry(herald, user.api_key, CampaignID=campaign_id))["ErrorCode"] == 99999

    # Somebody who joins the list now is not sent the retry: it resends the failed rows only.
    late = Person(f"late@{domain}", "Late")
    await import_people(herald.api, user, list_id, [late])
    herald.recorder.accept(rejected)
    body = await retry(herald, admin.api_key, CampaignID=campaign_id)
    assert body == {
        "Success": True,
        "ErrorCode": 0,
        "ErrorText": "",
        "RetriedCount": 10,
        "BatchesCreated": 1,
        "Message": "10 failed recipients queued for retry in 1 batch(es).",
    }
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert_each_received_once(herald.recorder, domain, [p.email for p in subscribers])
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (80, 80, 0)
    assert await assert_counts_match_queue(herald.system, campaign_id) == (80, 80, 0)
    # The retried rows went out under a generation of their own (new batch message ids).
    generations = {
        row.email_address: row.generation for row in await queued_recipients(herald.system, user, campaign_id)
    }
    assert min(generations[address] for address in rejected) > max(generations[address] for address in delivered)

    # Nothing failed any more: 5.
    body = await retry(herald, admin.api_key, CampaignID=campaign_id)
    assert (body["Success"], body["ErrorCode"]) == (False, 5) and isinstance(body["ErrorText"], str), body


async def test_retryfailed_answers_every_documented_error(herald: DeliveryHerald, user: User) -> None:
    admin = await herald.new_admin()
    for params in ({}, {"CampaignID": "abc"}, {"CampaignID": 0}):
        body = await retry(herald, admin.api_key, **params)
        assert (body["Success"], body["ErrorCode"]) == (False, 1), (params, body)
        assert isinstance(body["ErrorText"], str) and body["ErrorText"], body
    assert (await retry(herald, admin.api_key, CampaignID=987654321))["ErrorCode"] == 2

    email_id = await create_email(herald.api, user)
    _, _, list_id = await audience(herald, user, 3)
    draft = await create_campaign(herald.api, user, email_id, [list_id], name="Still a draft")
    body = await retry(herald, admin.api_key, CampaignID=draft)
    assert body == {"Success": False, "ErrorCode": 3, "ErrorText": body["ErrorText"]}
    assert RETRY_TEXT in str(body["ErrorText"])

    # Sending: 3 as well.
    slow_domain, _, slow_list = await audience(herald, user, 20)
    herald.recorder.slow_down(slow_domain, 0.3)
    sending = await started_campaign(herald, user, [slow_list], name="Sending")
    await wait_for_status(herald.api, user, sending, "Sending", within=10)
    assert (await retry(herald, admin.api_key, CampaignID=sending))["ErrorCode"] == 3
    await wait_for_status(herald.api, user, sending, "Sent", within=20)

    # A campaign whose audience selects nobody fails without ever being queued: 4.
    empty_list = await create_list(herald.api, user, "Nobody")
    nobody = await started_campaign(herald, user, [empty_list], name="Nobody")
    assert await wait_for_status(herald.api, user, nobody, "Failed", within=20) == "Failed"
    assert (await retry(herald, admin.api_key, CampaignID=nobody))["ErrorCode"] == 4

    # Sent with nobody failed: 5.
    sent = await started_campaign(herald, user, [list_id], name="All delivered")
    await wait_for_status(herald.api, user, sent, "Sent", within=20)
    assert (await retry(herald, admin.api_key, CampaignID=sent))["ErrorCode"] == 5


async def test_retryfailed_allows_100_requests_per_minute_per_admin_key(herald: DeliveryHerald) -> None:
    admin = await herald.new_admin()
    url = f"{herald.system.base_url}/api/v1/admin.campaign.retryfailed"

    async def call() -> tuple[int, str | None]:
        body = {"Command": "admin.campaign.retryfailed", "APIKey": admin.api_key, "CampaignID": 987654321}
        async with herald.api.session.post(url, json=body) as response:
            await response.read()
            return response.status, response.headers.get("Retry-After")

    answers = await asyncio.gather(*(call() for _ in range(100)))
    assert {status for status, _ in answers} == {200}
    status, retry_after = await call()
    assert status == 429 and retry_after is not None and 1 <= int(retry_after) <= 60
    # Another admin key has its own allowance.
    other = await herald.new_admin()
    assert (await retry(herald, other.api_key, CampaignID=987654321))["ErrorCode"] == 2


# --- A/B split and audience rules ---------------------------------------------------------------------------


async def test_ab_campaign_without_rel_email_id_sends_its_variations(herald: DeliveryHerald, user: User) -> None:
    # RULINGS 14: the variations are the content; no RelEmailID is needed to become Ready.
    domain, subscribers, list_id = await audience(herald, user, 40)
    first = await create_email(herald.api, user, subject="Only A", name="A")
    second = await create_email(herald.api, user, subject="Only B", name="B")
    campaign_id = await create_campaign(
        herald.api, user, None, [list_id], name="A/B alone", variations=[(first, 50), (second, 50)]
    )
    await send(herald.api, user, campaign_id)

    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert_each_received_once(herald.recorder, domain, [p.email for p in subscribers])
    subjects = Counter(message.header("Subject") for message in herald.recorder.messages_to(domain))
    assert set(subjects) <= {"Only A", "Only B"} and sum(subjects.values()) == 40

    # Neither an email nor variations: code 4, as before.
    bare = await create_campaign(herald.api, user, None, [list_id], name="No content")
    body = await herald.api.call("campaign.update", user.api_key, CampaignID=bare, CampaignStatus="Ready")
    assert (body["Success"], body["ErrorCode"]) == (False, 4)


async def test_ab_variations_are_sent_by_weight_and_counted_per_variation(
    herald: DeliveryHerald, user: User
) -> None:
    domain, subscribers, list_id = await audience(herald, user, 300)
    first = await create_email(herald.api, user, subject="Variation A", name="A")
    second = await create_email(herald.api, user, subject="Variation B", name="B")
    campaign_id = await create_campaign(
        herald.api, user, first, [list_id], name="A/B", variations=[(first, 70), (second, 30)]
    )
    await send(herald.api, user, campaign_id)

    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    assert_each_received_once(herald.recorder, domain, [p.email for p in subscribers])
    subjects = Counter(message.header("Subject") for message in herald.recorder.messages_to(domain))
    assert set(subjects) == {"Variation A", "Variation B"}
    # 70 % of 300 is 210; four standard deviations of a weighted coin (7.9) either side.
    assert abs(subjects["Variation A"] - 210) <= 32, subjects

    body = await campaign_get(herald.api, user, campaign_id, SplitABTestStatistics=True)
    by_email = {entry["EmailID"]: entry for entry in body["Campaign"]["SplitABTestStatistics"]}
    assert set(by_email) == {first, second}
    assert by_email[first]["TotalRecipients"] == by_email[first]["TotalSent"] == subjects["Variation A"]
    assert by_email[second]["TotalRecipients"] == by_email[second]["TotalSent"] == subjects["Variation B"]
    assert by_email[first]["TotalFailed"] == by_email[second]["TotalFailed"] == 0
    # Without a split test no variation is a winner.
    assert by_email[first]["Winner"] is by_email[second]["Winner"] is False
    listing = await ok(
        herald.api, "campaigns.get", user.api_key, CampaignIDs=str(campaign_id), SplitABTestStatistics=True
    )
    assert {entry["EmailID"] for entry in listing["Campaigns"][0]["SplitABTestStatistics"]} == {first, second}

    # The campaign service passes the statistics view on to delivery: the totals leave the breakdowns out.
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
    assert (totals.total_recipients, totals.total_sent, totals.variations, totals.domains) == (300, 300, [], [])
    assert {v.email_id for v in full.variations} == {first, second} and [d.domain for d in full.domains] == [
        domain
    ]
    assert (totals.total_sent, totals.emails_per_second) == (full.total_sent, full.emails_per_second)


async def test_suppressed_and_unsubscribed_get_nothing_and_two_lists_send_once(
    herald: DeliveryHerald, user: User
) -> None:
    domain = new_domain()
    first_list = await create_list(herald.api, user, "First")
    second_list = await create_list(herald.api, user, "Second")
    blocked_list = await create_list(herald.api, user, "Blocked")
    on_first = people(50, domain)
    # Ten of the second list's people are on the first list too, one of them spelled in capitals.
    on_second = [
        *people(9, domain, start=40),
        Person(f"R49@{domain.upper()}", "Name49"),
        *people(10, domain, start=50),
    ]
    await import_people(herald.api, user, first_list, on_first)
    await import_people(herald.api, user, second_list, on_second)
    unsubscribed = [p.email for p in on_first[:5]]
    for address in unsubscribed:
        await unsubscribe(herald.api, first_list, address)
    suppressed = on_first[5:10]
    await import_people(herald.api, user, blocked_list, suppressed, suppress=True)

    campaign_id = await started_campaign(herald, user, [first_list, second_list], name="Two lists")
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)

    expected = [p.email for p in people(50, domain, start=10)]
    assert_each_received_once(herald.recorder, domain, expected)
    campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (campaign["TotalRecipients"], campaign["TotalSent"], campaign["TotalFailed"]) == (50, 50, 0)
