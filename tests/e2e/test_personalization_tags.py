"""Issue 14: the catalog's personalization tags end to end. list.create's Sender* fields, subscriber.create's
dates and address, and hashed IDs reach the message the SMTP server receives; User: tags are refused when
content is saved, naming them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.common.personalization import HashedIds
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    create_campaign,
    create_email,
    new_domain,
    ok,
    send,
    wait_for_status,
)
from tests.e2e.test_double_opt_in import CONFIRMATION
from tests.e2e.test_import_opt_in import finished_job, import_body

pytestmark = pytest.mark.asyncio(loop_scope="session")

SENDER = {
    "SenderName": "Ada & Co",
    "SenderEmailAddress": "ada@garden.example",
    "SenderCompany": "Garden Ltd",
    "SenderAddress": "1 Rose Lane, Kew",
}
TAGS = (
    "list={{ List:ListID }}/{{ List:Name }}/{{ List:SenderName }}/{{ List:SenderEmailAddress }}/"
    '{{ List:SenderCompany }}/{{ List:SenderAddress | "no address" }}; '
    "subscriber={{ Subscriber:Status }}/{{ Subscriber:SubscriptionDate }}/%Subscriber:SubscriptionIP%/"
    '{{ Subscriber:OptInDate | "never" }}/{{ Subscriber:HashedSubscriberID }}; '
    "campaign={{ Campaign:HashedCampaignID }}"
)
LINE = re.compile(r"list=[^\n]*?campaign=[0-9a-f]*")
WEB_VIEW = re.compile(r"https?://[^\s\"'<>]+/t/view/[A-Za-z0-9_-]+\?e=[0-9]+")


async def subscriber(herald: DeliveryHerald, api_key: str, list_id: int, address: str, **dates: str) -> int:
    body = await ok(
        herald.api, "subscriber.create", api_key, ListID=list_id, EmailAddress=address, FirstName="Grace", **dates
    )
    subscriber_id: int = body["SubscriberInformation"]["SubscriberID"]
    return subscriber_id


async def test_list_sender_fields_subscription_dates_and_hashes_reach_the_sent_message(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    api, user = herald.api, await herald.new_user()
    garden = (await ok(api, "list.create", user.api_key, SubscriberListName="Garden <news>", **SENDER))["ListID"]
    plain_list = (await ok(api, "list.create", user.api_key, SubscriberListName="Plain list"))["ListID"]
    domain = new_domain()
    grace = await subscriber(
        herald,
        user.api_key,
        garden,
        f"grace@{domain}",
        SubscriptionDate="2025-01-02 10:11:12",
        SubscriptionIP="203.0.113.5",
        OptInDate="2025-01-03",
    )
    alan = await subscriber(
        herald,
        user.api_key,
        plain_list,
        f"alan@{domain}",
        SubscriptionDate="2024-06-30",
        SubscriptionIP="198.51.100.9",
    )
    email_id = await create_email(
        api,
        user,
        subject=TAGS,
        html=f'<html><body><p>{TAGS}</p><a href="{{{{ Link:Unsubscribe }}}}">Unsubscribe</a></body></html>',
        plain=f"{TAGS}\n{{{{ Link:Unsubscribe }}}}\nWeb: %Link:WebBrowser%",
    )
    campaign_id = await create_campaign(api, user, email_id, [garden, plain_list], name="Tags")
    await send(api, user, campaign_id)
    assert await wait_for_status(api, user, campaign_id, "Sent", within=60) == "Sent"

    hashed = HashedIds(herald.system.env["HERALD_TOKEN_SECRET"])
    campaign_hash = hashed.campaign(campaign_id)
    expected = {
        f"grace@{domain}": (
            f"list={garden}/Garden <news>/Ada & Co/ada@garden.example/Garden Ltd/1 Rose Lane, Kew; "
            f"subscriber=Subscribed/2025-01-02 10:11:12/203.0.113.5/2025-01-03 00:00:00/{hashed.subscriber(grace)}; "
            f"campaign={campaign_hash}"
        ),
        f"alan@{domain}": (
            f"list={plain_list}/Plain list////no address; "
            f"subscriber=Subscribed/2024-06-30 00:00:00/198.51.100.9/never/{hashed.subscriber(alan)}; "
            f"campaign={campaign_hash}"
        ),
    }
    received = {message.recipient.lower(): message for message in herald.recorder.messages_to(domain)}
    assert set(received) == set(expected)
    for address, line in expected.items():
        message = received[address]
        assert message.header("Subject") == line
        plain_line, html_line = LINE.findall(message.text())
        assert plain_line == line, message.text()
        assert html_line == line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        # The web view shows the same values (the subscriber and list as they are now: unchanged here).
        [web_view] = WEB_VIEW.findall(message.text())
        async with api.session.get(web_view) as response:
            assert response.status == 200
            assert html_line in await response.text()
    assert len({hashed.subscriber(grace), hashed.subscriber(alan), campaign_hash}) == 3


async def test_a_confirmation_email_shows_its_lists_sender_and_the_pending_status(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    confirmation = {
        **CONFIRMATION,
        "Subject": (
            "Confirm {{ List:Name }} from {{ List:SenderCompany }} ({{ Subscriber:Status }}, "
            "{{ Subscriber:SubscriptionIP }}, {{ Subscriber:SubscriptionDate }})"
        ),
    }
    list_id = (
        await ok(
            herald.api,
            "list.create",
            user.api_key,
            SubscriberListName="Double news",
            ConfirmationEmail=confirmation,
            **SENDER,
        )
    )["ListID"]
    domain = new_domain()
    status, body = await herald.api.post(
        {
            "Command": "Subscriber.Subscribe",
            "ListID": list_id,
            "EmailAddress": f"eve@{domain}",
            "IPAddress": "198.51.100.30",
        }
    )
    assert status == 200 and body["Success"] is True, body
    assert await herald.recorder.wait_for(domain, 1, within=60) == 1
    [received] = herald.recorder.messages_to(domain)
    subject = received.header("Subject")
    assert re.fullmatch(
        r"Confirm Double news from Garden Ltd \(Opt-In Pending, 198\.51\.100\.30, "
        r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d\)",
        subject,
    ), subject
    info = await ok(herald.api, "subscriber.get", user.api_key, ListID=list_id, EmailAddress=f"eve@{domain}")
    assert subject.endswith(f", {info['SubscriberInformation']['SubscriptionDate']})"), (subject, info)


@pytest.mark.parametrize(
    ("field", "content", "named"),
    [
        (
            "HTMLContent",
            '<p>{{ User:FirstName }} of {{ User:CompanyName | "Acme" }}, %User:Phone%</p>',
            "html_content: User: tags are not supported (Herald keeps no account profile to fill them from): "
            '{{ User:FirstName }}, {{ User:CompanyName | "Acme" }}, %User:Phone%',
        ),
        (
            "Subject",
            "News from %User:EmailAddress%",
            "subject: User: tags are not supported (Herald keeps no account profile to fill them from): "
            "%User:EmailAddress%",
        ),
        (
            "PlainContent",
            "{{ List:Owner }} %Campaign:Budget%",
            "plain_content: unknown personalization tags: {{ List:Owner }}, %Campaign:Budget%",
        ),
    ],
)
async def test_content_with_tags_herald_cannot_fill_is_refused_naming_them(
    delivery_system: DeliveryHerald, field: str, content: str, named: str
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    email_id = (await ok(herald.api, "email.create", user.api_key))["EmailID"]
    params: dict[str, Any] = {
        "Subject": "Hello",
        "FromEmail": "news@example.com",
        "HTMLContent": "<p>Hi</p>",
        "PlainContent": "Hi",
        field: content,
    }
    body = await herald.api.call(
        "email.update", user.api_key, EmailID=email_id, ValidateScope="Campaign", **params
    )
    assert body["Success"] is False, body
    codes = body["ErrorCode"] if isinstance(body["ErrorCode"], list) else [body["ErrorCode"]]
    texts = body["ErrorText"] if isinstance(body["ErrorText"], list) else [body["ErrorText"]]
    assert dict(zip(codes, texts, strict=True))[21] == named
    # Nothing was stored: the email still has no subject.
    stored = await ok(herald.api, "email.get", user.api_key, EmailID=email_id)
    assert stored["EmailInformation"]["Subject"] == ""


async def test_list_create_refuses_a_confirmation_email_with_a_user_tag_and_creates_no_list(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    confirmation = {**CONFIRMATION, "Subject": "Confirm your subscription to %User:CompanyName%"}
    body = await herald.api.call(
        "list.create", user.api_key, SubscriberListName="User tag", ConfirmationEmail=confirmation
    )
    assert body["Success"] is False and body["ErrorCode"] in (30, [30]), body
    assert "User: tags are not supported" in str(body["ErrorText"]) and "%User:CompanyName%" in str(
        body["ErrorText"]
    ), body
    assert (await ok(herald.api, "lists.get", user.api_key))["TotalListCount"] == 0


async def test_an_imported_subscribers_confirmation_email_shows_its_list_status_and_subscription_date(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    confirmation = {
        **CONFIRMATION,
        "Subject": (
            "{{ List:Name }} by {{ List:SenderName }}: {{ Subscriber:Status }} since "
            '{{ Subscriber:SubscriptionDate }} from {{ Subscriber:SubscriptionIP | "nowhere" }}'
        ),
    }
    list_id = (
        await ok(
            herald.api,
            "list.create",
            user.api_key,
            SubscriberListName="Imported news",
            ConfirmationEmail=confirmation,
            **SENDER,
        )
    )["ListID"]
    domain = new_domain()
    status, answer = await herald.api.post(
        import_body(user.api_key, list_id, f"ann@{domain},Ann\n"), path="/api/v1/subscribers.import"
    )
    assert status == 200, answer
    job = await finished_job(herald, user.api_key, list_id, answer["ImportID"])
    assert job["ImportStatus"] == "Completed", job
    assert await herald.recorder.wait_for(domain, 1, within=60) == 1
    [received] = herald.recorder.messages_to(domain)
    info = await ok(herald.api, "subscriber.get", user.api_key, ListID=list_id, EmailAddress=f"ann@{domain}")
    since = info["SubscriberInformation"]["SubscriptionDate"]
    assert since, info
    assert received.header("Subject") == f"Imported news by Ada & Co: Opt-In Pending since {since} from nowhere"
