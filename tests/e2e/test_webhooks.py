"""Provider webhooks end to end: a campaign is sent over SMTP, then SES (through SNS), SendGrid and Postmark
report bounces and complaints about its recipients to the real translator, and delivery records them.

The recipient token in every payload comes from the mail the recorder received: its X-Herald-Token header
and its envelope sender (the return path). Where a message lacks them (a build without the return-path
work), the token is computed from the campaign and recipient ids with ReturnPaths, exactly as delivery
signs it. Each provider is tried with a valid and an invalid signature; the Herald under test trusts this
process's keys (tests/webhook_keys.py, through tests/conftest.py herald_env), and its SNS "host" is
LocalSns, an HTTPS server here with a certificate of the test authority.

A delivery service without RecordBounces answers UNIMPLEMENTED: then a verified webhook answers 503 (the
provider keeps the events), which these tests check before they skip what they cannot see recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.return_path import ReturnPaths, bounce_domain
from tests.conftest import User, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    audience,
    eventually,
    queued_recipients,
    started_campaign,
    wait_for_status,
)
from tests.webhook_keys import (
    TOPIC_ARN,
    LocalSns,
    postmark_basic_auth,
    postmark_bounce,
    postmark_spam_complaint,
    sendgrid_event,
    sendgrid_headers,
    ses_bounce,
    ses_complaint,
    sns_notification,
    sns_subscription_confirmation,
    webhook_keys,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

RECIPIENTS = 10
NEEDS_DELIVERY_CORE = (
    "DeliveryService.RecordBounces is not implemented in this build (it comes with the delivery core)"
)


@dataclass(frozen=True)
class Mailed:
    """One recipient of the sent campaign, as the mail it received names it."""

    address: str
    recipient_id: int
    token: str
    return_path: str


@dataclass
class Campaign:
    herald: DeliveryHerald
    user: User
    campaign_id: int
    recipients: list[Mailed]
    # Whether the tokens came from the received mail (True) or were computed from the ids.
    tokens_from_mail: bool


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def campaign(delivery_system: DeliveryHerald) -> Campaign:
    """A campaign of RECIPIENTS subscribers sent to the recorder; each test reports about recipients of its own."""
    herald = delivery_system
    user = await herald.new_user()
    domain, _, list_id = await audience(herald, user, RECIPIENTS)
    campaign_id = await started_campaign(herald, user, [list_id], name="Webhooks")
    assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=60) == "Sent"

    env = herald.system.env
    paths = ReturnPaths(
        bounce_domain(env.get("HERALD_BOUNCE_DOMAIN", ""), herald.system.base_url), env["HERALD_TOKEN_SECRET"]
    )
    rows = {row.email_address.lower(): row for row in await queued_recipients(herald.system, user, campaign_id)}
    mailed, from_mail = [], []
    for received in herald.recorder.messages_to(domain):
        row = rows[received.recipient.lower()]
        expected = paths.token(campaign_id, row.recipient_id)
        header = received.header("X-Herald-Token")
        if header:
            assert header == expected, "the mail's token is the one delivery signs for its recipient"
            assert paths.verify_address(received.sender).recipient_id == row.recipient_id
        from_mail.append(bool(header))
        return_path = received.sender if header else paths.address(campaign_id, row.recipient_id)
        mailed.append(Mailed(received.recipient, row.recipient_id, header or expected, return_path))
    assert len(mailed) == RECIPIENTS
    return Campaign(herald, user, campaign_id, sorted(mailed, key=lambda m: m.address), all(from_mail))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sns() -> AsyncIterator[LocalSns]:
    server = await LocalSns(webhook_keys().authority.server_context()).start()
    yield server
    await server.close()


async def post(campaign: Campaign, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with campaign.herald.api.session.post(
        campaign.herald.system.base_url + path, data=body, headers=headers
    ) as r:
        return r.status, await r.json(content_type=None)


async def bounces_of(campaign: Campaign, mailed: Mailed) -> list[delivery_pb2.Bounce]:
    rows = await queued_recipients(campaign.herald.system, campaign.user, campaign.campaign_id)
    [row] = [row for row in rows if row.recipient_id == mailed.recipient_id]
    return list(row.bounces)


async def delivery_records_bounces(campaign: Campaign) -> bool:
    async with grpc.aio.insecure_channel(campaign.herald.system.grpc_target("delivery")) as channel:
        try:
            await delivery_pb2_grpc.DeliveryServiceStub(channel).RecordBounces(
                delivery_pb2.RecordBouncesRequest(),
                metadata=grpc_metadata(campaign.herald.system, 0, is_admin=True, service="tests"),
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


async def assert_recorded(campaign: Campaign, answer: tuple[int, Any], *, reported: int = 1) -> None:
    """A verified call: recorded (200) where delivery records bounces, else 503 and the test stops here."""
    status, body = answer
    if not await delivery_records_bounces(campaign):
        assert status == 503, body
        pytest.skip(NEEDS_DELIVERY_CORE)
    assert status == 200, body
    assert body == {"reported": reported, "ignored": 0, "unverified": 0}


async def recorded_bounce(campaign: Campaign, mailed: Mailed) -> delivery_pb2.Bounce:
    async def recorded() -> list[delivery_pb2.Bounce]:
        return await bounces_of(campaign, mailed)

    bounces = await eventually(recorded)
    assert len(bounces) == 1, bounces
    return bounces[0]


# --- SES through SNS -----------------------------------------------------------------------------------------


async def post_sns(campaign: Campaign, document: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": str(document["Type"])}
    return await post(campaign, "/webhooks/ses", json.dumps(document).encode(), headers)


async def test_the_sns_subscription_is_confirmed_at_the_sns_host(campaign: Campaign, sns: LocalSns) -> None:
    keys = webhook_keys()
    certificate_url = sns.publish_certificate(keys.sns_certificate)
    document = sns_subscription_confirmation(
        sns.subscribe_url("confirm-me"), "confirm-me", certificate_url, keys.sns_key
    )
    fetched, confirmed = len(sns.fetches), len(sns.confirmations)
    assert await post_sns(campaign, document) == (200, {"confirmed": True})
    # The translator fetched the signing certificate and visited the SubscribeURL, both over TLS it verified.
    assert sns.fetches[fetched:] == [certificate_url.rsplit("/", 1)[1]]
    assert [(c["Token"], c["TopicArn"]) for c in sns.confirmations[confirmed:]] == [("confirm-me", TOPIC_ARN)]
    # A confirmation for another topic is refused before anything is fetched.
    other = sns_subscription_confirmation(
        sns.subscribe_url("other"), "other", certificate_url, keys.sns_key, topic=TOPIC_ARN + "-other"
    )
    assert (await post_sns(campaign, other))[0] == 403
    assert len(sns.confirmations) == confirmed + 1


async def test_a_signed_ses_bounce_is_recorded_for_the_recipient_its_return_path_names(
    campaign: Campaign, sns: LocalSns
) -> None:
    keys = webhook_keys()
    mailed = campaign.recipients[0]
    notification = ses_bounce(mailed.return_path, mailed.address, diagnostic="smtp; 550 5.1.1 <x>: user unknown")
    document = sns_notification(notification, sns.publish_certificate(keys.sns_certificate), keys.sns_key)
    await assert_recorded(campaign, await post_sns(campaign, document))
    bounce = await recorded_bounce(campaign, mailed)
    assert bounce.source == delivery_pb2.BOUNCE_SOURCE_SES
    assert (bounce.kind, bounce.status_code, bounce.reply_code) == (delivery_pb2.BOUNCE_KIND_HARD, "5.1.1", 550)
    # SNS delivering the same notification again changes nothing.
    await assert_recorded(campaign, await post_sns(campaign, document))
    assert len(await bounces_of(campaign, mailed)) == 1


async def test_a_signed_ses_complaint_is_recorded_by_the_token_header(campaign: Campaign, sns: LocalSns) -> None:
    keys = webhook_keys()
    mailed = campaign.recipients[1]
    notification = ses_complaint("news@herald.example", mailed.address, headers=[("X-Herald-Token", mailed.token)])
    document = sns_notification(
        notification, sns.publish_certificate(keys.sns_certificate), keys.sns_key, version="1"
    )
    await assert_recorded(campaign, await post_sns(campaign, document))
    bounce = await recorded_bounce(campaign, mailed)
    assert (bounce.kind, bounce.source) == (delivery_pb2.BOUNCE_KIND_COMPLAINT, delivery_pb2.BOUNCE_SOURCE_SES)


async def test_an_ses_notification_with_a_bad_signature_changes_nothing(campaign: Campaign, sns: LocalSns) -> None:
    keys = webhook_keys()
    mailed = campaign.recipients[2]
    certificate_url = sns.publish_certificate(keys.sns_certificate)
    genuine = sns_notification(
        ses_bounce(campaign.recipients[9].return_path, "x@example.com"), certificate_url, keys.sns_key
    )
    # The genuine signature of another recipient's notification, over a message naming this one.
    forged = {**genuine, "Message": json.dumps(ses_bounce(mailed.return_path, mailed.address))}
    elsewhere = {**genuine, "SigningCertURL": certificate_url.replace("127.0.0.1", "localhost")}
    for document in (forged, elsewhere):
        status, _ = await post_sns(campaign, document)
        assert status == 403
    assert await bounces_of(campaign, mailed) == []
    assert await bounces_of(campaign, campaign.recipients[9]) == []


# --- SendGrid ------------------------------------------------------------------------------------------------


async def post_sendgrid(
    campaign: Campaign, events: list[dict[str, Any]], key: ec.EllipticCurvePrivateKey
) -> tuple[int, Any]:
    body = json.dumps(events).encode()
    return await post(campaign, "/webhooks/sendgrid", body, sendgrid_headers(body, key))


async def test_a_signed_sendgrid_bounce_is_recorded_once(campaign: Campaign) -> None:
    mailed = campaign.recipients[3]
    event = sendgrid_event(
        "bounce",
        mailed.address,
        mailed.token,
        type="bounce",
        status="5.1.1",
        reason="550 5.1.1 mailbox unavailable",
    )
    await assert_recorded(campaign, await post_sendgrid(campaign, [event], webhook_keys().sendgrid_key))
    await assert_recorded(campaign, await post_sendgrid(campaign, [event], webhook_keys().sendgrid_key))
    bounce = await recorded_bounce(campaign, mailed)
    assert (bounce.source, bounce.status_code, bounce.reply_code) == (
        delivery_pb2.BOUNCE_SOURCE_SENDGRID,
        "5.1.1",
        550,
    )


async def test_sendgrid_events_with_a_bad_signature_change_nothing(campaign: Campaign) -> None:
    mailed = campaign.recipients[4]
    events = [sendgrid_event("spamreport", mailed.address, mailed.token)]
    assert (await post_sendgrid(campaign, events, ec.generate_private_key(ec.SECP256R1())))[0] == 403
    body = json.dumps(events).encode()
    stale = sendgrid_headers(body, webhook_keys().sendgrid_key, timestamp=1_700_000_000)
    assert (await post(campaign, "/webhooks/sendgrid", body, stale))[0] == 403
    assert await bounces_of(campaign, mailed) == []


# --- Postmark ------------------------------------------------------------------------------------------------


async def test_a_postmark_complaint_with_the_secret_is_recorded(campaign: Campaign) -> None:
    mailed = campaign.recipients[5]
    record = postmark_spam_complaint(mailed.address, mailed.token)
    auth = postmark_basic_auth(webhook_keys().postmark_secret)
    await assert_recorded(campaign, await post(campaign, "/webhooks/postmark", json.dumps(record).encode(), auth))
    bounce = await recorded_bounce(campaign, mailed)
    assert (bounce.kind, bounce.source) == (
        delivery_pb2.BOUNCE_KIND_COMPLAINT,
        delivery_pb2.BOUNCE_SOURCE_POSTMARK,
    )


async def test_a_postmark_soft_bounce_with_the_secret_is_recorded(campaign: Campaign) -> None:
    mailed = campaign.recipients[6]
    record = postmark_bounce(
        mailed.address,
        mailed.token,
        bounce_type="SoftBounce",
        type_code=4096,
        details="smtp;452 4.2.2 Mailbox full",
    )
    headers = {"X-Herald-Webhook-Token": webhook_keys().postmark_secret}
    await assert_recorded(
        campaign, await post(campaign, "/webhooks/postmark", json.dumps(record).encode(), headers)
    )
    bounce = await recorded_bounce(campaign, mailed)
    assert (bounce.kind, bounce.status_code, bounce.reply_code) == (delivery_pb2.BOUNCE_KIND_SOFT, "4.2.2", 452)


async def test_a_postmark_bounce_with_a_wrong_secret_changes_nothing(campaign: Campaign) -> None:
    mailed = campaign.recipients[7]
    body = json.dumps(postmark_bounce(mailed.address, mailed.token)).encode()
    for headers in ({}, postmark_basic_auth("not-the-secret"), {"X-Herald-Webhook-Token": "nope"}):
        status, _ = await post(campaign, "/webhooks/postmark", body, headers)
        assert status == 401
    assert await bounces_of(campaign, mailed) == []


# --- every provider -------------------------------------------------------------------------------------------


async def test_a_report_naming_a_recipient_by_address_only_is_acknowledged_and_changes_nothing(
    campaign: Campaign, sns: LocalSns
) -> None:
    keys = webhook_keys()
    mailed = campaign.recipients[8]
    document = sns_notification(
        ses_bounce("news@herald.example", mailed.address),
        sns.publish_certificate(keys.sns_certificate),
        keys.sns_key,
    )
    unverified = {"reported": 0, "ignored": 0, "unverified": 1}
    assert await post_sns(campaign, document) == (200, unverified)
    assert await post_sendgrid(campaign, [sendgrid_event("bounce", mailed.address, None)], keys.sendgrid_key) == (
        200,
        unverified,
    )
    record = json.dumps(postmark_bounce(mailed.address, None)).encode()
    assert await post(campaign, "/webhooks/postmark", record, postmark_basic_auth(keys.postmark_secret)) == (
        200,
        unverified,
    )
    assert await bounces_of(campaign, mailed) == []


async def test_the_campaign_statistics_count_what_the_webhooks_recorded(campaign: Campaign) -> None:
    """Whatever ran before, each recorded bounce and complaint is counted once under its kind."""
    if not await delivery_records_bounces(campaign):
        pytest.skip(NEEDS_DELIVERY_CORE)
    kinds = [bounce.kind for mailed in campaign.recipients for bounce in await bounces_of(campaign, mailed)]
    async with grpc.aio.insecure_channel(campaign.herald.system.grpc_target("delivery")) as channel:
        answer = await delivery_pb2_grpc.DeliveryServiceStub(channel).BatchGetCampaignStatistics(
            delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=[campaign.campaign_id]),
            metadata=grpc_metadata(campaign.herald.system, campaign.user.user_id, service="tests"),
        )
    [statistics] = answer.statistics
    assert statistics.total_hard_bounces == kinds.count(delivery_pb2.BOUNCE_KIND_HARD)
    assert statistics.total_soft_bounces == kinds.count(delivery_pb2.BOUNCE_KIND_SOFT)
    assert statistics.total_policy_rejections == kinds.count(delivery_pb2.BOUNCE_KIND_POLICY)
    assert statistics.total_spam_complaints == kinds.count(delivery_pb2.BOUNCE_KIND_COMPLAINT)


async def test_a_provider_herald_does_not_know_is_not_found(campaign: Campaign) -> None:
    """Anything but the three webhook paths stays the translator's ordinary 404 (a provider without its key
    or secret answers the same: tests/unit/test_webhook_endpoints.py)."""
    async with aiohttp.ClientSession() as session:
        async with session.post(campaign.herald.system.base_url + "/webhooks/mailgun", data=b"{}") as response:
            assert response.status == 404
