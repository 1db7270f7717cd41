"""The campaign status machine: every transition, and the rules UpdateCampaign follows for the status."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.campaign.domain.model import NOT_SCHEDULED, Campaign, CampaignStatus
from services.campaign.domain.schedule import due_at
from services.common.errors import DomainError, ErrorKind, FieldViolation

# A client asks for these with UpdateCampaign; every other status is reached through a custom method
# (pause, resume, cancel, approve) or by the send pipeline (Sending, Sent, Failed).
CLIENT_SETTABLE_STATUSES = frozenset({CampaignStatus.DRAFT, CampaignStatus.READY})
# Recipients, content and schedule change only before sending starts, and not while an admin reviews them.
EDITABLE_STATUSES = frozenset({CampaignStatus.DRAFT, CampaignStatus.READY})
# Waiting for the due instant: arming a campaign (entering one of these) computes when it is due.
ARMED_STATUSES = frozenset({CampaignStatus.READY, CampaignStatus.PENDING_APPROVAL})
_UPDATE_TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    CampaignStatus.DRAFT: frozenset({CampaignStatus.DRAFT, CampaignStatus.READY}),
    CampaignStatus.READY: frozenset({CampaignStatus.DRAFT, CampaignStatus.READY}),
    # Withdrawing the request for approval; only an admin's ApproveCampaign leads on to Ready.
    CampaignStatus.PENDING_APPROVAL: frozenset({CampaignStatus.DRAFT}),
}


@dataclass(frozen=True)
class Transition:
    """One way a campaign's status changes other than by UpdateCampaign: the status each allowed status
    leads to; `done` completes "only a … campaign <done>" in the refusal."""

    done: str
    edges: Mapping[CampaignStatus, CampaignStatus]


# The client's custom methods.
PAUSE = Transition(
    "can be paused", {CampaignStatus.SENDING: CampaignStatus.PAUSED, CampaignStatus.READY: CampaignStatus.PAUSED}
)
RESUME = Transition("can be resumed", {CampaignStatus.PAUSED: CampaignStatus.READY})
# Cancelling a Ready campaign only returns it to Draft; cancelling one that is sending stops it for good (RULINGS 7).
CANCEL = Transition(
    "can be cancelled",
    {
        CampaignStatus.READY: CampaignStatus.DRAFT,
        CampaignStatus.SENDING: CampaignStatus.CANCELLED,
        CampaignStatus.PAUSED: CampaignStatus.CANCELLED,
    },
)
APPROVE = Transition("can be approved", {CampaignStatus.PENDING_APPROVAL: CampaignStatus.READY})
# An auto-resend waiting for its day when its original is cancelled (services/campaign/sending.py decides
# that it never started sending): the resend is void, for good.
CANCEL_WITH_ORIGINAL = Transition(
    "is cancelled with its original",
    {
        CampaignStatus.DRAFT: CampaignStatus.CANCELLED,
        CampaignStatus.READY: CampaignStatus.CANCELLED,
        CampaignStatus.PENDING_APPROVAL: CampaignStatus.CANCELLED,
        CampaignStatus.PAUSED: CampaignStatus.CANCELLED,
    },
)
# Sending: the picker starts a due campaign; delivery reports that an occurrence finished.
START_SENDING = Transition("starts sending", {CampaignStatus.READY: CampaignStatus.SENDING})
FINISH_SENDING = Transition("finishes sending", {CampaignStatus.SENDING: CampaignStatus.SENT})
FAIL_SENDING = Transition("finishes sending", {CampaignStatus.SENDING: CampaignStatus.FAILED})
# A Recursive campaign waits for its next occurrence.
AWAIT_NEXT_OCCURRENCE = Transition("finishes sending", {CampaignStatus.SENDING: CampaignStatus.READY})
# An admin's admin.campaign.retryfailed: delivery requeues the failed recipients.
RETRY_FAILED = Transition(
    "is retried", {CampaignStatus.SENT: CampaignStatus.SENDING, CampaignStatus.FAILED: CampaignStatus.SENDING}
)


def status_invalid(current: CampaignStatus, message: str, field_name: str = "") -> DomainError:
    """FAILED_PRECONDITION STATUS_INVALID, with the current status in the metadata as the API names it
    (`{"status": "CAMPAIGN_STATUS_SENT"}`); the message keeps the legacy words."""
    violations = [FieldViolation(field_name, "STATUS_INVALID", message)] if field_name else []
    metadata = {"status": current.api_name}
    return DomainError(ErrorKind.PRECONDITION, "STATUS_INVALID", message, violations, metadata)


def allows(transition: Transition, current: CampaignStatus) -> bool:
    return current in transition.edges


def status_after(transition: Transition, current: CampaignStatus) -> CampaignStatus:
    """The status `transition` leads to from `current`; FAILED_PRECONDITION STATUS_INVALID when it is not allowed."""
    if current not in transition.edges:
        names = [status.value for status in transition.edges]
        either = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise status_invalid(current, f"only a {either} campaign {transition.done}, not a {current.value} one")
    return transition.edges[current]


def status_after_update(
    current: CampaignStatus, requested: CampaignStatus, *, untrusted: bool = False, content_changed: bool = False
) -> CampaignStatus:
    """The status UpdateCampaign stores when asked for `requested`.

    An untrusted user's campaign that would become Ready, or whose content changes while Ready, waits for an
    admin's approval instead (RULINGS 8): an approval that an edit could bypass would approve nothing.
    """
    if requested not in CLIENT_SETTABLE_STATUSES:
        raise status_invalid(current, f"status {requested.value} cannot be set directly", "status")
    if requested not in _UPDATE_TRANSITIONS.get(current, frozenset()):
        raise status_invalid(current, f"a {current.value} campaign cannot become {requested.value}", "status")
    if (
        requested is CampaignStatus.READY
        and untrusted
        and (current is not CampaignStatus.READY or content_changed)
    ):
        return CampaignStatus.PENDING_APPROVAL
    return requested


def paused(campaign: Campaign) -> Campaign:
    return dataclasses.replace(campaign, status=status_after(PAUSE, campaign.status))


def resumed(campaign: Campaign) -> Campaign:
    """Back to Ready with the schedule as it was: delivery carries on with the recipients still pending."""
    return dataclasses.replace(campaign, status=status_after(RESUME, campaign.status))


def cancelled(campaign: Campaign) -> Campaign:
    """A Ready campaign returns to Draft without its schedule; a Sending or Paused one is Cancelled for good."""
    status = status_after(CANCEL, campaign.status)
    if status is CampaignStatus.DRAFT:
        return dataclasses.replace(campaign, status=status, schedule=NOT_SCHEDULED, scheduled_at=None)
    return dataclasses.replace(campaign, status=status)


def approved(campaign: Campaign, now: datetime) -> Campaign:
    """Ready, due again from now: a Recursive schedule's next occurrence may have passed while it waited."""
    status = status_after(APPROVE, campaign.status)
    return dataclasses.replace(campaign, status=status, scheduled_at=due_at(campaign.schedule, now))
