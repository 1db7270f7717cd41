"""SES notifications (inside verified SNS messages) as reports: the recipient from the return path in
mail.source or the X-Herald-Token header, the bounce type as a hint, the feedbackId as the key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from herald.delivery.v1 import delivery_pb2

from services.common.return_path import ReturnPaths
from tests.webhook_keys import TOPIC_ARN, ses_bounce, ses_complaint
from translator.webhooks._common import Recipients
from translator.webhooks.ses import findings_of
from translator.webhooks.sns import SnsMessage

PATHS = ReturnPaths("bounces.herald.example", "test secret")
RECIPIENTS = Recipients(PATHS)


def sns(notification: dict[str, Any] | str) -> SnsMessage:
    text = notification if isinstance(notification, str) else json.dumps(notification)
    return SnsMessage(type="Notification", message_id="sns-1", topic_arn=TOPIC_ARN, message=text)


def test_a_permanent_bounce_names_its_recipient_by_the_return_path() -> None:
    notification = ses_bounce(PATHS.address(12, 34), "a@example.com", feedback_id="fb-1")
    findings = findings_of(sns(notification), RECIPIENTS)
    [report] = findings.reports
    assert (report.campaign_id, report.recipient_id) == (12, 34)
    assert report.kind_hint == delivery_pb2.BOUNCE_KIND_HARD
    assert report.source == delivery_pb2.BOUNCE_SOURCE_SES
    assert (report.status_code, report.reply_code) == ("5.1.1", 550)
    assert report.diagnostic == "smtp; 550 5.1.1 user unknown"
    assert report.event_key == "ses:fb-1:a@example.com"
    assert report.HasField("occur_time")


def test_the_return_path_is_read_in_any_case_and_with_a_display_name() -> None:
    address = PATHS.address(12, 35).upper()
    notification = ses_bounce(f'"Herald" <{address}>', "a@example.com")
    assert findings_of(sns(notification), RECIPIENTS).reports[0].recipient_id == 35


def test_without_a_return_path_the_token_header_names_the_recipient() -> None:
    notification = ses_bounce(
        "news@herald.example",
        "b@example.com",
        headers=[("From", "news@herald.example"), ("X-Herald-Token", PATHS.token(12, 36))],
    )
    assert findings_of(sns(notification), RECIPIENTS).reports[0].recipient_id == 36


@pytest.mark.parametrize(
    ("bounce_type", "sub_type", "status", "diagnostic", "hint", "text"),
    [
        ("Transient", "MailboxFull", "4.2.2", "smtp; 452 4.2.2 Mailbox full", delivery_pb2.BOUNCE_KIND_SOFT, None),
        ("Transient", "General", "", "", delivery_pb2.BOUNCE_KIND_SOFT, "SES Transient bounce (General)"),
        ("Undetermined", "Undetermined", "", "", delivery_pb2.BOUNCE_KIND_UNSPECIFIED, None),
        (
            "Permanent",
            "Suppressed",
            "5.1.1",
            "",
            delivery_pb2.BOUNCE_KIND_HARD,
            "SES Permanent bounce (Suppressed)",
        ),
        (
            "Permanent",
            "General",
            "5.0.0",
            "smtp; 554 5.7.1 rejected by policy",
            delivery_pb2.BOUNCE_KIND_HARD,
            None,
        ),
    ],
)
def test_bounce_types_give_their_hint_and_the_entry_its_codes(
    bounce_type: str, sub_type: str, status: str, diagnostic: str, hint: int, text: str | None
) -> None:
    notification = ses_bounce(
        PATHS.address(12, 37),
        "c@example.com",
        bounce_type=bounce_type,
        sub_type=sub_type,
        status=status,
        diagnostic=diagnostic,
    )
    [report] = findings_of(sns(notification), RECIPIENTS).reports
    assert report.kind_hint == hint
    assert report.diagnostic == (text or diagnostic or report.diagnostic)
    if diagnostic.startswith("smtp; 554 5.7.1"):
        # A bare class in the status field gives way to the precise code the reply quotes.
        assert (report.status_code, report.reply_code) == ("5.7.1", 554)


def test_a_bounce_for_the_accounts_own_suppression_list_is_ignored() -> None:
    notification = ses_bounce(PATHS.address(12, 38), "d@example.com", sub_type="OnAccountSuppressionList")
    findings = findings_of(sns(notification), RECIPIENTS)
    assert (findings.reports, findings.ignored) == ([], 1)


def test_a_complaint_is_a_complaint_unless_it_says_not_spam() -> None:
    complaint = ses_complaint(PATHS.address(12, 39), "e@example.com", feedback_id="fb-2")
    [report] = findings_of(sns(complaint), RECIPIENTS).reports
    assert report.kind_hint == delivery_pb2.BOUNCE_KIND_COMPLAINT
    assert report.diagnostic == "SES complaint (abuse)"
    assert report.event_key == "ses:fb-2:e@example.com"
    not_spam = ses_complaint(PATHS.address(12, 39), "e@example.com", feedback_type="not-spam")
    assert findings_of(sns(not_spam), RECIPIENTS).ignored == 1


def test_deliveries_other_notifications_and_foreign_messages_are_ignored() -> None:
    delivery = {**ses_bounce(PATHS.address(12, 40), "f@example.com"), "notificationType": "Delivery"}
    event = {**ses_bounce(PATHS.address(12, 40), "f@example.com"), "eventType": "Open"}
    del event["notificationType"]
    for message in (
        delivery,
        event,
        {"notificationType": "AmazonSnsSubscriptionSucceeded"},
        "plain text",
        "[1, 2]",
    ):
        findings = findings_of(sns(message), RECIPIENTS)
        assert (findings.reports, findings.ignored) == ([], 1)


def test_an_event_publishing_bounce_is_read_like_a_notification() -> None:
    event = ses_bounce(PATHS.address(12, 41), "g@example.com")
    event["eventType"] = event.pop("notificationType")
    assert findings_of(sns(event), RECIPIENTS).reports[0].recipient_id == 41


@pytest.mark.parametrize(
    "source",
    [
        "news@herald.example",
        ReturnPaths("bounces.herald.example", "another secret").address(12, 42),
        ReturnPaths("elsewhere.example", "test secret").address(12, 42),
        "b-" + "a" * 30 + "@bounces.herald.example",
    ],
)
def test_a_notification_without_a_token_herald_signed_changes_nothing(source: str) -> None:
    forged_header = [("X-Herald-Token", "a" * 30)]
    for notification in (
        ses_bounce(source, "h@example.com", headers=forged_header),
        ses_complaint(source, "h@example.com"),
    ):
        findings = findings_of(sns(notification), RECIPIENTS)
        assert (findings.reports, findings.unverified) == ([], 1)


def test_a_notification_lists_one_recipient_per_message_and_extra_entries_are_ignored() -> None:
    notification = ses_bounce(PATHS.address(12, 43), "i@example.com")
    notification["bounce"]["bouncedRecipients"].append({"emailAddress": "j@example.com", "status": "5.1.1"})
    findings = findings_of(sns(notification), RECIPIENTS)
    assert (len(findings.reports), findings.ignored) == (1, 1)
    assert findings.reports[0].event_key.endswith(":i@example.com")


def test_without_a_feedback_id_the_sns_message_id_keys_the_report() -> None:
    notification = ses_bounce(PATHS.address(12, 44), "k@example.com")
    del notification["bounce"]["feedbackId"]
    assert findings_of(sns(notification), RECIPIENTS).reports[0].event_key == "ses:sns:sns-1:k@example.com"
