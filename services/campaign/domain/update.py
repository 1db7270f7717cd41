"""UpdateCampaign: checking a patch and applying it to the campaign, naming every problem at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
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
from services.common import field_masks
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation
from services.common.relay_names import relay_name_problem

# Only a campaign that has not started sending (Draft or Ready) may change these.
RESTRICTED_PATHS = frozenset(
    {"email_id", "schedule", "targeting", "auto_resend", "variations", "original_campaign_id", "relay"}
)
# What recipients get: changing it on an untrusted user's approved campaign needs a new approval.
APPROVED_CONTENT = ("email_id", "targeting", "auto_resend", "variations")
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
    "SETTING_UNSUPPORTED",
    "RELAY_INVALID",
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
    relay: str = ""

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


# What a field's check finds: the value to store (kept only when there is no problem) and the problems.
_FieldCheck = Callable[[CampaignPatch, datetime], tuple[Any, Sequence[FieldViolation]]]


def _check_name(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    try:
        return validate_campaign_name(patch.name), []
    except DomainError as error:
        return None, error.violations


def _check_status(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    status = patch.status
    if isinstance(status, CampaignStatus) and status in CLIENT_SETTABLE_STATUSES:
        return status, []
    return None, [FieldViolation("status", "STATUS_INVALID", f"status {status} cannot be set directly")]


def _check_email_id(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    if patch.email_id < 0:
        return None, [FieldViolation("email_id", "EMAIL_NOT_FOUND", f"email {patch.email_id} not found")]
    return patch.email_id or None, []


def _check_schedule(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    return validate_schedule(patch.schedule, now)


def _check_targeting(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    return validate_targeting(patch.targeting)


def _check_auto_resend(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    return patch.auto_resend, validate_auto_resend(patch.auto_resend)


def _check_variations(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    return tuple(patch.variations), validate_variations(patch.variations)


def _check_original_campaign_id(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    if patch.original_campaign_id < 0 or patch.original_campaign_id == patch.campaign_id:
        message = "original_campaign_id must name another of the owner's campaigns"
        return None, [FieldViolation("original_campaign_id", "ORIGINAL_CAMPAIGN_NOT_FOUND", message)]
    return patch.original_campaign_id or None, []


def _free_text(name: str) -> _FieldCheck:
    def check(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
        value: str = getattr(patch, name)
        problem = text_violation(value, name)
        return value, [problem] if problem else []

    return check


def _check_relay(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
    # Only the name's form: the relays are the delivery workers' SMTP_URL, which delivery checks the name
    # against when the campaign starts (an unknown one fails it, with that reason).
    relay = patch.relay.strip()
    problem = relay_name_problem(relay) if relay else None
    if problem:
        return None, [FieldViolation("relay", "RELAY_INVALID", f"relay {relay!r} is invalid: {problem}")]
    return relay, []


def _as_sent(name: str) -> _FieldCheck:
    return lambda patch, now: (getattr(patch, name), [])


def _unsupported(name: str, what: str) -> _FieldCheck:
    """A setting whose behaviour Herald does not implement (issue 14): only its default may be stored, so a
    caller asking for the behaviour is told it will not happen instead of having it stored and ignored."""

    def check(patch: CampaignPatch, now: datetime) -> tuple[Any, Sequence[FieldViolation]]:
        value = getattr(patch, name)
        if isinstance(value, str):
            problem = text_violation(value, name)
            if problem:
                return value, [problem]
            value = value.strip()
        if not value:
            return value, []
        message = f"{name} is not supported: Herald does not implement {what}; leave it unset"
        return value, [FieldViolation(name, "SETTING_UNSUPPORTED", message)]

    return check


# One row per path UpdateCampaign may change, in the order of the legacy campaign.update checks.
_FIELD_CHECKS: dict[str, _FieldCheck] = {
    "name": _check_name,
    "status": _check_status,
    "email_id": _check_email_id,
    "schedule": _check_schedule,
    "targeting": _check_targeting,
    "auto_resend": _check_auto_resend,
    "variations": _check_variations,
    "original_campaign_id": _check_original_campaign_id,
    "status_reason": _free_text("status_reason"),
    "approval_user_explanation": _free_text("approval_user_explanation"),
    "google_analytics_domains": _unsupported("google_analytics_domains", "Google Analytics link tagging"),
    "publish_on_rss": _as_sent("publish_on_rss"),
    "s2s_enabled": _unsupported("s2s_enabled", "server-to-server conversion tracking"),
    "relay": _check_relay,
}
UPDATABLE_PATHS = tuple(_FIELD_CHECKS)
# Paths of output-only fields that mirror an updatable one: refused with the path to name instead.
RENAMED_PATHS = {"schedule_type": "schedule"}


def check_patch(patch: CampaignPatch, now: datetime) -> tuple[dict[str, Any], list[FieldViolation]]:
    """The validated new values by Campaign field, and every problem found without looking at the campaign."""
    violations: list[FieldViolation] = []
    if patch.campaign_id <= 0:
        violations.append(
            FieldViolation("campaign.campaign_id", "CAMPAIGN_ID_REQUIRED", "campaign.campaign_id is required")
        )
    unknown = [path for path in patch.paths if path not in _FIELD_CHECKS]
    if unknown:
        message = field_masks.unknown_paths_message(unknown, UPDATABLE_PATHS, RENAMED_PATHS)
        violations.append(FieldViolation("update_mask", "UPDATE_MASK_INVALID", message))
    changes: dict[str, Any] = {}
    for path, check in _FIELD_CHECKS.items():
        if path in patch.paths:
            value, problems = check(patch, now)
            violations.extend(problems)
            if not problems:
                changes[path] = value
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
    metadata = {"status": status.api_name} if status is not None else {}
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
