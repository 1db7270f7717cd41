"""SendGrid's Event Webhook: the ECDSA signature over timestamp + body, the replay window, and which events
become which reports (recipient named by the signed herald_token only)."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from herald.delivery.v1 import delivery_pb2

from services.common.return_path import ReturnPaths
from tests.webhook_keys import sendgrid_event, sendgrid_headers
from translator.webhooks._common import Recipients, Refused
from translator.webhooks.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridSignature,
    findings_of,
    public_key,
)

NOW = 1_800_000_000
PATHS = ReturnPaths("bounces.herald.example", "test secret")
RECIPIENTS = Recipients(PATHS)


def shown_key(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def signature(key: ec.EllipticCurvePrivateKey) -> SendGridSignature:
    return SendGridSignature(public_key(shown_key(key)), max_age_seconds=600, clock=lambda: NOW)


def verify(signature: SendGridSignature, headers: dict[str, str], body: bytes) -> None:
    signature.verify(headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER), body)


BODY = json.dumps([{"event": "bounce", "email": "a@example.com", "sg_event_id": "e1"}]).encode()


def test_a_signed_body_verifies(key: ec.EllipticCurvePrivateKey, signature: SendGridSignature) -> None:
    verify(signature, sendgrid_headers(BODY, key, NOW), BODY)
    # A little clock skew either way is fine.
    verify(signature, sendgrid_headers(BODY, key, NOW + 300), BODY)
    verify(signature, sendgrid_headers(BODY, key, NOW - 600), BODY)


def test_a_tampered_body_or_timestamp_is_refused(
    key: ec.EllipticCurvePrivateKey, signature: SendGridSignature
) -> None:
    headers = sendgrid_headers(BODY, key, NOW)
    with pytest.raises(Refused) as caught:
        verify(signature, headers, BODY.replace(b"bounce", b"bounced"))
    assert caught.value.status == 403
    with pytest.raises(Refused):
        verify(signature, {**headers, TIMESTAMP_HEADER: str(NOW - 1)}, BODY)


def test_a_body_signed_with_another_key_is_refused(signature: SendGridSignature) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(Refused) as caught:
        verify(signature, sendgrid_headers(BODY, other, NOW), BODY)
    assert (caught.value.status, caught.value.reason) == (403, "signature does not verify")


@pytest.mark.parametrize("age", [601, 3600, -601])
def test_a_stale_or_future_timestamp_is_refused_even_when_signed(
    age: int, key: ec.EllipticCurvePrivateKey, signature: SendGridSignature
) -> None:
    """A captured request replayed later is refused, however good its signature."""
    with pytest.raises(Refused) as caught:
        verify(signature, sendgrid_headers(BODY, key, NOW - age), BODY)
    assert caught.value.status == 403 and "window" in caught.value.reason


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({TIMESTAMP_HEADER: str(NOW)}, 401),
        ({SIGNATURE_HEADER: "c2ln"}, 401),
        ({SIGNATURE_HEADER: "c2ln", TIMESTAMP_HEADER: "yesterday"}, 400),
        ({SIGNATURE_HEADER: "c2ln", TIMESTAMP_HEADER: "1e9"}, 400),
        ({SIGNATURE_HEADER: "not base64!", TIMESTAMP_HEADER: str(NOW)}, 403),
        ({SIGNATURE_HEADER: base64.b64encode(b"\x30\x02\x00\x00").decode(), TIMESTAMP_HEADER: str(NOW)}, 403),
    ],
)
def test_missing_or_malformed_headers_are_refused(
    headers: dict[str, str], status: int, signature: SendGridSignature
) -> None:
    with pytest.raises(Refused) as caught:
        verify(signature, headers, BODY)
    assert caught.value.status == status


def test_the_key_is_read_as_sendgrid_shows_it_or_as_pem(key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public_key(shown_key(key)).public_numbers() == key.public_key().public_numbers()
    assert public_key(pem.decode()).public_numbers() == key.public_key().public_numbers()
    wrapped = "\n".join(shown_key(key)[i : i + 40] for i in range(0, len(shown_key(key)), 40))
    assert public_key(wrapped).public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(
    "text",
    [
        "not a key",
        base64.b64encode(b"garbage").decode(),
        shown_key(ec.generate_private_key(ec.SECP384R1())),
        base64.b64encode(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).decode(),
    ],
)
def test_a_key_that_is_no_p256_public_key_stops_the_start(text: str) -> None:
    with pytest.raises(ValueError):
        public_key(text)


def test_the_real_clock_is_used_by_default(key: ec.EllipticCurvePrivateKey) -> None:
    signature = SendGridSignature(public_key(shown_key(key)), max_age_seconds=600)
    verify(signature, sendgrid_headers(BODY, key), BODY)
    with pytest.raises(Refused):
        verify(signature, sendgrid_headers(BODY, key, int(time.time()) - 900), BODY)


# --- events -------------------------------------------------------------------------------------------------


def test_a_bounce_becomes_a_report_with_the_codes_and_a_hard_hint() -> None:
    token = PATHS.token(41, 7)
    event = sendgrid_event(
        "bounce", "a@example.com", token, type="bounce", status="5.0.0", reason="550 5.1.1 No such user here"
    )
    findings = findings_of([event], RECIPIENTS)
    assert (findings.ignored, findings.unverified) == (0, 0)
    [report] = findings.reports
    assert (report.campaign_id, report.recipient_id) == (41, 7)
    assert report.kind_hint == delivery_pb2.BOUNCE_KIND_HARD
    assert report.source == delivery_pb2.BOUNCE_SOURCE_SENDGRID
    assert (report.status_code, report.reply_code) == ("5.1.1", 550)
    assert report.diagnostic == "550 5.1.1 No such user here"
    assert report.event_key == f"sendgrid:{event['sg_event_id']}"
    assert report.occur_time.seconds == event["timestamp"]


def test_a_block_is_left_to_the_classifier_and_a_spam_report_is_a_complaint() -> None:
    token = PATHS.token(41, 8)
    blocked = sendgrid_event(
        "bounce", "b@example.com", token, type="blocked", status="5.7.1", reason="554 5.7.1 blocked"
    )
    spam = sendgrid_event("spamreport", "b@example.com", token)
    reports = findings_of([blocked, spam], RECIPIENTS).reports
    assert [r.kind_hint for r in reports] == [
        delivery_pb2.BOUNCE_KIND_UNSPECIFIED,
        delivery_pb2.BOUNCE_KIND_COMPLAINT,
    ]
    assert (reports[0].status_code, reports[0].reply_code) == ("5.7.1", 554)
    assert reports[1].event_key != reports[0].event_key


def test_dropped_deferred_and_engagement_events_are_ignored() -> None:
    token = PATHS.token(41, 9)
    events = [
        sendgrid_event(kind, "c@example.com", token, reason="Bounced Address")
        for kind in ("dropped", "deferred", "delivered", "processed", "open", "click", "unsubscribe")
    ]
    findings = findings_of([*events, "not an event", 7, None], RECIPIENTS)
    assert (len(findings.reports), findings.ignored, findings.unverified) == (0, 10, 0)


def test_a_bounce_without_a_token_herald_signed_changes_nothing() -> None:
    forged = PATHS.token(41, 10)[:-2] + "aa"
    other_install = ReturnPaths("bounces.herald.example", "another secret").token(41, 10)
    events = [
        sendgrid_event("bounce", "d@example.com", None),
        sendgrid_event("bounce", "d@example.com", forged),
        sendgrid_event("spamreport", "d@example.com", other_install),
        {**sendgrid_event("bounce", "d@example.com", None), "herald_token": 12345},
    ]
    findings = findings_of(events, RECIPIENTS)
    assert (len(findings.reports), findings.unverified) == (0, 4)


def test_an_event_without_an_id_is_keyed_by_its_content() -> None:
    event = sendgrid_event("bounce", "e@example.com", PATHS.token(41, 11), reason="550 gone")
    del event["sg_event_id"]
    first = findings_of([event], RECIPIENTS).reports[0].event_key
    assert first.startswith("sendgrid:sha256:")
    assert findings_of([dict(reversed(list(event.items())))], RECIPIENTS).reports[0].event_key == first


@pytest.mark.parametrize("body", [{"event": "bounce"}, "bounce", 1, None])
def test_a_body_that_is_no_array_is_refused(body: object) -> None:
    with pytest.raises(Refused) as caught:
        findings_of(body, RECIPIENTS)
    assert caught.value.status == 400
