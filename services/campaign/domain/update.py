"""UpdateCampaign: checking a patch and applying it to the campaign, naming every problem at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.campaign.domain.model import (
    AutoResend,
    Campaign,
    CampaignStatus,
    Schedule,
    Targeting,
    Unrecognized,
    Variation,
    text_violation,
    validate_campaign_name,
)
from services.campaign.domain.schedule import ScheduleRequest, due_at, validate_schedule
from services.campaign.domain.status import (
    ARMED_STATUSES,
    CLIENT_SETTABLE_STATUSES,
    EDITABLE_STATUSES,
    status_after_update,
)
from services.campaign.domain.targeting import validate_auto_resend, validate_targeting, validate_variations
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation

UPDATABLE_PATHS = (
    "name",
    "status",
    "status_reason",
    "email_id",
    "schedule",
    "targeting",
    "auto_resend",
    "variations",
    "original_campaign_id",
    "approval_user_explanation",
    "google_analytics_domains",
    "publish_on_rss",
    "s2s_enabled",
)
# Only a campaign that has not started sending (Draft or Ready) may change these.
RESTRICTED_PATHS = frozenset(
    {"email_id", "schedule", "targeting", "auto_resend", "variations", "original_campaign_id"}
)
# What recipients get: changing it on an untrusted user's approved campaign needs a new approval.
APPROVED_CONTENT = ("email_id", "targeting", "auto_resend", "variations")
_FREE_TEXT_PATHS = ("status_reason", "approval_user_explanation", "google_analytics_domains")
# Reasons describing the campaign's state rather than the request: alone they make FAILED_PRECONDITION.
STATE_REASONS = frozenset({"STATUS_INVALID", "CAMPAIGN_NOT_EDITABLE", "EMAIL_REQUIRED"})
# The order of the legacy campaign.update checks, so that a BadRequest lists the most basic problem first.
_REASON_ORDER = (
    "CAMPAIGN_ID_REQUIRED",
    "CAMPAIGN_NOT_FOUND",
    "UPDATE_MASK_INVALID",
    "STATUS_INVALID",
    "CAMPAIGN_NOT_EDITABLE",
    "EMAIL_NOT_FOUND",
    "EMAIL_REQUIRED",
    "SCHEDULE_TYPE_INVALID",
    "TIME_ZONE_INVALID",
    "SEND_TIME_REQUIRED",
    "SEND_TIME_IN_PAST",
    "RECURSIVE_DAYS_REQUIRED",
    "RECURSIVE_MONTHS_REQUIRED",
    "RECURSIVE_HOURS_REQUIRED",
    "RECURSIVE_MINUTES_REQUIRED",
    "RECURSIVE_MAX_INSTANCES_REQUIRED",
    "RECURSIVE_VALUE_INVALID",
    "AUTO_RESEND_WAIT_DAYS_INVALID",
    "AUTO_RESEND_SUBJECT_REQUIRED",
    "AUTO_RESEND_PREHEADER_REQUIRED",
    "VARIATION_EMAIL_NOT_FOUND",
    "VARIATIONS_TOO_FEW",
    "VARIATIONS_TOO_MANY",
    "VARIATION_FIELDS_REQUIRED",
    "VARIATION_VALUE_INVALID",
    "VARIATION_SHARE_TOO_SMALL",
    "ORIGINAL_CAMPAIGN_NOT_FOUND",
)


@dataclass(frozen=True)
class CampaignPatch:
    """An UpdateCampaign request as plain values: the paths to change and the values the caller sent."""

    campaign_id: int
    paths: tuple[str, ...]
    name: str = ""
    status: CampaignStatus | Unrecognized | None = None
    status_reason: str = ""
    email_id: int = 0
    schedule: ScheduleRequest = field(default_factory=ScheduleRequest)
    targeting: Targeting = field(default_factory=Targeting)
    auto_resend: AutoResend = field(default_factory=AutoResend)
    variations: tuple[Variation, ...] = ()
    original_campaign_id: int = 0
    approval_user_explanation: str = ""
    google_analytics_domains: str = ""
    publish_on_rss: bool = False
    s2s_enabled: bool = False

    def referenced_email_ids(self) -> list[int]:
        """The emails the patch points at, which must be the campaign owner's and not deleted."""
        ids = [self.email_id] if "email_id" in self.paths else []
        if "variations" in self.paths:
            ids.extend(variation.email_id for variation in self.variations)
        return sorted({email_id for email_id in ids if email_id > 0})


@dataclass(frozen=True)
class References:
    """What the store found, within the campaign owner's data, for the ids a patch names (and the campaign's
    current email, which must still exist when the campaign is armed)."""

    live_email_ids: frozenset[int] = frozenset()
    # The original campaign exists, is the same owner's, and is not (through its own originals) this campaign.
    original_campaign_found: bool = False
    # What the audience service found wrong with the targeting the patch sets (RULINGS 15): lists and segments
    # that are not the owner's, rules it cannot read.
    unowned_targeting: tuple[FieldViolation, ...] = ()


def check_patch(patch: CampaignPatch, now: datetime) -> tuple[dict[str, Any], list[FieldViolation]]:
    """The validated new values by Campaign field, and every problem found without looking at the campaign."""
    paths = set(patch.paths)
    changes: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    if patch.campaign_id <= 0:
        violations.append(
            FieldViolation("campaign.campaign_id", "CAMPAIGN_ID_REQUIRED", "campaign.campaign_id is required")
        )
    unknown = [path for path in patch.paths if path not in UPDATABLE_PATHS]
    if unknown:
        violations.append(
            FieldViolation("update_mask", "UPDATE_MASK_INVALID", f"update_mask names unknown paths {unknown}")
        )
    if "name" in paths:
        try:
            changes["name"] = validate_campaign_name(patch.name)
        except DomainError as error:
            violations.extend(error.violations)
    if "status" in paths:
        status = patch.status
        if not isinstance(status, CampaignStatus) or status not in CLIENT_SETTABLE_STATUSES:
            violations.append(
                FieldViolation("status", "STATUS_INVALID", f"status {status} cannot be set directly")
            )
        else:
            changes["status"] = status
    if "email_id" in paths:
        if patch.email_id < 0:
            violations.append(FieldViolation("email_id", "EMAIL_NOT_FOUND", f"email {patch.email_id} not found"))
        else:
            changes["email_id"] = patch.email_id or None
    if "schedule" in paths:
        schedule, problems = validate_schedule(patch.schedule, now)
        violations.extend(problems)
        if schedule is not None:
            changes["schedule"] = schedule
    if "targeting" in paths:
        targeting, problems = validate_targeting(patch.targeting)
        violations.extend(problems)
        if not problems:
            changes["targeting"] = targeting
    if "auto_resend" in paths:
        problems = validate_auto_resend(patch.auto_resend)
        violations.extend(problems)
        if not problems:
            changes["auto_resend"] = patch.auto_resend
    if "variations" in paths:
        problems = validate_variations(patch.variations)
        violations.extend(problems)
        if not problems:
            changes["variations"] = tuple(patch.variations)
    if "original_campaign_id" in paths:
        if patch.original_campaign_id < 0 or patch.original_campaign_id == patch.campaign_id:
            violations.append(
                FieldViolation(
                    "original_campaign_id",
                    "ORIGINAL_CAMPAIGN_NOT_FOUND",
                    "original_campaign_id must name another of the owner's campaigns",
                )
            )
        else:
            changes["original_campaign_id"] = patch.original_campaign_id or None
    for name in _FREE_TEXT_PATHS:
        if name in paths:
            problem = text_violation(getattr(patch, name), name)
            if problem:
                violations.append(problem)
            else:
                changes[name] = getattr(patch, name)
    for name in ("publish_on_rss", "s2s_enabled"):
        if name in paths:
            changes[name] = getattr(patch, name)
    return changes, violations


def apply_update(
    current: Campaign, patch: CampaignPatch, references: References, principal: Principal, now: datetime
) -> Campaign:
    """The campaign after the patch, or a DomainError naming every problem (request, references and state)."""
    changes, violations = check_patch(patch, now)
    violations.extend(references.unowned_targeting)
    email_id = changes.get("email_id")
    if email_id is not None and email_id not in references.live_email_ids:
        violations.append(FieldViolation("email_id", "EMAIL_NOT_FOUND", f"email {email_id} not found"))
    # Judged even when the variations break other rules, so that one answer names every problem.
    variation_email_ids = (
        [v.email_id for v in patch.variations if v.email_id > 0] if "variations" in patch.paths else []
    )
    missing = [email_id for email_id in variation_email_ids if email_id not in references.live_email_ids]
    if missing:
        violations.append(
            FieldViolation("variations", "VARIATION_EMAIL_NOT_FOUND", f"variation emails {missing} not found")
        )
    if changes.get("original_campaign_id") is not None and not references.original_campaign_found:
        violations.append(
            FieldViolation(
                "original_campaign_id",
                "ORIGINAL_CAMPAIGN_NOT_FOUND",
                f"campaign {changes['original_campaign_id']} not found, or it is an auto-resend of this one",
            )
        )
    if current.status not in EDITABLE_STATUSES:
        # A value sent again unchanged is no change: legacy clients send whole objects back.
        violations.extend(
            FieldViolation(
                path, "CAMPAIGN_NOT_EDITABLE", f"{path} cannot change while the campaign is {current.status}"
            )
            for path in dict.fromkeys(patch.paths)
            if path in RESTRICTED_PATHS and (path not in changes or changes[path] != getattr(current, path))
        )

    status = current.status
    requested: CampaignStatus | None = changes.get("status")
    if "status" not in patch.paths and current.status is CampaignStatus.READY:
        requested = CampaignStatus.READY  # stays Ready, unless an untrusted user changed approved content
    if requested is not None:
        content_changed = any(
            name in changes and changes[name] != getattr(current, name) for name in APPROVED_CONTENT
        )
        try:
            status = status_after_update(
                current.status, requested, untrusted=principal.untrusted, content_changed=content_changed
            )
        except DomainError as error:
            violations.extend(error.violations)

    schedule: Schedule = changes.get("schedule", current.schedule)
    arming = status in ARMED_STATUSES and current.status not in ARMED_STATUSES
    new_email_id = changes["email_id"] if "email_id" in changes else current.email_id
    new_variations: tuple[Variation, ...] = changes.get("variations", current.variations)
    # RULINGS 14: an A/B test's variations are content of their own; a campaign needs them or an email.
    content_set = "email_id" in changes or "variations" in changes
    if status in ARMED_STATUSES and new_email_id is None and not new_variations and (arming or content_set):
        violations.append(
            FieldViolation("email_id", "EMAIL_REQUIRED", "a Ready campaign needs an email_id or A/B variations")
        )
    elif arming:
        # The content chosen earlier may have been deleted since.
        if (
            "email_id" not in changes
            and new_email_id is not None
            and new_email_id not in references.live_email_ids
        ):
            violations.append(FieldViolation("email_id", "EMAIL_NOT_FOUND", f"email {new_email_id} not found"))
        gone = [v.email_id for v in new_variations if v.email_id not in references.live_email_ids]
        if "variations" not in changes and gone:
            violations.append(
                FieldViolation("variations", "VARIATION_EMAIL_NOT_FOUND", f"variation emails {gone} not found")
            )
    if arming and "schedule" not in changes and schedule.future is not None and schedule.future.send_time <= now:
        violations.append(
            FieldViolation("schedule.future.send_time", "SEND_TIME_IN_PAST", "the scheduled send_time has passed")
        )
    if violations:
        raise update_failure(violations, current.status)

    rescheduled = "schedule" in changes and changes["schedule"] != current.schedule
    scheduled_at = due_at(schedule, now) if rescheduled or arming else current.scheduled_at
    values = {name: value for name, value in changes.items() if name != "status"}
    return dataclasses.replace(current, **values, status=status, scheduled_at=scheduled_at)


def _reason_rank(violation: FieldViolation) -> int:
    return _REASON_ORDER.index(violation.reason) if violation.reason in _REASON_ORDER else len(_REASON_ORDER)


def update_failure(violations: Sequence[FieldViolation], status: CampaignStatus | None = None) -> DomainError:
    """One error naming every problem, most basic first; FAILED_PRECONDITION when only the state is wrong."""
    ordered = sorted(violations, key=_reason_rank)
    only_state = all(violation.reason in STATE_REASONS for violation in ordered)
    kind = ErrorKind.PRECONDITION if only_state else ErrorKind.INVALID
    metadata = {"status": status.value} if status is not None else {}
    return DomainError(kind, ordered[0].reason, ordered[0].description, ordered, metadata)


def update_not_found(campaign_id: int, violations: Sequence[FieldViolation]) -> DomainError:
    """NOT_FOUND for the campaign, with the request's own problems beside it."""
    found = FieldViolation("campaign.campaign_id", "CAMPAIGN_NOT_FOUND", f"campaign {campaign_id} not found")
    return DomainError(
        ErrorKind.NOT_FOUND,
        "CAMPAIGN_NOT_FOUND",
        found.description,
        [found, *sorted(violations, key=_reason_rank)],
        {"campaign_id": str(campaign_id)},
    )
