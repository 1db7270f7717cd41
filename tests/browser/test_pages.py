"""The pages Herald serves to people, in a real browser: the web view, the tag archive and its feed, the double
opt-in links, report abuse and unsubscribe.

A headless Chromium (tests/browser/browser.py) opens them from the mail a Herald of its own really sent
(`delivery_system`, over SMTP to the recorder): a link in an email is clicked in the email shown as a page,
a form is sent with its button. Each test checks what a person sees (the tab's title, the visible text),
the effect through the legacy API, and that the pages loaded nothing from another host and logged no
error in the browser console.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import feedparser
import pytest
import pytest_asyncio
from herald.delivery.v1 import delivery_pb2

from tests.browser.browser import Browser, Trouble, data_url
from tests.conftest import eventually
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    Received,
    campaign_get,
    create_campaign,
    create_email,
    new_domain,
    ok,
    send,
    wait_for_status,
)
from tests.e2e.test_bounce_loop import COMPLAINT, Loop
from tests.e2e.test_double_opt_in import CONFIRMATION, double_list, info_of, subscribe

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBJECT = 'Weekly news for {{ Subscriber:FirstName | "you" }}'
HTML = (
    "<html><head><title>Weekly news</title></head><body>"
    '<p><a href="%Link:WebBrowser%">View in your browser</a></p>'
    "<p>Dear %Subscriber:FirstName%,</p><p>the garden opens on Sunday.</p>"
    '<p><a href="%Link:Unsubscribe%">Unsubscribe</a> · <a href="%Link:ReportAbuse%">Report abuse</a></p>'
    "</body></html>"
)
PLAIN = "Dear %Subscriber:FirstName%,\nthe garden opens on Sunday.\nUnsubscribe: %Link:Unsubscribe%"
NO_TROUBLE = Trouble([], [])


@dataclass
class Sent:
    """A campaign with a tag, published on RSS and really sent to three readers."""

    loop: Loop
    tag_id: int
    tag: str
    campaign_id: int
    campaign_name: str
    send_date: str
    mail: dict[str, Received]

    def html_of(self, reader: int) -> str:
        """The HTML part of the message reader `reader` received."""
        message = self.mail[self.loop.readers[reader].email].message
        part = message.get_body(preferencelist=("html",))
        assert part is not None, message
        return str(part.get_content())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sent(delivery_system: DeliveryHerald) -> AsyncIterator[Sent]:
    herald = delivery_system
    loop = await Loop.start(herald, 3)
    api, user = herald.api, loop.user
    tag = f"Garden {uuid.uuid4().hex[:6]}"
    tag_id = (await ok(api, "tag.create", user.api_key, Tag=tag))["TagID"]
    email_id = await create_email(api, user, subject=SUBJECT, html=HTML, plain=PLAIN, name="Weekly")
    name = "Garden weekly"
    campaign_id = await create_campaign(api, user, email_id, [loop.list_id], name=name)
    await ok(api, "campaign.update", user.api_key, CampaignID=campaign_id, PublishOnRSS="Enabled")
    await ok(api, "tag.assigntocampaigns", user.api_key, TagID=tag_id, CampaignIDs=str(campaign_id))
    await send(api, user, campaign_id)
    assert await wait_for_status(api, user, campaign_id, "Sent", within=60) == "Sent"
    mail = {m.recipient: m for m in herald.recorder.messages_to(loop.domain)}
    assert set(mail) == set(loop.addresses), mail
    send_date = (await campaign_get(api, user, campaign_id))["Campaign"]["SendStartDateTime"][:10]
    yield Sent(loop, tag_id, tag, campaign_id, name, send_date, mail)


async def test_the_web_view_from_a_message_leads_to_the_archive_and_its_feed(browser: Browser, sent: Sent) -> None:
    reader = sent.loop.readers[0]
    email = await browser.open_email(sent.html_of(0))
    assert f"Dear {reader.first_name}," in email.text

    view = await browser.click_link("View in your browser")
    assert view.url.startswith(f"{browser.origin}/t/view/"), view.url
    assert view.title == f"Weekly news for {reader.first_name}"
    assert f"Weekly news for {reader.first_name}\nSent {sent.send_date}" in view.text, view.text
    content = await browser.frame_text("iframe.herald-content")
    assert f"Dear {reader.first_name},\nthe garden opens on Sunday." in content, content

    archive_url = f"{browser.origin}/archive/tag/{sent.tag_id}"
    archive = await browser.click_link(f"← Archive: {sent.tag}")
    assert (archive.url, archive.title) == (archive_url, f"Archive: {sent.tag}")
    assert archive.text == f"{sent.tag}\n{sent.campaign_name}\n{sent.send_date}", archive.text
    feeds = await browser.attributes('link[rel="alternate"]', "type", "title", "href")
    assert feeds == [
        {"type": "application/rss+xml", "title": f"Archive: {sent.tag}", "href": f"{archive_url}/rss"}
    ]

    # The archive's own web view has no subscriber: the subject's fallback, no personal links.
    public_url = f"{archive_url}/campaign/{sent.campaign_id}"
    public = await browser.click_link(sent.campaign_name)
    assert (public.url, public.title) == (public_url, "Weekly news for you")
    assert f"Weekly news for you\nSent {sent.send_date}" in public.text, public.text
    assert "Dear ,\nthe garden opens on Sunday." in await browser.frame_text("iframe.herald-content")
    assert (await browser.click_link(f"← Archive: {sent.tag}")).url == archive_url

    shown = await browser.open(f"{archive_url}/rss")
    feed = feedparser.parse(shown.text)  # the feed as the browser shows it: its XML, as text
    assert not feed.bozo, (feed.bozo_exception, shown.text)
    assert feed.feed.title == f"Archive: {sent.tag}" and feed.feed.link == archive_url
    [item] = feed.entries
    assert (item.title, item.link) == ("Weekly news for you", public_url)
    assert (await browser.open(item.link)).title == "Weekly news for you"
    assert await browser.trouble() == NO_TROUBLE


async def test_the_report_abuse_button_records_a_complaint(browser: Browser, sent: Sent) -> None:
    loop, reader = sent.loop, sent.loop.readers[1]
    await browser.open_email(sent.html_of(1))
    form = await browser.click_link("Report abuse")
    assert form.title == "Report abuse"
    assert form.text.startswith("Report this message as abuse?\nYou will be unsubscribed"), form.text
    # Opening the page reports nothing: a mail scanner follows links too.
    assert (await loop.subscriber(reader.email))["SubscriptionStatus"] == "Subscribed"

    done = await browser.press("Report abuse")
    assert done.url == form.url and done.title == "Reported"
    assert done.text.startswith("Thank you: the message was reported as abuse"), done.text
    found = await loop.becomes(reader.email, SubscriptionStatus="Unsubscribed", Suppressed=True)
    assert (found["UnsubscriptionChannel"], found["SuppressionReason"]) == ("complaint", "Complaint")
    assert await loop.recorded(sent.campaign_id, reader.email) == [
        (COMPLAINT, delivery_pb2.BOUNCE_SOURCE_REPORT_ABUSE_LINK, "", 0)
    ]
    assert await browser.trouble() == NO_TROUBLE


async def test_the_unsubscribe_button_unsubscribes(browser: Browser, sent: Sent) -> None:
    loop, reader = sent.loop, sent.loop.readers[2]
    await browser.open_email(sent.html_of(2))
    form = await browser.click_link("Unsubscribe")
    assert form.title == "Unsubscribe"
    assert form.text == "Unsubscribe?\nYou will no longer receive messages from this mailing list.\nUnsubscribe"
    assert (await loop.subscriber(reader.email))["SubscriptionStatus"] == "Subscribed"

    done = await browser.press("Unsubscribe")
    assert (done.url, done.title) == (form.url, "Unsubscribed")
    assert done.text == "You are unsubscribed\nYou will receive no more messages from this list.", done.text
    found = await loop.subscriber(reader.email)
    assert (found["SubscriptionStatus"], found["Suppressed"]) == ("Unsubscribed", False), found
    assert await browser.trouble() == NO_TROUBLE


async def confirmation_html(herald: DeliveryHerald, address: str, domain: str) -> str:
    # Both addresses are at one domain: wait for this address's message, not for any message to the domain.
    async def arrived() -> list[Any]:
        return [m for m in herald.recorder.messages_to(domain) if m.recipient == address]

    [message] = await eventually(arrived, within=30)
    part = message.message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


async def test_the_links_of_a_confirmation_email_confirm_or_cancel_the_subscription(
    browser: Browser, delivery_system: DeliveryHerald
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    yes, no = f"ada@{domain}", f"bob@{domain}"

    async def status(address: str) -> Any:
        answer = await info_of(herald, user.api_key, list_id, address)
        return answer["SubscriberInformation"]["SubscriptionStatus"] if answer["Success"] else answer["ErrorCode"]

    for address in (yes, no):
        await subscribe(herald, list_id, address)
        assert await status(address) == "Opt-In Pending"

    email = await browser.open_email(await confirmation_html(herald, yes, domain))
    assert email.text.startswith("Almost there."), (email.text, CONFIRMATION["HTMLContent"])
    confirmed = await browser.click_link("Yes, subscribe me")
    assert confirmed.url.startswith(f"{browser.origin}/t/confirm/"), confirmed.url
    assert confirmed.title == "Subscription confirmed"
    assert confirmed.text == (
        "Your subscription is confirmed\nThank you: you will receive messages from this list."
    ), confirmed.text
    assert await status(yes) == "Subscribed"

    await browser.open_email(await confirmation_html(herald, no, domain))
    cancelled = await browser.click_link("No, thanks")
    assert cancelled.title == "Subscription cancelled"
    assert cancelled.text.startswith("You will not be subscribed\n"), cancelled.text
    assert await status(no) == 3  # subscriber.get: not found
    assert await status(yes) == "Subscribed"
    assert await browser.trouble() == NO_TROUBLE


async def test_the_checks_see_a_request_to_another_host_and_a_console_error(browser: Browser) -> None:
    """The trouble the other tests find none of is found when it is there."""
    await browser.open(data_url('<p>Hello</p><img src="http://127.0.0.2:9/pixel.gif" alt="">'))
    trouble = await browser.trouble()
    assert trouble.outside_requests == ["http://127.0.0.2:9/pixel.gif"], trouble
    assert any("127.0.0.2:9/pixel.gif" in error for error in trouble.console_errors), trouble
