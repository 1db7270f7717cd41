"""The send pipeline's pure rules: send requests and reports, recursive occurrences, variation split, claims, and message rendering."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from services.campaign import events as campaign_events
from services.campaign import sending as campaign_sending
from services.campaign.domain import AutoResend, CampaignStatus, RecursiveSchedule, Schedule, ScheduleType
from services.common import events
from services.common.tracking import tracking_key, verify_tracking
from services.delivery import events as delivery_events
from services.delivery import sending
from services.delivery.message import MessageTemplate, Recipient
from tests.unit.campaign_factory import NOW, as_delivery_reads_it, campaign
from tests.unit.message_templates import SECRET, message_template


def finished(failed: bool = False, occurrence: int = 1) -> campaign_sending.CampaignFinished:
    return campaign_sending.CampaignFinished(7, 3, failed, "why" if failed else "", NOW, occurrence)


# --- the picker's request and delivery's report (campaign side) --------------------------------------------


def test_a_first_start_opens_an_occurrence_and_a_pick_after_a_pause_resumes_it() -> None:
    first = campaign_sending.start_sending(campaign(), campaign_sending.SendProgress(), NOW)
    assert first.campaign.status is CampaignStatus.SENDING and first.campaign.send_started_at == NOW
    assert (first.resume, first.progress.occurrences_started, campaign_events.send_request_key(first)) == (
        False,
        1,
        "7:1",
    )
    request = as_delivery_reads_it(first)
    assert (request.campaign_id, request.owner_user_id, request.email_ids(), request.occurrence) == (7, 3, [11], 1)

    later = NOW + timedelta(minutes=5)
    again = campaign_sending.start_sending(
        dataclasses.replace(first.campaign, status=CampaignStatus.READY), first.progress, later
    )
    assert again.resume is True and again.progress.occurrences_started == 1
    assert again.campaign.send_started_at == NOW  # set on the first start only
    assert campaign_events.send_request_key(again) == "7:2"
    assert as_delivery_reads_it(again).resume is True


def test_a_one_off_campaign_ends_sent_or_failed_and_a_late_report_changes_nothing() -> None:
    progress = campaign_sending.SendProgress(1, 1, True)
    sending_campaign = campaign(status=CampaignStatus.SENDING)
    outcome = campaign_sending.after_finish(sending_campaign, progress, finished(), NOW)
    assert outcome is not None and outcome[0].status is CampaignStatus.SENT and not outcome[1].occurrence_open
    assert outcome[0].send_finished_at == NOW
    failed = campaign_sending.after_finish(sending_campaign, progress, finished(failed=True), NOW)
    assert failed is not None and failed[0].status is CampaignStatus.FAILED and failed[0].status_reason == "why"
    assert campaign_sending.after_finish(campaign(status=CampaignStatus.PAUSED), progress, finished(), NOW) is None
    assert campaign_sending.after_finish(sending_campaign, progress, finished(occurrence=2), NOW) is None


def test_a_recursive_campaign_is_ready_again_until_its_last_occurrence() -> None:
    rule = RecursiveSchedule(
        days_of_week=tuple(range(7)), months=tuple(range(1, 13)), hours=(9,), minutes=(30,), max_instances=2
    )
    recurring = campaign(
        status=CampaignStatus.SENDING, schedule=Schedule(ScheduleType.RECURSIVE, recursive=rule), scheduled_at=NOW
    )
    outcome = campaign_sending.after_finish(recurring, campaign_sending.SendProgress(1, 1, True), finished(), NOW)
    assert outcome is not None
    ready, progress = outcome
    assert ready.status is CampaignStatus.READY and ready.scheduled_at == datetime(2026, 3, 3, 9, 30, tzinfo=UTC)
    assert not progress.occurrence_open
    start = campaign_sending.start_sending(ready, progress, NOW)
    assert start.resume is False and start.progress.occurrences_started == 2
    last = campaign_sending.after_finish(
        dataclasses.replace(ready, status=CampaignStatus.SENDING), start.progress, finished(occurrence=2), NOW
    )
    assert last is not None and last[0].status is CampaignStatus.SENT


# --- auto-resends (campaign side) ---------------------------------------------------------------------------

RESENDING = AutoResend(enabled=True, wait_days=3, subject="Did you miss it?", preheader_text="Still on")


def test_a_campaign_with_auto_resend_that_ends_sent_plans_its_resend_wait_days_after_the_finish() -> None:
    sent = campaign(status=CampaignStatus.SENT, name="News", auto_resend=RESENDING)
    plan = campaign_sending.auto_resend_after(sent, finished())
    assert plan == campaign_sending.AutoResendPlan(
        original_campaign_id=7,
        name="News (Auto-resend)",
        due_at=NOW + timedelta(days=3),
        subject="Did you miss it?",
        preheader_text="Still on",
    )
    # A long name is shortened so that the resend's name still fits.
    long_name = campaign_sending.auto_resend_after(dataclasses.replace(sent, name="x" * 255), finished())
    assert long_name is not None and len(long_name.name) == 255 and long_name.name.endswith(" (Auto-resend)")


@pytest.mark.parametrize(
    ("status", "auto_resend"),
    [
        (CampaignStatus.SENT, AutoResend()),
        (CampaignStatus.FAILED, RESENDING),
        # A Recursive campaign waiting for its next occurrence gets its resend after the last one.
        (CampaignStatus.READY, RESENDING),
    ],
)
def test_no_resend_without_auto_resend_or_unless_the_campaign_ends_sent(
    status: CampaignStatus, auto_resend: AutoResend
) -> None:
    assert campaign_sending.auto_resend_after(campaign(status=status, auto_resend=auto_resend), finished()) is None


@pytest.mark.parametrize(
    "status", [CampaignStatus.DRAFT, CampaignStatus.READY, CampaignStatus.PENDING_APPROVAL, CampaignStatus.PAUSED]
)
def test_a_resend_that_never_started_is_cancelled_with_its_original(status: CampaignStatus) -> None:
    resend = campaign(status=status, original_campaign_id=5, auto_resend_of=5)
    cancelled = campaign_sending.cancelled_with_original(resend, campaign_sending.SendProgress())
    assert cancelled is not None
    assert (cancelled.status, cancelled.status_reason) == (
        CampaignStatus.CANCELLED,
        campaign_sending.CANCELLED_WITH_ORIGINAL,
    )


def test_a_resend_that_started_or_ended_is_left_alone_when_its_original_is_cancelled() -> None:
    started = campaign_sending.SendProgress(1, 1, True)
    for status in (CampaignStatus.SENDING, CampaignStatus.PAUSED, CampaignStatus.READY):
        assert campaign_sending.cancelled_with_original(campaign(status=status, auto_resend_of=5), started) is None
    for status in (CampaignStatus.SENT, CampaignStatus.FAILED, CampaignStatus.CANCELLED):
        resend = campaign(status=status, auto_resend_of=5)
        assert campaign_sending.cancelled_with_original(resend, campaign_sending.SendProgress()) is None


def test_a_resends_send_request_names_its_original_and_an_ordinary_one_does_not() -> None:
    resend = campaign(original_campaign_id=5, auto_resend_of=5)
    request = as_delivery_reads_it(campaign_sending.start_sending(resend, campaign_sending.SendProgress(), NOW))
    assert request.non_openers_of == 5
    # A campaign a client linked to an original by hand (OriginalCampaignID) is sent to its own targeting.
    linked = campaign(original_campaign_id=5)
    assert (
        as_delivery_reads_it(
            campaign_sending.start_sending(linked, campaign_sending.SendProgress(), NOW)
        ).non_openers_of
        == 0
    )


@pytest.mark.parametrize(("failed", "started"), [(False, NOW), (True, None)])
def test_delivery_reports_a_finish_the_campaign_side_can_read(failed: bool, started: datetime | None) -> None:
    report = sending.Finished(7, 3, failed, "why" if failed else "", started, NOW + timedelta(seconds=5.25), 2)
    payload = events.CAMPAIGN_FINISHED.encode(delivery_events.finished_event(report))
    parsed = campaign_events.campaign_finished(events.CAMPAIGN_FINISHED.decode(payload))
    assert parsed == campaign_sending.CampaignFinished(
        7, 3, failed, report.reason, NOW + timedelta(seconds=5.25), 2
    )
    assert delivery_events.finished_key(report) == f"7:2:{(NOW + timedelta(seconds=5.25)).timestamp():.6f}"


# --- delivery's rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(1, 1), (3, 7), (50, 30, 20), (1, 2, 3, 4, 5), (99, 1)])
def test_variations_split_by_weight_within_two_recipients_for_any_audience_size(weights: tuple[int, ...]) -> None:
    variations = [sending.Variation(100 + index, weight) for index, weight in enumerate(weights)]
    slots = sending.variation_slots(variations)
    assigned: Counter[int] = Counter()
    for position in range(1, 5001):
        assigned[sending.variation_for(position, slots)] += 1
        if position in (2, 7, 30, 100, 999, 5000):
            for index, weight in enumerate(weights):
                assert abs(assigned[100 + index] - position * weight / sum(weights)) <= 2, (position, assigned)


def test_nobody_sent_or_nobody_queued_is_a_failed_occurrence() -> None:
    assert sending.finish_outcome(0, 0, "")[0] is True
    failed, reason = sending.finish_outcome(0, 3, "550 no such user")
    assert failed and "550 no such user" in reason
    assert sending.finish_outcome(5, 3, "550") == (False, "")


def test_a_dead_workers_claims_are_stale_when_its_batch_comes_back() -> None:
    for ack_wait in (5.0, 60.0):
        # Last claim at most one heartbeat before the last sign of life; redelivery ack_wait after it.
        youngest_claim_age_at_redelivery = ack_wait - sending.heartbeat_seconds(ack_wait)
        assert 0 < sending.stale_claim_seconds(ack_wait) < youngest_claim_age_at_redelivery


def test_batches_are_counted() -> None:
    assert [sending.batch_count(n, 200) for n in (0, 1, 200, 201)] == [0, 1, 1, 2]


# --- rendering ---------------------------------------------------------------------------------------------


def template(**content: object) -> MessageTemplate:
    snapshot: dict[str, object] = {
        "email_id": 11,
        "subject": 'Hello {{ Subscriber:FirstName | "friend" }}',
        "preheader_text": "",
        "from_name": "Herald News",
        "from_email": "news@herald.test",
        "reply_to_name": "",
        "reply_to_email": "",
        "html": '<html><body><p>Dear %Subscriber:FirstName%</p><a href="https://example.com/a?x=1&amp;y=2">a</a>'
        '<a href="{{ Link:Unsubscribe }}">u</a></body></html>',
        "plain": "Dear {{ Subscriber:FirstName }}\nUnsubscribe: {{ Link:Unsubscribe }}",
        "content_type": "Both",
        "open_tracking": True,
        "link_tracking": True,
        "utm": {"enabled": False},
    }
    snapshot.update(content)
    return message_template(snapshot, unsubscribe_mailto="unsubscribe@herald.test")


def recipient(first_name: str = "Ada") -> Recipient:
    return Recipient(21, "ada@example.com", first_name, "Lovelace", 31, 41, {"5": "gold"}, None)


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_rendered_message_is_personalized_and_carries_one_click_unsubscribe() -> None:
    rendered = template().render(recipient())
    message_id, raw = rendered.message_id, rendered.data
    message = parsed(raw)
    assert message["Subject"] == "Hello Ada" and message["To"] == "ada@example.com"
    assert message["Message-ID"] == message_id and message_id.endswith("@herald.test>")
    unsubscribe = str(message["List-Unsubscribe"])
    url = unsubscribe.split(",")[0].strip("<> ")
    assert url.startswith("https://herald.test/t/u/") and "mailto:unsubscribe@herald.test" in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = url.rsplit("/", 1)[1]
    payload = verify_tracking(token, key=tracking_key(SECRET))
    assert (payload.kind, payload.recipient.recipient_id, payload.recipient.list_id) == ("unsubscribe", 21, 41)
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert "Dear Ada" in plain.get_content() and url in plain.get_content()
    body = html.get_content()
    assert "Dear Ada" in body and f'href="{url}"' in body  # Herald's own link is not rewritten
    assert "https://herald.test/t/c/" in body and "https://example.com/a" not in body.split("u=")[0]
    assert "/t/o/" in body  # the open pixel


def test_the_clicked_link_is_signed_for_its_exact_target() -> None:
    raw = template().render(recipient()).data
    html = parsed(raw).get_body(("html",))
    assert html is not None
    link = next(part for part in html.get_content().split('"') if "/t/c/" in part)
    token = link.split("/t/c/")[1].split("?")[0]
    payload = verify_tracking(token, key=tracking_key(SECRET), url="https://example.com/a?x=1&y=2")
    assert payload.kind == "click"


def test_a_subscribers_name_cannot_add_headers_and_non_ascii_is_encoded() -> None:
    raw = template().render(recipient("Eve\r\nBcc: victim@example.com")).data
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head
    raw = template().render(recipient("Zoë")).data
    assert parsed(raw)["Subject"] == "Hello Zoë"
    assert raw.split(b"\r\n\r\n", 1)[0].isascii()


def test_without_tracking_links_stay_and_a_plain_email_has_one_part() -> None:
    raw = template(open_tracking=False, link_tracking=False, content_type="Plain").render(recipient()).data
    message = parsed(raw)
    assert message.get_content_type() == "text/plain"
    assert "Dear Ada" in message.get_content()
    raw = template(open_tracking=False, link_tracking=False).render(recipient()).data
    html = parsed(raw).get_body(("html",))
    assert html is not None and 'href="https://example.com/a?x=1&amp;y=2"' in html.get_content()
    assert "/t/o/" not in html.get_content()


def test_utm_parameters_are_added_to_links() -> None:
    utm = {"enabled": True, "source": "herald", "medium": "email", "campaign": "spring", "term": "", "content": ""}
    raw = template(utm=utm, link_tracking=False).render(recipient()).data
    html = parsed(raw).get_body(("html",))
    assert html is not None
    assert "utm_source=herald&amp;utm_medium=email&amp;utm_campaign=spring" in html.get_content()
