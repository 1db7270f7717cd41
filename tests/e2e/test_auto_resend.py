"""Auto-resend end to end: a campaign with AutoResendEnabled goes again, AutoResendWaitDays after it finished, to
the recipients who did not open it, under AutoResendSubject, each once.

These tests run on a Herald of their own that really sends (the SMTP recorder of delivery_helpers) with
HERALD_TEST_CLOCK=1: the campaign service's clock runs ahead by the seconds in
`<HERALD_DATA_DIR>/test-clock-offset` (services/campaign/clock.py), so "two days later" is one file write
away. Opens are recorded through the real tracking pixel: its URL is read from the HTML the recorder
received and fetched over HTTP, as a mail client would.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.campaign.clock import OFFSET_FILE
from tests.conftest import Backing, User
from tests.e2e.delivery_helpers import (
    SUBJECT,
    DeliveryHerald,
    Received,
    assert_nobody_twice,
    audience,
    campaign_get,
    create_campaign,
    create_email,
    delivery_herald,
    eventually,
    ok,
    queued_recipients,
    send,
    status_of,
    unsubscribe,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

PIXEL = re.compile(r'<img src="([^"]+/t/o/[^"]+\.gif)"')
RESEND_SUBJECT = "Did you miss our news?"
RESEND_PREHEADER = "The week in five minutes"
DAY = 86_400


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def herald(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DeliveryHerald]:
    async with delivery_herald(
        backing, tmp_path_factory.mktemp("auto-resend"), {"HERALD_TEST_CLOCK": "1"}
    ) as running:
        yield running


class Clock:
    """The campaign service's clock, moved through its offset file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def advance_days(self, days: float) -> None:
        self.path.write_text(str(days * DAY))

    def reset(self) -> None:
        self.path.write_text("0")


@pytest.fixture
def clock(herald: DeliveryHerald) -> Iterator[Clock]:
    """Starts each test at the system's time and puts it back afterwards (tests share the Herald)."""
    moved = Clock(Path(herald.system.env["HERALD_DATA_DIR"]) / OFFSET_FILE)
    moved.reset()
    yield moved
    moved.reset()


@pytest_asyncio.fixture(loop_scope="session")
async def user(herald: DeliveryHerald) -> User:
    return await herald.new_user()


async def campaign_with_auto_resend(
    herald: DeliveryHerald, user: User, list_id: int, *, wait_days: int = 2
) -> tuple[int, int]:
    """A Draft to the list with the default email and AutoResend* set: (campaign id, email id)."""
    email_id = await create_email(herald.api, user)
    campaign_id = await create_campaign(herald.api, user, email_id, [list_id], name="Weekly")
    await ok(
        herald.api,
        "campaign.update",
        user.api_key,
        CampaignID=campaign_id,
        AutoResendEnabled=True,
        AutoResendWaitDays=wait_days,
        AutoResendSubject=RESEND_SUBJECT,
        AutoResendPreHeaderText=RESEND_PREHEADER,
    )
    return campaign_id, email_id


async def resends_of(herald: DeliveryHerald, user: User, campaign_id: int) -> list[dict[str, Any]]:
    """The campaigns.get rows (Include_AutoResend) whose OriginalCampaignID is the campaign."""
    body = await ok(herald.api, "campaigns.get", user.api_key, CampaignStatus="All", Include_AutoResend=True)
    return [row for row in body["Campaigns"] if row["OriginalCampaignID"] == campaign_id]


def pixel_of(message: Received) -> str:
    found = PIXEL.search(message.text())
    assert found is not None, "no open pixel in the message's HTML"
    return found.group(1)


async def test_the_resend_goes_once_to_the_subscribers_who_did_not_open_under_its_own_subject(
    herald: DeliveryHerald, user: User, clock: Clock
) -> None:
    domain, people, list_id = await audience(herald, user, 6)
    campaign_id, email_id = await campaign_with_auto_resend(herald, user, list_id)
    await send(herald.api, user, campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=60)
    assert await herald.recorder.wait_for(domain, 6, within=30) == 6
    first_send = {m.recipient.lower(): m for m in herald.recorder.messages_to(domain)}

    # The resend exists as soon as the campaign is Sent: a campaign of its own, scheduled two days on, listed
    # only when auto-resends are asked for.
    [row] = await resends_of(herald, user, campaign_id)
    resend_id = row["CampaignID"]
    plain = await ok(herald.api, "campaigns.get", user.api_key, CampaignStatus="All")
    assert [c["CampaignID"] for c in plain["Campaigns"]] == [campaign_id]
    resend = (await campaign_get(herald.api, user, resend_id))["Campaign"]
    original = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (resend["CampaignStatus"], resend["ScheduleType"], resend["CampaignName"]) == (
        "Ready",
        "Future",
        "Weekly (Auto-resend)",
    )
    assert resend["RecipientListsAndSegments"] == f"{list_id}:0" and not resend["AutoResendEnabled"]
    assert resend["RelEmailID"] not in (0, email_id)
    assert f"{resend['SendDate']} {resend['SendTime']}" > original["SendFinishDateTime"]

    # Two recipients open the message (the pixel, fetched as a mail client does); one unsubscribes.
    opened, unsubscribed = people[:2], people[2]
    for person in opened:
        async with herald.api.session.get(pixel_of(first_send[person.email])) as response:
            assert response.status == 200

    async def opens_counted() -> bool:
        campaign = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
        return bool(campaign["UniqueOpens"] == 2)

    assert await eventually(opens_counted, within=15), "the opens were not recorded"
    await unsubscribe(herald.api, list_id, unsubscribed.email)

    # Nothing is sent before the day comes.
    await asyncio.sleep(1.5)
    assert len(herald.recorder.messages_to(domain)) == 6
    assert await status_of(herald.api, user, resend_id) == "Ready"

    clock.advance_days(2.01)
    await wait_for_status(herald.api, user, resend_id, "Sent", within=60)
    expected = {person.email for person in people[3:]}
    assert await herald.recorder.wait_for(domain, 6 + len(expected), within=30) == 6 + len(expected)
    await asyncio.sleep(1)  # anything more would have arrived by now
    resent = herald.recorder.messages_to(domain)[6:]
    assert sorted(m.recipient.lower() for m in resent) == sorted(expected)
    assert {m.header("Subject") for m in resent} == {RESEND_SUBJECT}
    assert all(RESEND_PREHEADER in m.text() for m in resent)
    assert all(m.header("Subject") != RESEND_SUBJECT for m in first_send.values())
    counts = herald.recorder.counts(domain)
    assert all(counts[address] == 2 for address in expected)
    assert all(counts[person.email] == 1 for person in (*opened, unsubscribed))

    # Statistics of its own; the original's figures and email are unchanged.
    resend = (await campaign_get(herald.api, user, resend_id))["Campaign"]
    assert (resend["TotalRecipients"], resend["TotalSent"], resend["UniqueOpens"]) == (3, 3, 0)
    original = (await campaign_get(herald.api, user, campaign_id))["Campaign"]
    assert (original["TotalSent"], original["UniqueOpens"]) == (6, 2)
    email = (await ok(herald.api, "email.get", user.api_key, EmailID=email_id))["EmailInformation"]
    assert email["Subject"] == SUBJECT
    assert len(await queued_recipients(herald.system, user, resend_id)) == 3
    # The resend finished too, and is no original: no resend of the resend.
    assert await resends_of(herald, user, resend_id) == []


async def test_cancelling_the_campaign_while_it_sends_means_no_resend(
    herald: DeliveryHerald, user: User, clock: Clock
) -> None:
    domain, _, list_id = await audience(herald, user, 40)
    herald.recorder.slow_down(domain, 0.5)
    campaign_id, _ = await campaign_with_auto_resend(herald, user, list_id, wait_days=1)
    await send(herald.api, user, campaign_id)
    assert await herald.recorder.wait_for(domain, 1, within=30) >= 1
    await ok(herald.api, "campaign.cancel", user.api_key, CampaignID=campaign_id)
    assert await status_of(herald.api, user, campaign_id) == "Cancelled"
    await asyncio.sleep(2)  # the sends under way end; the cancel reached every worker
    sent_before = len(herald.recorder.messages_to(domain))
    assert sent_before < 40

    clock.advance_days(3)
    await asyncio.sleep(3)  # several picker passes
    assert await resends_of(herald, user, campaign_id) == []
    assert len(herald.recorder.messages_to(domain)) == sent_before
    assert_nobody_twice(herald.recorder, domain)


async def test_a_waiting_resend_can_be_paused_and_goes_with_its_deleted_original(
    herald: DeliveryHerald, user: User, clock: Clock
) -> None:
    domain, _, list_id = await audience(herald, user, 3)
    campaign_id, _ = await campaign_with_auto_resend(herald, user, list_id, wait_days=1)
    await send(herald.api, user, campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=60)
    assert await herald.recorder.wait_for(domain, 3, within=30) == 3
    [row] = await resends_of(herald, user, campaign_id)
    resend_id = row["CampaignID"]

    # A resend is paused and resumed like any campaign.
    await ok(herald.api, "campaign.pause", user.api_key, CampaignID=resend_id)
    assert await status_of(herald.api, user, resend_id) == "Paused"
    await ok(herald.api, "campaign.resume", user.api_key, CampaignID=resend_id)
    assert await status_of(herald.api, user, resend_id) == "Ready"

    await ok(herald.api, "campaigns.delete", user.api_key, Campaigns=str(campaign_id))
    gone = await herald.api.call("campaign.get", user.api_key, CampaignID=resend_id)
    assert (gone["Success"], gone["ErrorCode"]) == (False, 2)

    clock.advance_days(2)
    await asyncio.sleep(3)
    assert len(herald.recorder.messages_to(domain)) == 3


async def test_cancelling_a_retried_original_cancels_its_waiting_resend(
    herald: DeliveryHerald, user: User, clock: Clock
) -> None:
    admin = await herald.new_admin()
    domain, people, list_id = await audience(herald, user, 3)
    rejected = people[0].email
    herald.recorder.answer([rejected], "550 5.1.1 Mailbox unavailable")
    campaign_id, _ = await campaign_with_auto_resend(herald, user, list_id, wait_days=1)
    await send(herald.api, user, campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=60)
    [row] = await resends_of(herald, user, campaign_id)
    resend_id = row["CampaignID"]

    # An admin sends the failed recipient again; while that is under way, the owner cancels the original.
    herald.recorder.accept([rejected])
    herald.recorder.slow_down(domain, 5)
    body = await herald.api.call("admin.campaign.retryfailed", admin.api_key, CampaignID=campaign_id)
    assert body["Success"] is True, body
    assert await status_of(herald.api, user, campaign_id) == "Sending"
    await ok(herald.api, "campaign.cancel", user.api_key, CampaignID=campaign_id)
    assert await status_of(herald.api, user, campaign_id) == "Cancelled"
    resend = (await campaign_get(herald.api, user, resend_id))["Campaign"]
    assert (resend["CampaignStatus"], resend["CampaignStatusReason"]) == (
        "Cancelled",
        "the original campaign was cancelled",
    )

    clock.advance_days(2)
    await asyncio.sleep(6)  # the slowed retry ends either way; picker passes find nothing due
    assert await status_of(herald.api, user, resend_id) == "Cancelled"
    assert all(m.header("Subject") != RESEND_SUBJECT for m in herald.recorder.messages_to(domain))
    assert_nobody_twice(herald.recorder, domain)
