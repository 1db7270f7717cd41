"""The webhook endpoints over HTTP, in front of a stand-in for delivery: what is verified is recorded (in calls
of at most 1,000), what is not changes nothing and answers 4xx, delivery being away answers 503, an
unconfigured provider answers 404, and no input gets a 5xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from herald.delivery.v1 import delivery_pb2

from services.common.config import Settings
from services.common.return_path import ReturnPaths
from tests.webhook_keys import (
    LocalSns,
    WebhookKeys,
    postmark_basic_auth,
    postmark_bounce,
    sendgrid_event,
    sendgrid_headers,
    ses_bounce,
    sns_notification,
    sns_subscription_confirmation,
    webhook_keys,
)
from translator import webhooks
from translator.app import never_a_stack_trace

SECRET = "unit-test-token-secret"
BOUNCE_DOMAIN = "bounces.herald.example"
PATHS = ReturnPaths(BOUNCE_DOMAIN, SECRET)
MAX_BODY = 2 * 1024 * 1024


@dataclass
class FakeDelivery:
    """DeliveryService.RecordBounces as the webhooks see it: records calls, or fails with `failure`."""

    calls: list[tuple[delivery_pb2.RecordBouncesRequest, dict[str, str]]] = field(default_factory=list)
    failure: grpc.StatusCode | None = None

    async def RecordBounces(
        self, request: delivery_pb2.RecordBouncesRequest, *, metadata: Any, **options: Any
    ) -> delivery_pb2.RecordBouncesResponse:
        if self.failure is not None:
            raise grpc.aio.AioRpcError(self.failure, grpc.aio.Metadata(), grpc.aio.Metadata(), details="away")
        self.calls.append((request, dict(metadata)))
        return delivery_pb2.RecordBouncesResponse(recorded_count=len(request.reports))

    @property
    def reports(self) -> list[delivery_pb2.BounceReport]:
        return [report for request, _ in self.calls for report in request.reports]


def settings_for(keys: WebhookKeys, folder: Path, *, enabled: bool = True) -> Settings:
    if not enabled:
        return Settings(token_secret=SECRET, bounce_domain=BOUNCE_DOMAIN)
    env = keys.env(folder)
    return Settings(
        token_secret=SECRET,
        bounce_domain=BOUNCE_DOMAIN,
        ses_webhook_enabled=True,
        ses_topic_arns=env["HERALD_SES_TOPIC_ARNS"],
        sns_cert_host_pattern=env["HERALD_SNS_CERT_HOST_PATTERN"],
        sns_ca_file=env["HERALD_SNS_CA_FILE"],
        sendgrid_webhook_public_key=env["HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY"],
        postmark_webhook_secret=env["HERALD_POSTMARK_WEBHOOK_SECRET"],
        webhook_max_body_bytes=MAX_BODY,
    )


@dataclass
class Translator:
    client: TestClient[Any, Any]
    delivery: FakeDelivery
    sns: LocalSns
    keys: WebhookKeys

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.client.post(path, data=body, headers=headers or {}) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def ses(self, document: object) -> tuple[int, Any]:
        return await self.post("/webhooks/ses", json.dumps(document).encode(), {"Content-Type": "text/plain"})

    async def sendgrid(self, events: object, *, timestamp: int | None = None) -> tuple[int, Any]:
        body = json.dumps(events).encode()
        return await self.post(
            "/webhooks/sendgrid", body, sendgrid_headers(body, self.keys.sendgrid_key, timestamp)
        )

    async def postmark(self, record: object, secret: str | None = None) -> tuple[int, Any]:
        auth = postmark_basic_auth(self.keys.postmark_secret if secret is None else secret)
        return await self.post("/webhooks/postmark", json.dumps(record).encode(), auth)


async def start(settings: Settings, delivery: FakeDelivery) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[never_a_stack_trace])
    identity = SimpleNamespace(settings=settings, system_token=lambda: "system-token")
    webhooks.add_routes(app, identity, SimpleNamespace(delivery=delivery))  # type: ignore[arg-type]
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest_asyncio.fixture(loop_scope="session")
async def translator(tmp_path: Path) -> AsyncIterator[Translator]:
    keys = webhook_keys()
    sns = await LocalSns(keys.authority.server_context()).start()
    delivery = FakeDelivery()
    client = await start(settings_for(keys, tmp_path), delivery)
    yield Translator(client, delivery, sns, keys)
    await client.close()
    await sns.close()


# --- SES -------------------------------------------------------------------------------------------------


async def test_a_verified_ses_bounce_is_recorded_with_the_translators_token(translator: Translator) -> None:
    url = translator.sns.publish_certificate(translator.keys.sns_certificate)
    document = sns_notification(ses_bounce(PATHS.address(3, 4), "a@example.com"), url, translator.keys.sns_key)
    status, body = await translator.ses(document)
    assert (status, body) == (200, {"reported": 1, "ignored": 0, "unverified": 0})
    [(request, metadata)] = translator.delivery.calls
    assert (request.reports[0].campaign_id, request.reports[0].recipient_id) == (3, 4)
    assert metadata["authorization"] == "Bearer system-token"


async def test_an_ses_message_that_fails_verification_changes_nothing(translator: Translator) -> None:
    url = translator.sns.publish_certificate(translator.keys.sns_certificate)
    document = sns_notification(ses_bounce(PATHS.address(3, 5), "b@example.com"), url, translator.keys.sns_key)
    tampered = {**document, "Message": document["Message"].replace("Permanent", "Transient")}
    assert (await translator.ses(tampered))[0] == 403
    other_host = {**document, "SigningCertURL": url.replace("127.0.0.1", "localhost")}
    assert (await translator.ses(other_host))[0] == 403
    assert translator.delivery.calls == []


async def test_an_ses_subscription_is_confirmed_at_its_subscribe_url(translator: Translator) -> None:
    url = translator.sns.publish_certificate(translator.keys.sns_certificate)
    subscribe = translator.sns.subscribe_url("tok-9")
    document = sns_subscription_confirmation(subscribe, "tok-9", url, translator.keys.sns_key)
    assert await translator.ses(document) == (200, {"confirmed": True})
    assert [c["Token"] for c in translator.sns.confirmations] == ["tok-9"]
    assert translator.delivery.calls == []


async def test_an_ses_bounce_without_a_herald_token_is_acknowledged_and_changes_nothing(
    translator: Translator,
) -> None:
    url = translator.sns.publish_certificate(translator.keys.sns_certificate)
    document = sns_notification(ses_bounce("news@herald.example", "c@example.com"), url, translator.keys.sns_key)
    assert await translator.ses(document) == (200, {"reported": 0, "ignored": 0, "unverified": 1})
    assert translator.delivery.calls == []


# --- SendGrid and Postmark ------------------------------------------------------------------------------------


async def test_a_large_sendgrid_batch_is_recorded_in_calls_of_at_most_a_thousand(translator: Translator) -> None:
    events = [
        sendgrid_event("bounce", f"r{n}@example.com", PATHS.token(8, n + 1), reason="550 5.1.1 unknown")
        for n in range(2500)
    ]
    status, body = await translator.sendgrid([*events, sendgrid_event("delivered", "x@example.com", None)])
    assert (status, body) == (200, {"reported": 2500, "ignored": 1, "unverified": 0})
    assert [len(request.reports) for request, _ in translator.delivery.calls] == [1000, 1000, 500]
    assert sorted(r.recipient_id for r in translator.delivery.reports) == list(range(1, 2501))


async def test_sendgrid_events_that_fail_verification_change_nothing(translator: Translator) -> None:
    events = [sendgrid_event("bounce", "a@example.com", PATHS.token(8, 1))]
    body = json.dumps(events).encode()
    headers = sendgrid_headers(body, translator.keys.sendgrid_key)
    assert (await translator.post("/webhooks/sendgrid", body + b" ", headers))[0] == 403
    assert (await translator.sendgrid(events, timestamp=1_600_000_000))[0] == 403
    assert (await translator.post("/webhooks/sendgrid", body, {}))[0] == 401
    assert translator.delivery.calls == []


async def test_a_postmark_bounce_with_the_secret_is_recorded_and_without_it_changes_nothing(
    translator: Translator,
) -> None:
    record = postmark_bounce("a@example.com", PATHS.token(9, 1), record_id=77)
    async with translator.client.post("/webhooks/postmark", data=json.dumps(record)) as response:
        assert response.status == 401 and "WWW-Authenticate" in response.headers
    assert (await translator.postmark(record, secret="wrong"))[0] == 401
    assert translator.delivery.calls == []
    assert await translator.postmark(record) == (200, {"reported": 1, "ignored": 0, "unverified": 0})
    assert translator.delivery.reports[0].event_key == "postmark:77"
    token_header = {"X-Herald-Webhook-Token": translator.keys.postmark_secret}
    assert (await translator.post("/webhooks/postmark", json.dumps(record).encode(), token_header))[0] == 200


# --- all three --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL]
)
async def test_delivery_being_away_answers_503_so_the_provider_retries(
    code: grpc.StatusCode, translator: Translator
) -> None:
    translator.delivery.failure = code
    url = translator.sns.publish_certificate(translator.keys.sns_certificate)
    answers = [
        await translator.ses(
            sns_notification(ses_bounce(PATHS.address(3, 6), "a@example.com"), url, translator.keys.sns_key)
        ),
        await translator.sendgrid([sendgrid_event("bounce", "a@example.com", PATHS.token(3, 6))]),
        await translator.postmark(postmark_bounce("a@example.com", PATHS.token(3, 6))),
    ]
    assert [status for status, _ in answers] == [503, 503, 503]
    async with translator.client.post(
        "/webhooks/postmark",
        data=json.dumps(postmark_bounce("a@example.com", PATHS.token(3, 6))),
        headers=postmark_basic_auth(translator.keys.postmark_secret),
    ) as response:
        assert response.headers["Retry-After"] == "30"


async def test_an_unconfigured_provider_answers_404(tmp_path: Path) -> None:
    delivery = FakeDelivery()
    client = await start(settings_for(webhook_keys(), tmp_path, enabled=False), delivery)
    try:
        for path in ("/webhooks/ses", "/webhooks/sendgrid", "/webhooks/postmark"):
            async with client.post(path, data=b"[]") as response:
                assert response.status == 404
    finally:
        await client.close()


async def test_a_body_past_the_limit_is_refused_unread(translator: Translator) -> None:
    big = b"[" + b" " * MAX_BODY + b"]"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    auth = postmark_basic_auth(translator.keys.postmark_secret)
    for path in ("/webhooks/ses", "/webhooks/sendgrid", "/webhooks/postmark"):
        headers = {**auth, **sendgrid_headers(big, translator.keys.sendgrid_key)}
        assert (await translator.post(path, big, headers))[0] == 413
        async with translator.client.post(path, data=chunks(), headers=auth) as response:
            assert response.status == 413, path


JUNK = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"{}",
    b'"text"',
    b"[" * 100_000 + b"]" * 100_000,
    b"\xff\xfe\x00garbage",
    b'{"RecordType": "Bounce", "Type": "HardBounce", "Metadata": {"herald_token": "\\ud800"}}',
    b'[{"event": "bounce", "herald_token": "\\ud800", "reason": "\\udfff"}]',
    b'{"Type": "Notification", "Message": "\\ud800"}',
    b'[{"event": "bounce", "timestamp": 1e400, "sg_event_id": [1]}]',
    b'{"RecordType": "Bounce", "Type": "HardBounce", "ID": {"x": 1}, "BouncedAt": "yesterday"}',
    b"NaN",
    b'{"Type": "SubscriptionConfirmation", "Message": "", "MessageId": "", "SubscribeURL": "", '
    b'"Timestamp": "", "Token": "", "TopicArn": "arn:aws:sns:us-east-1:123456789012:herald-ses-feedback", '
    b'"Type": "SubscriptionConfirmation", "SignatureVersion": "1", "Signature": "", "SigningCertURL": ""}',
]


@pytest.mark.parametrize("body", JUNK, ids=range(len(JUNK)))
async def test_no_input_gets_a_5xx(body: bytes, translator: Translator) -> None:
    """Junk that passes each provider's authentication (SendGrid's signed, Postmark's with the secret) still
    gets a 4xx or a 200 that records nothing, never a fault."""
    headers = {
        **postmark_basic_auth(translator.keys.postmark_secret),
        **sendgrid_headers(body, translator.keys.sendgrid_key),
    }
    for path in ("/webhooks/ses", "/webhooks/sendgrid", "/webhooks/postmark"):
        status, _ = await translator.post(path, body, headers)
        assert status < 500, (path, status)
        async with translator.client.get(path) as response:
            assert response.status < 500
    assert translator.delivery.calls == []


async def test_a_verified_sns_message_carrying_junk_is_acknowledged(translator: Translator) -> None:
    url = translator.sns.publish_certificate(translator.keys.sns_certificate)
    for message in (
        "",
        "[",
        '{"notificationType": "Bounce", "bounce": 5, "mail": []}',
        '{"notificationType": []}',
    ):
        document = sns_notification(message, url, translator.keys.sns_key)
        status, _ = await translator.ses(document)
        assert status == 200
    assert translator.delivery.calls == []
