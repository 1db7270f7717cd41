"""RecordBounces' rules (services/delivery/domain.py), send-time refusals, the events they announce, the legacy ratios."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from herald.campaign.v1 import campaign_pb2
from herald.delivery.v1 import delivery_pb2

from services.common import events
from services.common.bounces import BounceKind, BounceSource
from services.common.errors import DomainError, ErrorKind
from services.delivery import domain, sending
from services.delivery.bounce_store import QueuedAddress, Recording
from services.delivery.domain import BounceReport, RecipientStatus
from services.delivery.events import bounced_event, delivered_event
from services.delivery.sending import Outcome, Refusal
from translator.commands.campaign.render import percentage, statistics_fields

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
REPORT = BounceReport(
    campaign_id=7,
    recipient_id=11,
    kind_hint="",
    status_code="5.1.1",
    reply_code=550,
    diagnostic="user unknown",
    source=BounceSource.DSN,
    event_key="dsn:<abc@mx.example>:ann@example.com",
    occurred_at=T0,
)


def violations_of(*reports: BounceReport) -> list[tuple[str, str]]:
    with pytest.raises(DomainError) as caught:
        domain.validate_bounce_reports(reports)
    assert caught.value.kind == ErrorKind.INVALID
    return [(v.field, v.reason) for v in caught.value.violations]


def test_a_well_formed_report_is_valid() -> None:
    domain.validate_bounce_reports([REPORT])
    domain.validate_bounce_reports([])
    domain.validate_bounce_reports(
        [dataclasses.replace(REPORT, status_code="", reply_code=0, kind_hint="complaint")]
    )


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"campaign_id": 0}, "campaign_id", domain.INVALID_CAMPAIGN_ID),
        ({"recipient_id": -3}, "recipient_id", domain.INVALID_RECIPIENT_ID),
        ({"source": ""}, "source", domain.INVALID_BOUNCE_SOURCE),
        ({"kind_hint": "?"}, "kind_hint", domain.INVALID_KIND_HINT),
        ({"kind_hint": "policy"}, "kind_hint", domain.INVALID_KIND_HINT),
        ({"status_code": "5.1"}, "status_code", domain.INVALID_STATUS_CODE),
        ({"status_code": "550"}, "status_code", domain.INVALID_STATUS_CODE),
        ({"status_code": "3.1.1"}, "status_code", domain.INVALID_STATUS_CODE),
        ({"status_code": " 5.1.1"}, "status_code", domain.INVALID_STATUS_CODE),
        ({"reply_code": 99}, "reply_code", domain.INVALID_REPLY_CODE),
        ({"reply_code": 600}, "reply_code", domain.INVALID_REPLY_CODE),
        ({"event_key": ""}, "event_key", domain.INVALID_EVENT_KEY),
        ({"event_key": "k" * 201}, "event_key", domain.INVALID_EVENT_KEY),
        ({"event_key": "line\nbreak"}, "event_key", domain.INVALID_EVENT_KEY),
    ],
)
def test_a_bad_field_is_named_with_its_reason(change: dict[str, Any], field: str, reason: str) -> None:
    good = dataclasses.replace(REPORT, event_key="first")
    assert violations_of(good, dataclasses.replace(REPORT, **change)) == [(f"reports[1].{field}", reason)]


def test_every_bad_field_of_a_request_is_named_at_once() -> None:
    bad = dataclasses.replace(REPORT, campaign_id=0, recipient_id=0, event_key="")
    assert [field for field, _ in violations_of(bad)] == [
        "reports[0].campaign_id",
        "reports[0].recipient_id",
        "reports[0].event_key",
    ]


def test_at_most_a_thousand_reports_per_request() -> None:
    domain.validate_bounce_reports([REPORT] * domain.MAX_BOUNCE_REPORTS)
    assert violations_of(*[REPORT] * (domain.MAX_BOUNCE_REPORTS + 1)) == [("reports", domain.TOO_MANY_REPORTS)]


def test_a_report_is_classified_and_its_diagnostic_kept_within_bounds() -> None:
    classified = domain.classified_bounce(dataclasses.replace(REPORT, diagnostic="user\x00 unknown " + "x" * 5000))
    assert classified.kind == BounceKind.HARD and classified.source == BounceSource.DSN
    assert len(classified.diagnostic) == domain.MAX_DIAGNOSTIC_LENGTH and "\x00" not in classified.diagnostic


def test_the_codes_the_classifier_read_from_the_text_are_recorded() -> None:
    report = dataclasses.replace(REPORT, status_code="", reply_code=0, diagnostic="smtp; 552 5.2.2 mailbox full")
    classified = domain.classified_bounce(report)
    assert (classified.kind, classified.status_code, classified.reply_code) == (BounceKind.SOFT, "5.2.2", 552)


def test_a_hint_is_the_reporters_judgement_where_the_codes_say_nothing() -> None:
    complaint = domain.classified_bounce(dataclasses.replace(REPORT, kind_hint="complaint", source="arf"))
    assert complaint.kind == BounceKind.COMPLAINT
    hard = domain.classified_bounce(
        dataclasses.replace(REPORT, kind_hint="hard", status_code="", reply_code=0, diagnostic="")
    )
    assert hard.kind == BounceKind.HARD


def test_a_repeated_event_key_is_kept_once_first_come() -> None:
    second = dataclasses.replace(REPORT, recipient_id=12)
    other = dataclasses.replace(REPORT, event_key="other")
    assert domain.distinct_reports([REPORT, other, second]) == [REPORT, other]


# --- send time -------------------------------------------------------------------------------------------------


def test_a_send_time_refusal_is_a_classified_bounce_keyed_by_row_and_generation() -> None:
    bounce = sending.send_time_bounce(7, 11, 3, Refusal(550, "550 5.7.1 blocked by policy"), T0)
    assert (bounce.kind, bounce.source, bounce.event_key) == (
        BounceKind.POLICY,
        BounceSource.SMTP_REPLY,
        "smtp:7:11:3",
    )
    assert (bounce.status_code, bounce.reply_code, bounce.diagnostic) == (
        "5.7.1",
        550,
        "550 5.7.1 blocked by policy",
    )


def test_only_refusals_and_deliveries_after_a_bounce_are_announced() -> None:
    sent = Outcome(1, RecipientStatus.SENT, 1, "", "<m@x>", T0)
    failed = Outcome(2, RecipientStatus.FAILED, 1, "ambiguous: connection lost")
    refused = Outcome(3, RecipientStatus.FAILED, 1, "550 5.1.1 no", refusal=Refusal(550, "550 5.1.1 no"))
    assert not sending.announced_outcomes([sent, failed], bounced_before=frozenset())
    assert not sending.announced_outcomes([failed], bounced_before=frozenset({2}))
    assert sending.announced_outcomes([sent], bounced_before=frozenset({1}))
    assert sending.announced_outcomes([sent, refused], bounced_before=frozenset())


# --- the events --------------------------------------------------------------------------------------------------

ADDRESS = QueuedAddress(7, 11, owner_user_id=3, list_id=5, subscriber_id=42, email_address="ann@example.com")


def test_a_recorded_bounce_is_announced_with_everything_audience_needs() -> None:
    recording = Recording(domain.classified_bounce(REPORT), ADDRESS, bounce_id=99)
    event = bounced_event(recording)
    assert events.RECIPIENT_BOUNCED.decode(events.RECIPIENT_BOUNCED.encode(event)) == event
    assert (event.kind, event.source, event.status_code, event.reply_code) == (
        delivery_pb2.BOUNCE_KIND_HARD,
        delivery_pb2.BOUNCE_SOURCE_DSN,
        "5.1.1",
        550,
    )
    assert (event.owner_user_id, event.list_id, event.subscriber_id, event.email_address) == (
        3,
        5,
        42,
        "ann@example.com",
    )


def test_a_delivery_after_a_bounce_is_announced() -> None:
    event = delivered_event(ADDRESS, T0)
    assert events.RECIPIENT_DELIVERED.decode(events.RECIPIENT_DELIVERED.encode(event)) == event
    assert event.deliver_time.ToDatetime(tzinfo=UTC) == T0


# --- the legacy figures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "whole", "text"),
    [
        (0, 0, "0.00"),
        (0, 10, "0.00"),
        (1, 3, "33.33"),
        (2, 3, "66.67"),
        (1, 8, "12.50"),
        (1, 200, "0.50"),
        (1, 400, "0.25"),
        (1, 800, "0.13"),
        (5, 5, "100.00"),
        (7, 5, "100.00"),
    ],
)
def test_a_ratio_is_a_percentage_with_two_decimals(part: int, whole: int, text: str) -> None:
    assert percentage(part, whole) == text


def test_the_bounce_ratios_are_of_the_recipients_sent_or_failed() -> None:
    statistics = campaign_pb2.CampaignStatistics(
        total_recipients=10,
        total_sent=6,
        total_failed=2,
        total_hard_bounces=2,
        total_soft_bounces=1,
        total_spam_complaints=1,
        total_unsubscriptions=3,
    )
    fields = statistics_fields(statistics)
    assert {
        key: fields[key] for key in fields if "Bounce" in key or key.startswith("TotalU") or "SPAM" in key
    } == {
        "TotalHardBounces": 2,
        "TotalSoftBounces": 1,
        "HardBounceRatio": "25.00",
        "SoftBounceRatio": "12.50",
        "TotalSPAMComplaints": 1,
        "TotalUnsubscriptions": 3,
    }
