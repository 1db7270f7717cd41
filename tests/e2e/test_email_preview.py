"""email.emailpreview end to end: legacy HTTP → EmailService.SendEmailPreview → signed event → delivery → SMTP recorder."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.personalization import HashedIds
from tests.e2e.delivery_helpers import DeliveryHerald, Received, audience, create_email, new_domain, ok
from translator.commands.email import PREVIEW_RATE_LIMIT

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBJECT = "Hello {{ Subscriber:FirstName }}"
HTML = (
    "<p>Dear %Subscriber:FirstName% (%Subscriber:EmailAddress%), news.</p><p>[%List:ListID%/{{ List:Name }}/"
    "%Subscriber:Status%/%Subscriber:SubscriptionDate%/%Subscriber:SubscriptionIP%/"
    "%Subscriber:HashedSubscriberID%]</p>"
)
PLAIN = "Dear %Subscriber:FirstName%, news."


async def preview_at(herald: DeliveryHerald, address: str, within: float = 30.0) -> Received:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = [m for m in herald.recorder.messages_to(address.rpartition("@")[2]) if m.recipient == address]
        if found:
            [message] = found
            return message
        await asyncio.sleep(0.2)
    raise AssertionError(f"no preview reached {address}")


async def test_a_preview_arrives_marked_as_a_test_and_personalized_with_the_lists_first_subscriber(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    _, readers, list_id = await audience(herald, user, 3)
    email_id = await create_email(herald.api, user, subject=SUBJECT, html=HTML, plain=PLAIN)
    address = f"me@{new_domain()}"
    body = await herald.api.call(
        "email.emailpreview", user.api_key, EmailID=email_id, EmailAddress=address, ListID=list_id
    )
    assert body["Success"] is True, body
    message = await preview_at(herald, address)
    first = readers[0]
    assert message.header("Subject") == f"[Test] Hello {first.first_name}"
    assert f"Dear {first.first_name} ({first.email})" in message.text()
    # The catalog's other tags show that subscriber and its list too.
    info = (await ok(herald.api, "subscriber.get", user.api_key, ListID=list_id, EmailAddress=first.email))[
        "SubscriberInformation"
    ]
    hashed = HashedIds(herald.system.env["HERALD_TOKEN_SECRET"]).subscriber(info["SubscriberID"])
    assert (
        f"[{list_id}/Readers/Subscribed/{info['SubscriptionDate']}/{info['SubscriptionIP']}/{hashed}]"
        in message.text()
    ), message.text()
    # Nothing in a preview acts on the subscriber whose values it shows.
    assert message.header("List-Unsubscribe") == "" and "/t/u/" not in message.text()

    sample = f"me@{new_domain()}"
    body = await herald.api.call("email.emailpreview", user.api_key, EmailID=email_id, EmailAddress=sample)
    assert body["Success"] is True, body
    message = await preview_at(herald, sample)
    assert message.header("Subject") == "[Test] Hello Sample"


async def test_another_users_email_or_list_answers_like_one_that_does_not_exist(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    owner, stranger = await herald.new_user(), await herald.new_user()
    email_id = await create_email(herald.api, owner)
    _, _, list_id = await audience(herald, owner, 1)
    own_email = await create_email(herald.api, stranger)
    address = f"me@{new_domain()}"
    foreign = await herald.api.call("email.emailpreview", stranger.api_key, EmailID=email_id, EmailAddress=address)
    missing = await herald.api.call("email.emailpreview", stranger.api_key, EmailID=10**12, EmailAddress=address)
    assert (foreign["Success"], foreign["ErrorCode"]) == (False, 3), foreign
    # The same answer, word for word, as for an id nobody has: no way to tell someone else's email exists.
    assert foreign == missing
    foreign_list = await herald.api.call(
        "email.emailpreview", stranger.api_key, EmailID=own_email, EmailAddress=address, ListID=list_id
    )
    assert (foreign_list["Success"], foreign_list["ErrorCode"]) == (False, 6), foreign_list
    bad = await herald.api.call("email.emailpreview", stranger.api_key, EmailID=own_email, EmailAddress="nope")
    assert bad["ErrorCode"] == [4], bad
    await asyncio.sleep(1.0)
    assert herald.recorder.messages_to(address.rpartition("@")[2]) == []


async def test_previews_are_rate_limited_per_user(delivery_system: DeliveryHerald) -> None:
    herald = delivery_system
    user, other = await herald.new_user(), await herald.new_user()
    limit, window = PREVIEW_RATE_LIMIT
    for _ in range(int(limit)):
        status, body = await herald.api.post({"Command": "email.emailpreview", "APIKey": user.api_key})
        assert status == 200 and body["ErrorCode"] == [1, 2], body
    status, body = await herald.api.post({"Command": "email.emailpreview", "APIKey": user.api_key})
    assert status == 429 and body["ErrorCode"] == 429, body
    status, body = await herald.api.post({"Command": "email.emailpreview", "APIKey": other.api_key})
    assert status == 200 and body["ErrorCode"] == [1, 2], body
    assert window == 60.0
