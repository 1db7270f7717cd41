"""Event webhooks out (docs/webhooks.md) end to end: endpoints over gRPC, campaign events POSTed to a receiver in this process, signed, in order per campaign, once each after an outage, and an endpoint disabled after the retry horizon (6 s in the test system)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from herald.delivery.v1 import event_webhooks_pb2, event_webhooks_pb2_grpc

from tests.conftest import ROOT, Api, System, User, eventually, free_port, grpc_metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")

STATUS_CHANGED = event_webhooks_pb2.WEBHOOK_EVENT_KIND_CAMPAIGN_STATUS_CHANGED
NEXT_YEAR = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 365 * 86400))


def documented_verify() -> Callable[[str, dict[str, str], bytes], None]:
    """The verification recipe of docs/webhooks.md, run as written there."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    section = text.split("### Verifying a delivery", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    namespace: dict[str, Any] = {}
    exec(snippet.group(1), namespace)  # the docs' own recipe
    verify: Callable[[str, dict[str, str], bytes], None] = namespace["verify"]
    return verify


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass
class Receiver:
    """An HTTP server in this process that answers `answer` and records every request; not listening until started."""

    port: int = field(default_factory=free_port)
    answer: int = 200
    deliveries: list[Delivery] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            self.deliveries.append(Delivery({k.lower(): v for k, v in request.headers.items()}, body, self.answer))
            return web.Response(status=self.answer)

        app = web.Application()
        app.router.add_post("/hooks", receive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def delivered(self) -> list[Delivery]:
        return [d for d in self.deliveries if 200 <= d.answered < 300]


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    yield running
    await running.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def webhooks(system: System) -> AsyncIterator[event_webhooks_pb2_grpc.EventWebhookServiceStub]:
    async with grpc.aio.insecure_channel(system.grpc_target("delivery")) as channel:
        yield event_webhooks_pb2_grpc.EventWebhookServiceStub(channel)


async def register(
    webhooks: event_webhooks_pb2_grpc.EventWebhookServiceStub,
    system: System,
    user: User,
    url: str,
    kinds: tuple[int, ...] = (STATUS_CHANGED,),
) -> event_webhooks_pb2.CreateWebhookEndpointResponse:
    created: event_webhooks_pb2.CreateWebhookEndpointResponse = await webhooks.CreateWebhookEndpoint(
        event_webhooks_pb2.CreateWebhookEndpointRequest(url=url, event_kinds=kinds, description="tests"),
        metadata=grpc_metadata(system, user.user_id),
        # A Herald just started may not serve gRPC yet (delivery_system waits for the translator only).
        wait_for_ready=True,
        timeout=60,
    )
    return created


async def endpoint(
    webhooks: event_webhooks_pb2_grpc.EventWebhookServiceStub, system: System, user: User, endpoint_id: int
) -> event_webhooks_pb2.WebhookEndpoint:
    found: event_webhooks_pb2.WebhookEndpoint = await webhooks.GetWebhookEndpoint(
        event_webhooks_pb2.GetWebhookEndpointRequest(endpoint_id=endpoint_id),
        metadata=grpc_metadata(system, user.user_id),
    )
    return found


async def attempts(
    webhooks: event_webhooks_pb2_grpc.EventWebhookServiceStub, system: System, user: User, endpoint_id: int
) -> list[event_webhooks_pb2.WebhookAttempt]:
    answer = await webhooks.ListWebhookAttempts(
        event_webhooks_pb2.ListWebhookAttemptsRequest(endpoint_id=endpoint_id, page_size=1000),
        metadata=grpc_metadata(system, user.user_id),
    )
    return list(answer.attempts)


async def ready_campaign(api: Api, user: User) -> int:
    """A campaign moved Draft → Ready (one status change)."""
    email_id = (await api.call("email.create", user.api_key))["EmailID"]
    list_id = (await api.call("list.create", user.api_key, SubscriberListName="hooks"))["ListID"]
    campaign_id: int = (await api.call("campaign.create", user.api_key, CampaignName="Hooks"))["CampaignID"]
    body = await api.call(
        "campaign.update",
        user.api_key,
        CampaignID=campaign_id,
        RelEmailID=email_id,
        RecipientListsAndSegments=str(list_id),
        ScheduleType="Future",
        SendDate=NEXT_YEAR,
        SendTime="09:00:00",
    )
    assert body["Success"] is True, body
    body = await api.call("campaign.update", user.api_key, CampaignID=campaign_id, CampaignStatus="Ready")
    assert body["Success"] is True, body
    return campaign_id


async def pause_resume_cancel(api: Api, user: User, campaign_id: int) -> None:
    """Ready → Paused → Ready → Draft: three more status changes."""
    for command in ("campaign.pause", "campaign.resume", "campaign.cancel"):
        body = await api.call(command, user.api_key, CampaignID=campaign_id)
        assert body["Success"] is True, (command, body)


EXPECTED_STATUSES = [
    "CAMPAIGN_STATUS_READY",
    "CAMPAIGN_STATUS_PAUSED",
    "CAMPAIGN_STATUS_READY",
    "CAMPAIGN_STATUS_DRAFT",
]


async def test_a_receiver_that_was_down_gets_every_event_once_in_order_per_campaign_signed(
    system: System,
    api: Api,
    make_user: Any,
    receiver: Receiver,
    webhooks: event_webhooks_pb2_grpc.EventWebhookServiceStub,
) -> None:
    user = await make_user()
    created = await register(webhooks, system, user, receiver.url)
    endpoint_id = created.endpoint.endpoint_id
    assert created.signing_secret.startswith("whsec_")
    assert created.endpoint.enabled and created.endpoint.url == receiver.url
    # Down: nothing listens (connections refused) while both campaigns change four times each.
    campaigns = [await ready_campaign(api, user) for _ in range(2)]
    for campaign_id in campaigns:
        await pause_resume_cancel(api, user, campaign_id)

    async def refused_logged() -> bool:
        return any(a.status_code == 0 and a.error for a in await attempts(webhooks, system, user, endpoint_id))

    assert await eventually(refused_logged, within=10)
    # Then up but failing: 500.
    receiver.answer = 500
    await receiver.start()
    assert await eventually(lambda: _true_if(any(d.answered == 500 for d in receiver.deliveries)), within=10)
    receiver.answer = 200

    async def all_delivered() -> bool:
        return len(receiver.delivered()) >= 8

    assert await eventually(all_delivered, within=20), [d.event for d in receiver.deliveries]
    delivered = receiver.delivered()
    ids = [d.headers["webhook-id"] for d in delivered]
    assert len(ids) == len(set(ids)) == 8, ids
    verify = documented_verify()
    by_campaign: dict[int, list[str]] = {}
    for delivery in delivered:
        verify(created.signing_secret, delivery.headers, delivery.body)
        event = delivery.event
        assert event["id"] == delivery.headers["webhook-id"] and event["type"] == "campaign.status_changed"
        assert event["data"]["owner_user_id"] == str(user.user_id)
        by_campaign.setdefault(int(event["data"]["campaign_id"]), []).append(event["data"]["status"])
    assert by_campaign == {campaign_id: EXPECTED_STATUSES for campaign_id in campaigns}
    # Every retry of an event carried the same id, and a forged body does not verify.
    assert {d.headers["webhook-id"] for d in receiver.deliveries} == set(ids)
    with pytest.raises(ValueError, match="signature"):
        verify(created.signing_secret, delivered[0].headers, delivered[0].body.replace(b"READY", b"SENT_"))
    with pytest.raises(ValueError, match="replay"):
        verify(created.signing_secret, {**delivered[0].headers, "webhook-timestamp": "1000"}, delivered[0].body)

    # The log: refused connections, 500s, then one 2xx per event, with latencies; the endpoint healthy.
    log = await attempts(webhooks, system, user, endpoint_id)
    assert sum(a.delivered for a in log) == 8
    assert {a.status_code for a in log} >= {0, 500, 200}
    assert all(a.latency_ms >= 0 and a.attempt_number >= 1 and a.event_id in ids for a in log)
    assert [a.attempt_id for a in log] == sorted((a.attempt_id for a in log), reverse=True)
    shown = await endpoint(webhooks, system, user, endpoint_id)
    assert shown.enabled and shown.pending_events == 0 and not shown.HasField("failing_since_time")
    # The delivery service counts them (docs/operations.md, "Metrics").
    async with aiohttp.ClientSession() as session, session.get(system.metrics_urls()["delivery"]) as response:
        exported = await response.text()
    for outcome in ("delivered", "failed"):
        found = re.search(rf'herald_event_webhook_attempts_total{{outcome="{outcome}"}} (\S+)', exported)
        assert found is not None and float(found.group(1)) >= 1, outcome


async def _true_if(value: bool) -> bool:
    return value


async def test_an_endpoint_failing_past_the_retry_horizon_is_disabled_with_its_reason_and_can_be_enabled(
    system: System,
    api: Api,
    make_user: Any,
    receiver: Receiver,
    webhooks: event_webhooks_pb2_grpc.EventWebhookServiceStub,
) -> None:
    user = await make_user()
    receiver.answer = 500
    await receiver.start()
    created = await register(webhooks, system, user, receiver.url)
    endpoint_id = created.endpoint.endpoint_id
    campaign_id = await ready_campaign(api, user)

    async def disabled() -> event_webhooks_pb2.WebhookEndpoint | None:
        shown = await endpoint(webhooks, system, user, endpoint_id)
        return None if shown.enabled else shown

    shown = await eventually(disabled, within=20, interval=0.3)
    assert shown is not None, "the endpoint was not disabled"
    assert "HTTP 500" in shown.disabled_reason and "retry horizon" in shown.disabled_reason
    assert shown.HasField("disable_time") and shown.pending_events == 1
    log = await attempts(webhooks, system, user, endpoint_id)
    assert len(log) >= 3 and all(a.status_code == 500 and not a.delivered for a in log)
    numbers = sorted(a.attempt_number for a in log)
    assert numbers == list(range(1, len(log) + 1))
    # The backoff grows: the attempts span the horizon with fewer tries than fixed 0.2 s steps would make.
    assert len(log) < 6 / 0.2
    tried = len(receiver.deliveries)
    # Disabled: no more attempts.
    await asyncio.sleep(1.0)
    assert len(receiver.deliveries) == tried

    receiver.answer = 200
    enabled = await webhooks.EnableWebhookEndpoint(
        event_webhooks_pb2.EnableWebhookEndpointRequest(endpoint_id=endpoint_id),
        metadata=grpc_metadata(system, user.user_id),
    )
    assert enabled.enabled and enabled.disabled_reason == ""

    async def delivered() -> bool:
        return bool(receiver.delivered())

    assert await eventually(delivered, within=10)
    event = receiver.delivered()[0].event
    assert event["data"]["campaign_id"] == str(campaign_id) and event["data"]["status"] == "CAMPAIGN_STATUS_READY"


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_another_user_can_neither_see_nor_change_an_endpoint_nor_receive_its_events(
    system: System,
    api: Api,
    make_user: Any,
    webhooks: event_webhooks_pb2_grpc.EventWebhookServiceStub,
) -> None:
    owner, other = await make_user(), await make_user()
    mine, theirs = Receiver(), Receiver()
    await mine.start()
    await theirs.start()
    try:
        created = await register(webhooks, system, owner, mine.url)
        await register(webhooks, system, other, theirs.url)
        endpoint_id = created.endpoint.endpoint_id
        as_other = grpc_metadata(system, other.user_id)
        for call in (
            webhooks.GetWebhookEndpoint(
                event_webhooks_pb2.GetWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=as_other
            ),
            webhooks.DeleteWebhookEndpoint(
                event_webhooks_pb2.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=as_other
            ),
            webhooks.EnableWebhookEndpoint(
                event_webhooks_pb2.EnableWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=as_other
            ),
            webhooks.ListWebhookAttempts(
                event_webhooks_pb2.ListWebhookAttemptsRequest(endpoint_id=endpoint_id), metadata=as_other
            ),
        ):
            assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
        listed = await webhooks.ListWebhookEndpoints(
            event_webhooks_pb2.ListWebhookEndpointsRequest(), metadata=as_other
        )
        assert [e.endpoint_id for e in listed.endpoints] != [endpoint_id] and len(listed.endpoints) == 1
        # A token without Campaign.Get may not manage endpoints.
        narrow = grpc_metadata(system, owner.user_id, permissions=["Campaign.Create"])
        denied = await rpc_error(
            webhooks.ListWebhookEndpoints(event_webhooks_pb2.ListWebhookEndpointsRequest(), metadata=narrow)
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

        campaign_id = await ready_campaign(api, owner)
        assert await eventually(lambda: _true_if(bool(mine.delivered())), within=10)
        await asyncio.sleep(0.5)
        assert [int(d.event["data"]["campaign_id"]) for d in mine.delivered()] == [campaign_id]
        assert theirs.deliveries == []

        await webhooks.DeleteWebhookEndpoint(
            event_webhooks_pb2.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id),
            metadata=grpc_metadata(system, owner.user_id),
        )
        gone = await rpc_error(
            webhooks.GetWebhookEndpoint(
                event_webhooks_pb2.GetWebhookEndpointRequest(endpoint_id=endpoint_id),
                metadata=grpc_metadata(system, owner.user_id),
            )
        )
        assert gone.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await mine.stop()
        await theirs.stop()


@pytest.mark.parametrize(
    ("url", "kinds", "reason"),
    [
        ("ftp://example.com/hook", (STATUS_CHANGED,), "WEBHOOK_URL_INVALID"),
        ("https://user:pw@example.com/hook", (STATUS_CHANGED,), "WEBHOOK_URL_INVALID"),
        ("not a url", (STATUS_CHANGED,), "WEBHOOK_URL_INVALID"),
        ("https://" + "a" * 2050 + ".example/", (STATUS_CHANGED,), "WEBHOOK_URL_INVALID"),
        # A name that never resolves (RFC 6761's .invalid); the same in every pytest-xdist process's collection.
        ("https://nowhere.invalid/hook", (STATUS_CHANGED,), "WEBHOOK_URL_INVALID"),
        ("http://127.0.0.1:9/hook", (), "WEBHOOK_EVENT_KINDS_INVALID"),
        ("http://127.0.0.1:9/hook", (0,), "WEBHOOK_EVENT_KINDS_INVALID"),
        ("http://127.0.0.1:9/hook", (99,), "WEBHOOK_EVENT_KINDS_INVALID"),
    ],
)
async def test_a_bad_endpoint_is_refused_with_its_reason(
    system: System,
    user: User,
    webhooks: event_webhooks_pb2_grpc.EventWebhookServiceStub,
    url: str,
    kinds: tuple[int, ...],
    reason: str,
) -> None:
    from services.common.grpcutil import decode_error

    error = await rpc_error(register(webhooks, system, user, url, kinds))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert decode_error(error).reason == reason


async def test_herald_webhooks_creates_an_endpoint_shows_its_log_and_deletes_it(
    system: System, api: Api, user: User, receiver: Receiver
) -> None:
    from tests.e2e.test_cli import herald

    await receiver.start()
    created = await herald(
        system, "webhooks", "create", "--user", str(user.user_id), "--url", receiver.url,
        "--event", "campaign.status_changed", "--event", "recipient.sent",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    shown = json.loads(created.stdout)
    assert shown["SigningSecret"].startswith("whsec_")
    assert shown["Endpoint"]["Events"] == ["campaign.status_changed", "recipient.sent"]
    endpoint_id = str(shown["Endpoint"]["EndpointID"])

    await ready_campaign(api, user)
    assert await eventually(lambda: _true_if(bool(receiver.delivered())), within=10)
    documented_verify()(shown["SigningSecret"], receiver.delivered()[0].headers, receiver.delivered()[0].body)
    log = json.loads(
        (
            await herald(system, "webhooks", "attempts", "--user", str(user.user_id), "--endpoint", endpoint_id)
        ).stdout
    )
    assert (
        log[0]["StatusCode"] == 200 and log[0]["Delivered"] is True and log[0]["Type"] == "campaign.status_changed"
    )

    removed = await herald(system, "webhooks", "delete", "--user", str(user.user_id), "--endpoint", endpoint_id)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout) == {"UserID": user.user_id, "EndpointID": int(endpoint_id), "Deleted": True}


async def test_per_recipient_events_of_a_real_send_reach_the_endpoint_once_each_in_order_after_an_outage(
    delivery_system: Any, receiver: Receiver
) -> None:
    from tests.e2e.delivery_helpers import audience, started_campaign, wait_for_status

    herald = delivery_system
    system: System = herald.system
    user = await herald.new_user()
    kinds = (
        STATUS_CHANGED,
        event_webhooks_pb2.WEBHOOK_EVENT_KIND_RECIPIENT_QUEUED,
        event_webhooks_pb2.WEBHOOK_EVENT_KIND_RECIPIENT_SENT,
    )
    async with grpc.aio.insecure_channel(system.grpc_target("delivery")) as channel:
        stub = event_webhooks_pb2_grpc.EventWebhookServiceStub(channel)
        created = await register(stub, system, user, receiver.url, kinds)
        _, subscribers, list_id = await audience(herald, user, 5)
        receiver.answer = 500
        await receiver.start()
        campaign_id = await started_campaign(herald, user, [list_id], name="Hooked")
        assert await wait_for_status(herald.api, user, campaign_id, "Sent", within=30) == "Sent"
        receiver.answer = 200
        addresses = sorted(person.email for person in subscribers)

        async def everything() -> bool:
            types = [d.event["type"] for d in receiver.delivered()]
            return (
                types.count("recipient.sent") == 5
                and types.count("recipient.queued") == 5
                and (json.loads(receiver.delivered()[-1].body)["data"].get("status") == "CAMPAIGN_STATUS_SENT")
            )

        assert await eventually(everything, within=30), [d.event["type"] for d in receiver.delivered()]
        log = await attempts(stub, system, user, created.endpoint.endpoint_id)
    delivered = receiver.delivered()
    ids = [d.headers["webhook-id"] for d in delivered]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert any(a.status_code == 500 for a in log) and sum(a.delivered for a in log) == len(delivered)
    verify = documented_verify()
    order: list[tuple[str, str]] = []
    for delivery in delivered:
        verify(created.signing_secret, delivery.headers, delivery.body)
        event = delivery.event
        assert event["data"]["campaign_id"] == str(campaign_id)
        assert event["data"]["owner_user_id"] == str(user.user_id)
        order.append((event["type"], event["data"].get("email_address", event["data"].get("status", ""))))
    assert sorted(address for kind, address in order if kind == "recipient.sent") == addresses
    assert all(order.index(("recipient.queued", a)) < order.index(("recipient.sent", a)) for a in addresses)
    # The campaign's last status change (Sending → Sent) follows every recipient's events.
    assert order[-1] == ("campaign.status_changed", "CAMPAIGN_STATUS_SENT")


async def test_a_rotated_secret_signs_at_once_and_the_previous_one_only_for_its_grace_time(
    system: System,
    api: Api,
    make_user: Any,
    receiver: Receiver,
    webhooks: event_webhooks_pb2_grpc.EventWebhookServiceStub,
) -> None:
    from google.protobuf import duration_pb2

    from services.common.grpcutil import decode_error

    user = await make_user()
    await receiver.start()
    created = await register(webhooks, system, user, receiver.url)
    endpoint_id, old = created.endpoint.endpoint_id, created.signing_secret
    as_owner = grpc_metadata(system, user.user_id)
    verify = documented_verify()

    rotated = await webhooks.RotateWebhookSecret(
        event_webhooks_pb2.RotateWebhookSecretRequest(endpoint_id=endpoint_id), metadata=as_owner
    )
    assert rotated.signing_secret.startswith("whsec_") and rotated.signing_secret != old
    grace = rotated.previous_secret_expire_time.ToDatetime() - created.endpoint.create_time.ToDatetime()
    assert 86000 < grace.total_seconds() < 86800
    campaign_id = await ready_campaign(api, user)
    assert await eventually(lambda: _true_if(len(receiver.delivered()) == 1), within=10)
    first = receiver.delivered()[0]
    assert len(first.headers["webhook-signature"].split()) == 2
    verify(rotated.signing_secret, first.headers, first.body)
    verify(old, first.headers, first.body)

    # Rotated again without grace: only the newest secret signs.
    newest = await webhooks.RotateWebhookSecret(
        event_webhooks_pb2.RotateWebhookSecretRequest(
            endpoint_id=endpoint_id, previous_secret_grace=duration_pb2.Duration(seconds=0)
        ),
        metadata=as_owner,
    )
    assert not newest.HasField("previous_secret_expire_time")
    await api.call("campaign.pause", user.api_key, CampaignID=campaign_id)
    assert await eventually(lambda: _true_if(len(receiver.delivered()) == 2), within=10)
    second = receiver.delivered()[1]
    verify(newest.signing_secret, second.headers, second.body)
    for stale in (old, rotated.signing_secret):
        with pytest.raises(ValueError, match="signature"):
            verify(stale, second.headers, second.body)

    too_long = await rpc_error(
        webhooks.RotateWebhookSecret(
            event_webhooks_pb2.RotateWebhookSecretRequest(
                endpoint_id=endpoint_id, previous_secret_grace=duration_pb2.Duration(seconds=8 * 86400)
            ),
            metadata=as_owner,
        )
    )
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert decode_error(too_long).reason == "WEBHOOK_SECRET_GRACE_INVALID"
    theirs = await rpc_error(
        webhooks.RotateWebhookSecret(
            event_webhooks_pb2.RotateWebhookSecretRequest(endpoint_id=endpoint_id),
            metadata=grpc_metadata(system, (await make_user()).user_id),
        )
    )
    assert theirs.code() == grpc.StatusCode.NOT_FOUND
