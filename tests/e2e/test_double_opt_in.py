"""Double opt-in end to end: subscriber.subscribe on a Double list → the confirmation email over real SMTP → its links.

A Herald of its own (the `delivery_system` fixture) sends to the SMTP recorder; the confirm and reject
links in the recorded message are opened with HTTP GET like a reader's browser would.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import nats
import psycopg
import pytest
from google.protobuf import json_format
from herald.audience.v1 import audience_pb2

from services.common import events
from services.common.natsutil import Subjects
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    create_campaign,
    create_email,
    new_domain,
    ok,
    send,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

FORM_IP = "198.51.100.30"
CONFIRMATION = {
    "Subject": "Please confirm your subscription, %Subscriber:EmailAddress%",
    "FromName": "Herald News",
    "FromEmail": "news@herald.example",
    "ContentType": "Both",
    "HTMLContent": (
        '<html><body><p>Almost there.</p><a href="%Link:Confirm%">Yes, subscribe me</a> '
        '<a href="{{ Link:Reject }}">No, thanks</a></body></html>'
    ),
    "PlainContent": "Confirm: %Link:Confirm%\nNot you? %Link:Reject%",
}
_LINK = re.compile(r"https?://[^\s\"'<>]+/t/(confirm|reject)/[A-Za-z0-9_-]+")


async def double_list(herald: DeliveryHerald, api_key: str) -> int:
    body = await ok(
        herald.api, "list.create", api_key, SubscriberListName="Double", ConfirmationEmail=CONFIRMATION
    )
    list_id: int = body["ListID"]
    return list_id


async def subscribe(herald: DeliveryHerald, list_id: int, address: str) -> dict[str, Any]:
    status, body = await herald.api.post(
        {"Command": "Subscriber.Subscribe", "ListID": list_id, "EmailAddress": address, "IPAddress": FORM_IP}
    )
    assert status == 200 and body["Success"] is True, body
    result: dict[str, Any] = body
    return result


async def info_of(herald: DeliveryHerald, api_key: str, list_id: int, address: str) -> dict[str, Any]:
    body: dict[str, Any] = await herald.api.call("subscriber.get", api_key, ListID=list_id, EmailAddress=address)
    return body


def links_in(text: str) -> dict[str, str]:
    return {match.group(1): match.group(0) for match in _LINK.finditer(text)}


async def opened(herald: DeliveryHerald, url: str) -> tuple[int, str]:
    async with herald.api.session.get(url) as response:
        return response.status, await response.text()


async def test_a_confirmed_double_opt_in_subscriber_gets_campaigns_and_a_pending_one_does_not(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    visitor = f"ada@{domain}"

    body = await subscribe(herald, list_id, visitor)
    assert body["Subscriber"]["SubscriptionStatus"] == "Opt-In Pending"
    await herald.recorder.wait_for(domain, 1, within=30)
    [confirmation] = herald.recorder.messages_to(domain)
    assert confirmation.recipient.lower() == visitor
    assert confirmation.header("Subject") == f"Please confirm your subscription, {visitor}"
    assert confirmation.header("From") == "Herald News <news@herald.example>"
    assert confirmation.header("List-Unsubscribe") == ""  # not subscribed yet: its reject link instead
    assert confirmation.sender.startswith("b-")  # the signed return path: bounces come back
    links = links_in(confirmation.text())
    assert set(links) == {"confirm", "reject"}, confirmation.text()

    # A campaign sent while the subscriber is pending does not reach them (it reaches the list's other,
    # confirmed subscriber).
    other_domain = new_domain()
    await ok(
        herald.api,
        "subscriber.create",
        user.api_key,
        ListID=list_id,
        EmailAddress=f"old@{other_domain}",
        SubscriptionDate="2025-01-02",
        SubscriptionIP=FORM_IP,
        OptInDate="2025-01-02",
    )
    email_id = await create_email(herald.api, user)
    pending_campaign = await create_campaign(herald.api, user, email_id, [list_id], name="While pending")
    await send(herald.api, user, pending_campaign)
    await wait_for_status(herald.api, user, pending_campaign, "Sent", within=30)
    assert len(herald.recorder.messages_to(domain)) == 1
    assert len(herald.recorder.messages_to(other_domain)) == 1

    status, page = await opened(herald, links["confirm"])
    assert status == 200 and "confirmed" in page, page
    info = (await info_of(herald, user.api_key, list_id, visitor))["SubscriberInformation"]
    assert info["SubscriptionStatus"] == "Subscribed"
    assert info["OptInDate"], info
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        row = await (
            await conn.execute("SELECT optin_ip FROM audience.subscribers WHERE email_key = %s", (visitor,))
        ).fetchone()
    assert row == ("127.0.0.1",)  # the address the link was opened from (no trusted proxy here)
    # The link works twice with the same answer; the reject link of a confirmed subscription is dead.
    assert (await opened(herald, links["confirm"]))[0] == 200
    assert (await opened(herald, links["reject"]))[0] == 404

    campaign_id = await create_campaign(herald.api, user, email_id, [list_id], name="After confirming")
    await send(herald.api, user, campaign_id)
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    received = herald.recorder.messages_to(domain)
    assert len(received) == 2
    assert received[1].header("X-Herald-Campaign") == str(campaign_id)


async def test_a_reject_link_removes_the_pending_subscriber(delivery_system: DeliveryHerald) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    visitor = f"bob@{domain}"
    await subscribe(herald, list_id, visitor)
    await herald.recorder.wait_for(domain, 1, within=30)
    links = links_in(herald.recorder.messages_to(domain)[0].text())

    status, page = await opened(herald, links["reject"])
    assert status == 200 and "will not be subscribed" in page, page
    assert (await info_of(herald, user.api_key, list_id, visitor))["ErrorCode"] == 3  # not found
    assert (await opened(herald, links["reject"]))[0] == 200  # idempotent
    # The confirm link of a rejected subscription is a dead link, like a forged one.
    assert (await opened(herald, links["confirm"]))[0] == 404


async def test_a_second_subscribe_within_the_hour_sends_no_second_confirmation(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    visitor = f"cy@{domain}"
    await subscribe(herald, list_id, visitor)
    await herald.recorder.wait_for(domain, 1, within=30)
    # The answer is the duplicate of any status (no oracle); the confirmation is not sent again.
    status, again = await herald.api.post(
        {"Command": "Subscriber.Subscribe", "ListID": list_id, "EmailAddress": visitor, "IPAddress": FORM_IP}
    )
    assert status == 200 and again["ErrorCode"] == 9, again
    await asyncio.sleep(3)
    assert len(herald.recorder.messages_to(domain)) == 1


async def test_a_forged_or_tampered_opt_in_link_is_a_plain_404(delivery_system: DeliveryHerald) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    await subscribe(herald, list_id, f"dee@{domain}")
    await herald.recorder.wait_for(domain, 1, within=30)
    confirm = links_in(herald.recorder.messages_to(domain)[0].text())["confirm"]
    token = confirm.rsplit("/", 1)[1]
    tampered = confirm[: -len(token)] + ("A" if token[0] != "A" else "B") + token[1:]
    for url in (tampered, confirm.replace("/t/confirm/", "/t/reject/"), confirm + "x"):
        status, page = await opened(herald, url)
        assert status == 404 and "not valid" in page, (url, page)
    info = (await info_of(herald, user.api_key, list_id, f"dee@{domain}"))["SubscriberInformation"]
    assert info["SubscriptionStatus"] == "Opt-In Pending"


async def test_list_create_refuses_a_confirmation_email_without_the_confirm_link(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    without = {**CONFIRMATION, "PlainContent": "No link here"}
    body = await herald.api.call(
        "list.create", user.api_key, SubscriberListName="No link", ConfirmationEmail=without
    )
    assert body["Success"] is False and body["ErrorCode"] in (30, [30]), body
    lists = await ok(herald.api, "lists.get", user.api_key)
    assert lists["TotalListCount"] == 0


async def test_subscriber_create_with_status_opt_in_pending_sends_the_confirmation(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    address = f"eve@{domain}"
    body = await ok(
        herald.api,
        "subscriber.create",
        user.api_key,
        ListID=list_id,
        EmailAddress=address,
        Status="Opt-In Pending",
        SubscriptionDate="2025-01-02",
        SubscriptionIP=FORM_IP,
        SendConfirmationEmail=True,
    )
    assert body["SubscriberInformation"]["SubscriptionStatus"] == "Opt-In Pending"
    await herald.recorder.wait_for(domain, 1, within=30)
    confirm = links_in(herald.recorder.messages_to(domain)[0].text())["confirm"]
    assert (await opened(herald, confirm))[0] == 200
    info = (await info_of(herald, user.api_key, list_id, address))["SubscriberInformation"]
    assert info["SubscriptionStatus"] == "Subscribed"


async def test_subscriber_create_sends_the_confirmation_only_with_send_confirmation_email(
    delivery_system: DeliveryHerald,
) -> None:
    """SendConfirmationEmail defaults to false (the fact sheet): without it, or false, an Opt-In Pending
    subscriber is added and sent nothing; with it, the confirmation goes out."""
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    pending = {"Status": "Opt-In Pending", "SubscriptionDate": "2025-01-02", "SubscriptionIP": FORM_IP}
    for address, flag in ((f"quiet@{domain}", {}), (f"off@{domain}", {"SendConfirmationEmail": "0"})):
        body = await ok(
            herald.api, "subscriber.create", user.api_key, ListID=list_id, EmailAddress=address, **pending, **flag
        )
        assert body["SubscriberInformation"]["SubscriptionStatus"] == "Opt-In Pending", body
    await ok(
        herald.api,
        "subscriber.create",
        user.api_key,
        ListID=list_id,
        EmailAddress=f"asked@{domain}",
        **pending,
        SendConfirmationEmail="true",
    )
    await herald.recorder.wait_for(domain, 1, within=30)
    await asyncio.sleep(1)  # anything requested before the asked-for one has arrived by now too
    assert [m.recipient for m in herald.recorder.messages_to(domain)] == [f"asked@{domain}"]
    # Only the asked-for subscriber's confirmation was requested at all.
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        rows = await (
            await conn.execute(
                "SELECT email_address FROM audience.subscribers WHERE list_id = %s AND opt_in_requested_at IS NOT NULL",
                (list_id,),
            )
        ).fetchall()
    assert [row[0] for row in rows] == [f"asked@{domain}"]
    # The quiet ones are still pending; they can still be asked (a form submission sends theirs).
    info = (await info_of(herald, user.api_key, list_id, f"quiet@{domain}"))["SubscriberInformation"]
    assert info["SubscriptionStatus"] == "Opt-In Pending"
    status, again = await herald.api.post(
        {
            "Command": "Subscriber.Subscribe",
            "ListID": list_id,
            "EmailAddress": f"quiet@{domain}",
            "IPAddress": FORM_IP,
        }
    )
    assert status == 200 and again["ErrorCode"] == 9, again
    await herald.recorder.wait_for(domain, 2, within=30)
    assert sorted(m.recipient for m in herald.recorder.messages_to(domain)) == [
        f"asked@{domain}",
        f"quiet@{domain}",
    ]


async def test_a_pending_subscriber_subscribing_again_after_an_hour_is_sent_the_confirmation_again(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    domain = new_domain()
    visitor = f"fay@{domain}"
    await subscribe(herald, list_id, visitor)
    await herald.recorder.wait_for(domain, 1, within=30)
    # The hour passes.
    async with await psycopg.AsyncConnection.connect(herald.system.env["DATABASE_URL"], autocommit=True) as conn:
        await conn.execute(
            "UPDATE audience.subscribers SET opt_in_requested_at = opt_in_requested_at - interval '61 minutes' "
            "WHERE list_id = %s",
            (list_id,),
        )
    status, again = await herald.api.post(
        {"Command": "Subscriber.Subscribe", "ListID": list_id, "EmailAddress": visitor, "IPAddress": FORM_IP}
    )
    assert status == 200 and again["ErrorCode"] == 9, again
    await herald.recorder.wait_for(domain, 2, within=30)
    first, second = herald.recorder.messages_to(domain)
    assert links_in(first.text()) == links_in(second.text())  # the same subscription, the same links


async def test_an_unsigned_confirmation_request_on_nats_sends_nothing(delivery_system: DeliveryHerald) -> None:
    """An insider with NATS credentials cannot make delivery mail an address: only audience signs requests."""
    herald = delivery_system
    user = await herald.new_user()
    list_id = await double_list(herald, user.api_key)
    email_id = (await ok(herald.api, "list.get", user.api_key, ListID=list_id))["List"]["OptInConfirmationEmailID"]
    domain = new_domain()
    forged = audience_pb2.OptInConfirmationRequestedEvent(
        owner_user_id=user.user_id,
        list_id=list_id,
        subscriber_id=1,
        email_address=f"victim@{domain}",
        email_id=email_id,
    )
    forged.request_time.GetCurrentTime()
    payload = json.dumps(json_format.MessageToDict(forged, preserving_proto_field_name=True)).encode()
    subjects = Subjects(herald.system.env["HERALD_NATS_NAMESPACE"])
    client = await nats.connect(herald.nats.url)
    try:
        await client.jetstream().publish(subjects.event(events.OPT_IN_CONFIRMATION_REQUESTED), payload)
    finally:
        await client.close()
    # A real request after it is sent, so the forged one was consumed (and refused) by then.
    real = new_domain()
    await subscribe(herald, list_id, f"real@{real}")
    await herald.recorder.wait_for(real, 1, within=30)
    await asyncio.sleep(1)
    assert herald.recorder.messages_to(domain) == []


async def test_an_edited_confirmation_email_is_what_the_next_subscriber_gets(
    delivery_system: DeliveryHerald,
) -> None:
    herald = delivery_system
    user = await herald.new_user()
    body = await ok(
        herald.api, "list.create", user.api_key, SubscriberListName="Edited", ConfirmationEmail=CONFIRMATION
    )
    list_id, email_id = body["ListID"], body["ConfirmationEmailID"]
    first = new_domain()
    await subscribe(herald, list_id, f"gil@{first}")
    await herald.recorder.wait_for(first, 1, within=30)
    await ok(
        herald.api,
        "email.update",
        user.api_key,
        EmailID=email_id,
        ValidateScope="OptIn",
        Subject="One click to go",
        HTMLContent='<p><a href="%Link:Confirm%">Confirm</a></p>',
        PlainContent="Confirm: %Link:Confirm%",
    )
    second = new_domain()
    await subscribe(herald, list_id, f"hal@{second}")
    await herald.recorder.wait_for(second, 1, within=30)
    [received] = herald.recorder.messages_to(second)
    assert received.header("Subject") == "One click to go"
    assert set(links_in(received.text())) == {"confirm"}
