"""A campaign's web view and report-abuse links end to end, and the link tags Herald refuses.

The campaign goes out over real SMTP to the recorder; the links are taken from the mail as received and
fetched over HTTP from the translator. Reporting abuse travels the complaint path: RecordBounces →
delivery's outbox → NATS → audience, which unsubscribes and suppresses the subscriber.
"""

from __future__ import annotations

import re

import pytest
from herald.delivery.v1 import delivery_pb2

from tests.conftest import User
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    audience,
    create_campaign,
    create_email,
    ok,
    send,
    wait_for_status,
)
from tests.e2e.test_bounce_loop import COMPLAINT, Loop

pytestmark = pytest.mark.asyncio(loop_scope="session")

HTML = (
    "<html><body><p>Dear %Subscriber:FirstName%,</p>"
    '<p><a href="%Link:WebBrowser%">View in your browser</a></p><p>news of the week.</p>'
    '<a href="{{ Link:ReportAbuse }}">Report abuse</a> <a href="%Link:Unsubscribe%">Unsubscribe</a></body></html>'
)
PLAIN = "Dear %Subscriber:FirstName%,\nWeb: %Link:WebBrowser%\nAbuse: %Link:ReportAbuse%"
LINK = re.compile(r"https?://[^\s\"'<>]+/t/(view|abuse)/[A-Za-z0-9_-]+(?:\?e=[0-9]+)?")


async def test_web_view_and_report_abuse_links_work_and_a_report_is_a_complaint(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    loop = await Loop.start(herald, 2)
    angry, other = loop.addresses
    api, user = herald.api, loop.user
    email_id = await create_email(api, user, html=HTML, plain=PLAIN, name="Links")
    campaign_id = await create_campaign(api, user, email_id, [loop.list_id], name="Links")
    await send(api, user, campaign_id)
    assert await wait_for_status(api, user, campaign_id, "Sent", within=60) == "Sent"
    [received] = [m for m in herald.recorder.messages_to(loop.domain) if m.recipient == angry]
    text = received.text()
    assert "%Link:" not in text and "Link:" not in text, text
    links = {match.group(1): match.group(0) for match in LINK.finditer(text)}
    assert set(links) == {"view", "abuse"}, text

    person = next(p for p in loop.readers if p.email == angry)
    async with api.session.get(links["view"]) as response:
        assert response.status == 200
        page = await response.text()
    assert "news of the week." in page and person.first_name in page
    assert links["view"].endswith(f"?e={email_id}")
    # The email id is signed with the token: another one is no web view.
    async with api.session.get(links["view"].replace(f"?e={email_id}", f"?e={email_id + 1}")) as response:
        assert response.status == 404

    async with api.session.get(links["abuse"]) as response:
        assert response.status == 200
        assert "<form" in await response.text()
    # A GET (a mail scanner following the link) reports nothing.
    assert (await loop.subscriber(angry))["SubscriptionStatus"] == "Subscribed"
    for _ in range(2):  # reporting twice records one complaint
        async with api.session.post(links["abuse"]) as response:
            assert response.status == 200
            assert "reported" in await response.text()

    found = await loop.becomes(angry, SubscriptionStatus="Unsubscribed", Suppressed=True)
    assert (found["UnsubscriptionChannel"], found["SuppressionReason"]) == ("complaint", "Complaint")
    assert await loop.recorded(campaign_id, angry) == [
        (COMPLAINT, delivery_pb2.BOUNCE_SOURCE_REPORT_ABUSE_LINK, "", 0)
    ]
    figures = await loop.figures(campaign_id)
    assert (figures["TotalSPAMComplaints"], figures["TotalSent"]) == (1, 2)
    assert (await loop.subscriber(other))["SubscriptionStatus"] == "Subscribed"

    # A token of another kind is no report-abuse link.
    view_token = links["view"].rsplit("/", 1)[1].split("?")[0]
    async with api.session.post(links["abuse"].rsplit("/", 1)[0] + "/" + view_token) as response:
        assert response.status == 404


async def test_content_with_unsupported_link_tags_is_refused_naming_them(delivery_system: DeliveryHerald) -> None:
    herald = delivery_system
    user: User = await herald.new_user()
    await audience(herald, user, 1)
    email_id = (await ok(herald.api, "email.create", user.api_key))["EmailID"]
    body = await herald.api.call(
        "email.update",
        user.api_key,
        EmailID=email_id,
        ValidateScope="Campaign",
        Subject="Hello",
        FromEmail="news@example.com",
        HTMLContent='<a href="%Link:Forward%">Forward</a> <a href="{{ Link:SocialShare:Facebook }}">Share</a>',
    )
    assert body["Success"] is False, body
    # 21: a malformed or unsupported personalization tag (the refused body also leaves HTML missing: 8).
    texts = dict(zip(body["ErrorCode"], body["ErrorText"], strict=True))
    assert texts[21] == "html_content: unsupported link tags: %Link:Forward%, {{ Link:SocialShare:Facebook }}"
