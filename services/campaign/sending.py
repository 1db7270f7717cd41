"""Rules of sending, without I/O: the send request the picker issues, what delivery's campaign_finished means, and
the auto-resend a finished campaign gets.

Recursive schedules: each occurrence is a run of its own that sends to the audience as it is at that
moment. Between occurrences the campaign is Ready again, due at its next occurrence; after
`max_instances` occurrences (or when the rule never fires again) it ends with the last occurrence's
outcome, Sent or Failed. Occurrences missed while one was still sending are skipped, not sent in a burst.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.campaign import domain
from services.campaign.domain import Campaign, CampaignStatus, next_occurrence


@dataclass(frozen=True)
class SendProgress:
    """What the campaign row keeps about sending: requests issued, occurrences started, one still open."""

    send_requests: int = 0
    occurrences_started: int = 0
    occurrence_open: bool = False


@dataclass(frozen=True)
class SendStart:
    """A due campaign the picker starts (or continues): the campaign as saved, and its send request."""

    campaign: Campaign
    progress: SendProgress
    resume: bool


def start_sending(campaign: Campaign, progress: SendProgress, now: datetime) -> SendStart:
    """A due Ready campaign becomes Sending: a new occurrence, or the open one continued after a pause."""
    status = domain.status_after(domain.START_SENDING, campaign.status)
    resume = progress.occurrence_open
    started = dataclasses.replace(
        campaign,
        status=status,
        status_reason="",
        send_started_at=campaign.send_started_at or now,
        send_finished_at=None if not resume else campaign.send_finished_at,
    )
    return SendStart(
        campaign=started,
        progress=SendProgress(
            send_requests=progress.send_requests + 1,
            occurrences_started=progress.occurrences_started + (0 if resume else 1),
            occurrence_open=True,
        ),
        resume=resume,
    )


@dataclass(frozen=True)
class CampaignFinished:
    """Delivery's report that an occurrence of a campaign has no recipient left to handle."""

    campaign_id: int
    owner_user_id: int
    failed: bool
    reason: str
    finished_at: datetime
    occurrence: int


def after_finish(
    campaign: Campaign, progress: SendProgress, finished: CampaignFinished, now: datetime
) -> tuple[Campaign, SendProgress] | None:
    """The campaign once an occurrence finished, or None when the report is stale (not Sending any more, or
    about an earlier occurrence): a redelivered or late event changes nothing."""
    if not progress.occurrence_open:
        return None
    if finished.occurrence and finished.occurrence != progress.occurrences_started:
        return None
    upcoming = _upcoming_occurrence(campaign, progress, now)
    if upcoming is not None:
        transition = domain.AWAIT_NEXT_OCCURRENCE
    else:
        transition = domain.FAIL_SENDING if finished.failed else domain.FINISH_SENDING
    if not domain.allows(transition, campaign.status):
        return None  # paused, cancelled or finished since delivery wrote the report
    after = dataclasses.replace(
        campaign, status=domain.status_after(transition, campaign.status), status_reason=finished.reason
    )
    if upcoming is not None:
        after = dataclasses.replace(after, scheduled_at=upcoming)
    else:
        after = dataclasses.replace(after, send_finished_at=finished.finished_at)
    return after, dataclasses.replace(progress, occurrence_open=False)


def _upcoming_occurrence(campaign: Campaign, progress: SendProgress, now: datetime) -> datetime | None:
    """When a Recursive campaign sends next; None for any other, and after its last occurrence."""
    rule = campaign.schedule.recursive
    if rule is None or progress.occurrences_started >= rule.max_instances:
        return None
    # The next occurrence after the later of now and the one just sent, so none fires twice.
    return next_occurrence(rule, max(now, campaign.scheduled_at or now))


def retried(campaign: Campaign, progress: SendProgress) -> tuple[Campaign, SendProgress]:
    """A Sent or Failed campaign whose failed recipients are queued again is Sending until delivery reports;
    STATUS_INVALID for a campaign in any other status."""
    status = domain.status_after(domain.RETRY_FAILED, campaign.status)
    return (
        dataclasses.replace(campaign, status=status, status_reason="", send_finished_at=None),
        dataclasses.replace(progress, occurrence_open=True),
    )


# --- auto-resends -------------------------------------------------------------------------------------------------

# Why an auto-resend that never started is Cancelled (its status_reason).
CANCELLED_WITH_ORIGINAL = "the original campaign was cancelled"


@dataclass(frozen=True)
class AutoResendPlan:
    """The auto-resend to create for a campaign that finished sending: a Ready campaign due at `due_at`."""

    original_campaign_id: int
    name: str
    due_at: datetime
    subject: str
    preheader_text: str


def auto_resend_after(after: Campaign, finished: CampaignFinished) -> AutoResendPlan | None:
    """The auto-resend a campaign gets now that delivery finished it (`after`: the campaign as saved), or None.

    Only a campaign with AutoResendEnabled that became Sent gets one: not a Failed one, nor a Recursive one
    that waits for its next occurrence (it gets its resend after the last). It is due AutoResendWaitDays
    after delivery finished the campaign. The store creates it once per campaign, so a campaign that is
    Sent again after an admin's retry keeps the resend it has.
    """
    if after.status is not CampaignStatus.SENT or not after.auto_resend.enabled:
        return None
    return AutoResendPlan(
        original_campaign_id=after.campaign_id,
        name=domain.auto_resend_name(after.name),
        due_at=finished.finished_at + timedelta(days=after.auto_resend.wait_days),
        subject=after.auto_resend.subject,
        preheader_text=after.auto_resend.preheader_text,
    )


def cancelled_with_original(resend: Campaign, progress: SendProgress) -> Campaign | None:
    """An auto-resend once its original was cancelled: Cancelled if it never started sending, else None (a
    resend that started is a campaign of its own: its owner pauses or cancels it like any other)."""
    if progress.occurrences_started > 0 or not domain.allows(domain.CANCEL_WITH_ORIGINAL, resend.status):
        return None
    return dataclasses.replace(
        resend,
        status=domain.status_after(domain.CANCEL_WITH_ORIGINAL, resend.status),
        status_reason=CANCELLED_WITH_ORIGINAL,
    )
