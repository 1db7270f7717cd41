"""Postmark's webhooks: the shared secret (basic auth in the webhook URL, or a token header) and which records
become which reports."""

from __future__ import annotations

import base64

import pytest
from herald.delivery.v1 import delivery_pb2

from services.common.return_path import ReturnPaths
from tests.webhook_keys import postmark_basic_auth, postmark_bounce, postmark_spam_complaint
from translator.webhooks._common import Recipients, Refused
from translator.webhooks.postmark import BOUNCE_TYPES, PostmarkSecret, findings_of

SECRET = "correct horse battery staple"
PATHS = ReturnPaths("bounces.herald.example", "test secret")
RECIPIENTS = Recipients(PATHS)


@pytest.mark.parametrize(
    ("authorization", "token"),
    [
        (postmark_basic_auth(SECRET)["Authorization"], None),
        (postmark_basic_auth(SECRET, user="any-user")["Authorization"], None),
        ("basic " + base64.b64encode(f":{SECRET}".encode()).decode(), None),
        (None, SECRET),
        ("Bearer something-else", SECRET),
        (postmark_basic_auth("wrong")["Authorization"], SECRET),
    ],
)
def test_the_secret_is_accepted_as_basic_auth_password_or_token_header(
    authorization: str | None, token: str | None
) -> None:
    PostmarkSecret(SECRET).check(authorization, token)


@pytest.mark.parametrize(
    ("authorization", "token"),
    [
        (None, None),
        (postmark_basic_auth("wrong")["Authorization"], None),
        (postmark_basic_auth(SECRET + "x")["Authorization"], None),
        (postmark_basic_auth(SECRET[:-1])["Authorization"], None),
        ("Basic " + base64.b64encode(SECRET.encode()).decode(), None),
        ("Basic !!!not-base64", None),
        (f"Bearer {SECRET}", None),
        (None, "wrong"),
        (None, ""),
    ],
)
def test_a_missing_or_wrong_secret_is_refused_with_a_challenge(
    authorization: str | None, token: str | None
) -> None:
    with pytest.raises(Refused) as caught:
        PostmarkSecret(SECRET).check(authorization, token)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Basic ")


def test_a_hard_bounce_becomes_a_report_keyed_by_its_id() -> None:
    record = postmark_bounce("a@example.com", PATHS.token(5, 6), record_id=4323372036854775807)
    [report] = findings_of(record, RECIPIENTS).reports
    assert (report.campaign_id, report.recipient_id) == (5, 6)
    assert report.kind_hint == delivery_pb2.BOUNCE_KIND_HARD
    assert report.source == delivery_pb2.BOUNCE_SOURCE_POSTMARK
    assert (report.status_code, report.reply_code) == ("5.1.1", 550)
    assert report.diagnostic.startswith("smtp;550 5.1.1 The email account")
    assert report.event_key == "postmark:4323372036854775807"
    assert report.HasField("occur_time")


@pytest.mark.parametrize(
    ("bounce_type", "details", "hint", "status"),
    [
        ("SoftBounce", "smtp;452 4.2.2 Mailbox full", delivery_pb2.BOUNCE_KIND_SOFT, "4.2.2"),
        ("Transient", "", delivery_pb2.BOUNCE_KIND_SOFT, ""),
        ("DnsError", "DNS lookup timed out", delivery_pb2.BOUNCE_KIND_SOFT, ""),
        ("BadEmailAddress", "", delivery_pb2.BOUNCE_KIND_HARD, ""),
        (
            "Blocked",
            "smtp;554 5.7.1 Service unavailable; client host blocked",
            delivery_pb2.BOUNCE_KIND_UNSPECIFIED,
            "5.7.1",
        ),
        ("DMARCPolicy", "smtp;550 5.7.26 DMARC policy", delivery_pb2.BOUNCE_KIND_UNSPECIFIED, "5.7.26"),
        ("Unknown", "", delivery_pb2.BOUNCE_KIND_UNSPECIFIED, ""),
    ],
)
def test_bounce_types_give_their_hint_and_the_details_their_codes(
    bounce_type: str, details: str, hint: int, status: str
) -> None:
    record = postmark_bounce("b@example.com", PATHS.token(5, 7), bounce_type=bounce_type, details=details)
    [report] = findings_of(record, RECIPIENTS).reports
    assert (report.kind_hint, report.status_code) == (hint, status)
    # Without Details, Postmark's generic description is the text.
    assert report.diagnostic == (details or record["Description"])


@pytest.mark.parametrize(
    "bounce_type",
    [
        "AutoResponder",
        "AddressChange",
        "Subscribe",
        "Unsubscribe",
        "SpamNotification",
        "ManuallyDeactivated",
        "Bogus",
    ],
)
def test_bounce_types_that_say_nothing_about_the_address_are_ignored(bounce_type: str) -> None:
    findings = findings_of(
        postmark_bounce("c@example.com", PATHS.token(5, 8), bounce_type=bounce_type), RECIPIENTS
    )
    assert (findings.reports, findings.ignored) == ([], 1)


def test_a_spam_complaint_is_a_complaint() -> None:
    record = postmark_spam_complaint("d@example.com", PATHS.token(5, 9), record_id=99)
    [report] = findings_of(record, RECIPIENTS).reports
    assert report.kind_hint == delivery_pb2.BOUNCE_KIND_COMPLAINT
    assert report.event_key == "postmark:99"
    assert report.status_code == "" and report.reply_code == 0


def test_other_record_types_are_ignored() -> None:
    for record_type in ("Delivery", "Open", "Click", "SubscriptionChange", None):
        record = {**postmark_bounce("e@example.com", PATHS.token(5, 10)), "RecordType": record_type}
        assert findings_of(record, RECIPIENTS).ignored == 1


@pytest.mark.parametrize("metadata", [{}, {"herald_token": "b" * 30}, {"herald_token": 5}, "herald_token", None])
def test_a_record_without_a_token_herald_signed_changes_nothing(metadata: object) -> None:
    record = {**postmark_bounce("f@example.com", None), "Metadata": metadata}
    findings = findings_of(record, RECIPIENTS)
    assert (findings.reports, findings.unverified) == ([], 1)


def test_a_record_without_an_id_is_keyed_by_its_content() -> None:
    record = postmark_bounce("g@example.com", PATHS.token(5, 11))
    del record["ID"]
    [report] = findings_of(record, RECIPIENTS).reports
    assert report.event_key.startswith("postmark:sha256:")


def test_every_hint_is_one_the_contract_allows() -> None:
    """Reporters hint only COMPLAINT or a provider's explicit HARD or SOFT (docs/bounces.md); POLICY is delivery's call."""
    assert delivery_pb2.BOUNCE_KIND_POLICY not in BOUNCE_TYPES.values()


@pytest.mark.parametrize("body", [[], "Bounce", 3, None])
def test_a_body_that_is_no_object_is_refused(body: object) -> None:
    with pytest.raises(Refused) as caught:
        findings_of(body, RECIPIENTS)
    assert caught.value.status == 400
