"""Several relays end to end: a Herald whose SMTP_URL names two SMTP servers of this process (relays a and b).

One relay is killed mid-send: the campaign still ends Sent, every recipient got exactly one message across the
two servers (only the messages in flight on the dead relay may be ambiguous, each a visible Failed row), the dead
relay's share went to the other, and after a health check the relay takes mail again. Routing: a From domain
routed to b (HERALD_SMTP_ROUTES) and a campaign set to relay a over gRPC (Campaign.relay) go only there; a
campaign naming a relay that SMTP_URL lacks fails with that reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Backing, User, grpc_metadata
from tests.e2e.delivery_helpers import (
    DeliveryHerald,
    SmtpRecorder,
    audience,
    create_campaign,
    create_email,
    delivery_herald,
    eventually,
    ok,
    queued_recipients,
    send,
    status_of,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROUTED_DOMAIN = "routed.example"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def relays(
    backing: Backing, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[DeliveryHerald, SmtpRecorder, SmtpRecorder]]:
    """Herald with relays a (the helper's recorder) and b (a second recorder), equal weights, a route for
    ROUTED_DOMAIN to b, and health checks every half second: (herald, a, b)."""
    b = SmtpRecorder()
    await b.start()
    env = {"HERALD_SMTP_ROUTES": f"{ROUTED_DOMAIN}=b", "HERALD_SMTP_HEALTH_CHECK_SECONDS": "0.5"}
    try:
        async with delivery_herald(
            backing, tmp_path_factory.mktemp("relays"), env, smtp_url=lambda a: f"{a}?name=a, {b.url}?name=b"
        ) as herald:
            yield herald, herald.recorder, b
    finally:
        b.kill()


@pytest_asyncio.fixture(loop_scope="session")
async def user(relays: tuple[DeliveryHerald, SmtpRecorder, SmtpRecorder]) -> User:
    return await relays[0].new_user()


async def relay_up(herald: DeliveryHerald, relay: str) -> dict[str, float]:
    """herald_delivery_relay_up of `relay` in each delivery worker (absent: the worker has not started)."""
    found: dict[str, float] = {}
    urls = {name: url for name, url in herald.system.metrics_urls().items() if name.startswith("delivery-worker")}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for name, url in urls.items():
            try:
                async with session.get(url) as response:
                    text = await response.text()
            except aiohttp.ClientConnectionError:
                continue  # not serving its metrics yet
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "herald_delivery_relay_up" and sample.labels.get("relay") == relay:
                        found[name] = sample.value
    return found


async def campaign(
    herald: DeliveryHerald, user: User, list_id: int, *, sender: str, relay: str = "", name: str = "Relays"
) -> int:
    """A started campaign to the list From `sender`, sent through `relay` when given (UpdateCampaign over gRPC)."""
    email_id = await create_email(herald.api, user, sender=sender)
    campaign_id = await create_campaign(herald.api, user, email_id, [list_id], name=name)
    if relay:
        async with grpc.aio.insecure_channel(herald.system.grpc_target("campaign")) as channel:
            updated = await campaign_pb2_grpc.CampaignServiceStub(channel).UpdateCampaign(
                campaign_pb2.UpdateCampaignRequest(
                    campaign=campaign_pb2.Campaign(campaign_id=campaign_id, relay=relay),
                    update_mask=field_mask_pb2.FieldMask(paths=["relay"]),
                ),
                metadata=grpc_metadata(herald.system, user.user_id),
            )
        assert updated.relay == relay
    await send(herald.api, user, campaign_id)
    return campaign_id


async def test_a_relay_killed_mid_send_hands_its_share_to_the_other_losing_and_duplicating_nobody(
    relays: tuple[DeliveryHerald, SmtpRecorder, SmtpRecorder], user: User
) -> None:
    herald, a, b = relays
    count = 400
    domain, subscribers, list_id = await audience(herald, user, count)
    addresses = [person.email for person in subscribers]
    a.slow_down(domain, 0.05)
    b.slow_down(domain, 0.05)
    campaign_id = await campaign(herald, user, list_id, sender="news@herald.example")

    assert await a.wait_for(domain, 40, within=30) >= 40
    a.kill()
    killed_at = time.monotonic()
    at_a_before_kill = len(a.messages_to(domain))

    # How long until every worker has moved a's share (it marks the relay down on its first failed attempt).
    async def everyone_moved() -> bool:
        return set((await relay_up(herald, "a")).values()) == {0.0}

    moved = await eventually(everyone_moved, within=15, interval=0.05)
    moved_after = time.monotonic() - killed_at

    await wait_for_status(herald.api, user, campaign_id, "Sent", within=60)
    rows = await queued_recipients(herald.system, user, campaign_id)
    assert len(rows) == count
    received = a.counts(domain) + b.counts(domain)
    states = Counter(row.state for row in rows)
    assert set(states) <= {delivery_pb2.RECIPIENT_STATE_SENT, delivery_pb2.RECIPIENT_STATE_FAILED}, states
    ambiguous = [row for row in rows if row.state == delivery_pb2.RECIPIENT_STATE_FAILED]
    for row in rows:
        if row.state == delivery_pb2.RECIPIENT_STATE_SENT:
            assert received[row.email_address.lower()] == 1, row
        else:
            # In flight on a when it died: its content was out, a may have taken it. Visible, never resent.
            assert "ambiguous" in row.last_error, row
            assert received[row.email_address.lower()] <= 1, row
    assert set(received) <= {address.lower() for address in addresses}
    # Only what was in flight on a can be ambiguous: at most the workers' send concurrency.
    workers = int(herald.system.env["HERALD_DELIVERY_WORKERS"])
    assert len(ambiguous) <= workers * int(herald.system.env["HERALD_DELIVERY_CONCURRENCY"]), len(ambiguous)
    # a took nothing after it died; b took everything else.
    assert len(a.messages_to(domain)) == at_a_before_kill
    sent_at_a = sum(
        1
        for row in rows
        if row.state == delivery_pb2.RECIPIENT_STATE_SENT and a.counts(domain)[row.email_address.lower()]
    )
    assert len(b.messages_to(domain)) == states[delivery_pb2.RECIPIENT_STATE_SENT] - sent_at_a
    after_kill = sorted(m.accepted_at for m in b.messages_to(domain) if m.accepted_at >= killed_at)
    gaps = [later - earlier for earlier, later in zip([killed_at, *after_kill], after_kill, strict=False)]
    print(
        f"\nrelay a killed after {at_a_before_kill} of {count} messages: every worker had moved its share "
        f"{moved_after:.2f} s later ({'all' if moved else 'not all'} workers); b took {len(after_kill)} messages "
        f"after the kill, the longest pause at b was {max(gaps, default=0):.2f} s; ambiguous: {len(ambiguous)}"
    )
    assert moved, await relay_up(herald, "a")

    # a comes back: after a health check every worker sends through it again.
    await a.start()

    async def everyone_back() -> bool:
        return set((await relay_up(herald, "a")).values()) == {1.0}

    assert await eventually(everyone_back, within=15, interval=0.1), await relay_up(herald, "a")
    again, people_again, again_list = await audience(herald, user, 40)
    again_id = await campaign(herald, user, again_list, sender="news@herald.example", name="Again")
    await wait_for_status(herald.api, user, again_id, "Sent", within=30)
    assert a.counts(again) and b.counts(again)
    assert a.counts(again) + b.counts(again) == Counter(p.email.lower() for p in people_again)


async def test_a_from_domain_route_and_a_campaigns_relay_decide_where_the_mail_goes(
    relays: tuple[DeliveryHerald, SmtpRecorder, SmtpRecorder], user: User
) -> None:
    herald, a, b = relays
    routed, routed_people, routed_list = await audience(herald, user, 30)
    chosen, chosen_people, chosen_list = await audience(herald, user, 30)
    by_domain = await campaign(herald, user, routed_list, sender=f"news@{ROUTED_DOMAIN}", name="By domain")
    # The campaign's relay wins over its From domain's route.
    by_campaign = await campaign(herald, user, chosen_list, sender=f"news@{ROUTED_DOMAIN}", relay="a", name="Own")
    await wait_for_status(herald.api, user, by_domain, "Sent", within=30)
    await wait_for_status(herald.api, user, by_campaign, "Sent", within=30)
    assert (len(a.messages_to(routed)), len(b.messages_to(routed))) == (0, 30)
    assert (len(a.messages_to(chosen)), len(b.messages_to(chosen))) == (30, 0)
    assert b.counts(routed) == Counter(p.email.lower() for p in routed_people)
    assert a.counts(chosen) == Counter(p.email.lower() for p in chosen_people)


async def test_a_campaign_naming_a_relay_that_smtp_url_lacks_fails_with_that_reason(
    relays: tuple[DeliveryHerald, SmtpRecorder, SmtpRecorder], user: User
) -> None:
    herald, a, b = relays
    domain, _, list_id = await audience(herald, user, 5)
    campaign_id = await campaign(herald, user, list_id, sender="news@herald.example", relay="nowhere")
    assert await wait_for_status(herald.api, user, campaign_id, "Failed", within=30) == "Failed"
    async with grpc.aio.insecure_channel(herald.system.grpc_target("campaign")) as channel:
        got = await campaign_pb2_grpc.CampaignServiceStub(channel).GetCampaign(
            campaign_pb2.GetCampaignRequest(campaign_id=campaign_id),
            metadata=grpc_metadata(herald.system, user.user_id),
        )
    assert "relay 'nowhere' is not one of SMTP_URL's relays (a, b)" in got.status_reason, got.status_reason
    assert not a.messages_to(domain) and not b.messages_to(domain)
    assert await status_of(herald.api, user, campaign_id) == "Failed"


async def test_a_malformed_relay_name_is_refused_by_update_campaign(
    relays: tuple[DeliveryHerald, SmtpRecorder, SmtpRecorder], user: User
) -> None:
    herald, _, _ = relays
    campaign_id = (await ok(herald.api, "campaign.create", user.api_key, CampaignName="Bad relay"))["CampaignID"]
    async with grpc.aio.insecure_channel(herald.system.grpc_target("campaign")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await campaign_pb2_grpc.CampaignServiceStub(channel).UpdateCampaign(
                campaign_pb2.UpdateCampaignRequest(
                    campaign=campaign_pb2.Campaign(campaign_id=campaign_id, relay="no spaces please"),
                    update_mask=field_mask_pb2.FieldMask(paths=["relay"]),
                ),
                metadata=grpc_metadata(herald.system, user.user_id),
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "relay 'no spaces please' is invalid" in (caught.value.details() or ""), caught.value.details()


async def test_relays_share_unrouted_mail_by_weight(
    relays: tuple[DeliveryHerald, SmtpRecorder, SmtpRecorder], user: User
) -> None:
    herald, a, b = relays
    domain, people, list_id = await audience(herald, user, 60)
    campaign_id = await campaign(herald, user, list_id, sender="news@herald.example", name="Shared")
    await wait_for_status(herald.api, user, campaign_id, "Sent", within=30)
    # Equal weights: each worker alternates between a and b, so each gets about half.
    assert 20 <= len(a.messages_to(domain)) <= 40 and 20 <= len(b.messages_to(domain)) <= 40
    assert a.counts(domain) + b.counts(domain) == Counter(p.email.lower() for p in people)
