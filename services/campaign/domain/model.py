"""The campaign record and its parts, the enums the domain speaks in, and the rules on ids, names and ownership."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation, invalid

MAX_NAME_LENGTH = 255
COPY_SUFFIX = " (Copy)"
AUTO_RESEND_SUFFIX = " (Auto-resend)"


class CampaignStatus(enum.StrEnum):
    """Where a campaign is in its life; the values are the legacy names, stored as they are."""

    DRAFT = "Draft"
    READY = "Ready"
    SENDING = "Sending"
    PAUSED = "Paused"
    PENDING_APPROVAL = "Pending Approval"
    SENT = "Sent"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def api_name(self) -> str:
        """The status's name in the gRPC API (the CampaignStatus enum value), as ErrorInfo.metadata gives it."""
        return f"CAMPAIGN_STATUS_{self.name}"


class ScheduleType(enum.StrEnum):
    """When a campaign is sent; the values are the legacy names, stored as they are."""

    NOT_SCHEDULED = "Not Scheduled"
    IMMEDIATE = "Immediate"
    FUTURE = "Future"
    RECURSIVE = "Recursive"


class Winner(enum.StrEnum):
    """How a split test picks its winner; the values are the legacy names, stored as they are."""

    HIGHEST_OPEN_RATE = "Highest Open Rate"
    MOST_UNIQUE_CLICKS = "Most Unique Clicks"


@dataclass(frozen=True)
class Unrecognized:
    """A value a caller sent for one of these enums that names none of its members (or, where the enum
    has no "not given", nothing at all); kept so that the refusal can quote it."""

    number: int

    def __str__(self) -> str:
        return str(self.number)


@dataclass(frozen=True)
class FutureSchedule:
    """Send once at `send_time` (the instant itself); `time_zone` is the zone the user chose, '' for UTC."""

    send_time: datetime
    time_zone: str = ""


@dataclass(frozen=True)
class RecursiveSchedule:
    """Send at every minute matching all lists (cron-like: a day matches its weekday OR its day of month when
    both are given), at most `max_instances` times; hours and minutes are in `time_zone` ('' for UTC)."""

    days_of_week: tuple[int, ...] = ()
    days_of_month: tuple[int, ...] = ()
    months: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    minutes: tuple[int, ...] = ()
    max_instances: int = 0
    time_zone: str = ""


@dataclass(frozen=True)
class Schedule:
    """When a campaign is sent: `future` is set exactly for FUTURE, `recursive` exactly for RECURSIVE."""

    type: ScheduleType = ScheduleType.NOT_SCHEDULED
    future: FutureSchedule | None = None
    recursive: RecursiveSchedule | None = None


NOT_SCHEDULED = Schedule()


@dataclass(frozen=True)
class RecipientSource:
    """A list, or one of its segments (segment 0: the whole list)."""

    list_id: int
    segment_id: int = 0


@dataclass(frozen=True)
class Targeting:
    """Who receives a campaign; `rules_bundle` is the legacy RulesJsonBundle as JSON-compatible values."""

    included: tuple[RecipientSource, ...] = ()
    excluded: tuple[RecipientSource, ...] = ()
    rules_bundle: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class AutoResend:
    enabled: bool = False
    wait_days: int = 0
    subject: str = ""
    preheader_text: str = ""


@dataclass(frozen=True)
class Variation:
    email_id: int
    weight: int


@dataclass(frozen=True)
class SplitTest:
    split_test_id: int
    campaign_id: int
    test_size_percent: int
    test_duration_hours: int
    winner: Winner


@dataclass(frozen=True)
class Campaign:
    campaign_id: int
    owner_user_id: int
    name: str
    status: CampaignStatus
    status_reason: str
    email_id: int | None
    original_campaign_id: int | None
    created_at: datetime
    updated_at: datetime
    send_started_at: datetime | None
    schedule: Schedule = NOT_SCHEDULED
    # When the campaign is due: the Future send time, the next Recursive occurrence, or when an Immediate
    # campaign was armed; None when not scheduled. The picker finds due Ready campaigns by it.
    scheduled_at: datetime | None = None
    targeting: Targeting = Targeting()
    auto_resend: AutoResend = AutoResend()
    variations: tuple[Variation, ...] = ()
    split_test: SplitTest | None = None
    approval_user_explanation: str = ""
    google_analytics_domains: str = ""
    publish_on_rss: bool = False
    s2s_enabled: bool = False
    send_finished_at: datetime | None = None
    # Set only on the auto-resend Herald created for that campaign: it goes to that campaign's non-openers.
    auto_resend_of: int | None = None
    # The SMTP relay it is sent through, by its name in the delivery workers' SMTP_URL ("": any).
    relay: str = ""

    @property
    def schedule_type(self) -> ScheduleType:
        return self.schedule.type


def owner_scope(principal: Principal) -> int | None:
    """The owner every query of this principal is limited to; None for an admin, who sees every user's."""
    return None if principal.is_admin else principal.user_id


def owner_of_new_campaign(principal: Principal) -> int:
    """A campaign belongs to exactly one user, so an admin (who is no user) cannot create one."""
    if principal.is_admin:
        raise DomainError(
            ErrorKind.PERMISSION,
            "ADMIN_CANNOT_OWN_CAMPAIGNS",
            "an admin cannot own campaigns; create them with the user's credentials",
        )
    return principal.user_id


def validate_campaign_name(name: str) -> str:
    """The name to store (surrounding whitespace removed), or INVALID when it is blank or too long."""
    trimmed = name.strip()
    if not trimmed:
        raise invalid("CAMPAIGN_NAME_REQUIRED", "name is required", "name")
    if len(trimmed) > MAX_NAME_LENGTH:
        raise invalid("CAMPAIGN_NAME_TOO_LONG", f"name is longer than {MAX_NAME_LENGTH} characters", "name")
    if "\x00" in trimmed:
        # PostgreSQL text cannot hold NUL; refusing it here keeps the failure a client error.
        raise invalid("CAMPAIGN_NAME_INVALID", "name must not contain NUL characters", "name")
    return trimmed


def copy_name(name: str) -> str:
    """`<name> (Copy)`, with the original shortened so that the result still fits the name limit."""
    return name[: MAX_NAME_LENGTH - len(COPY_SUFFIX)].rstrip() + COPY_SUFFIX


def auto_resend_name(name: str) -> str:
    """`<name> (Auto-resend)`, with the original shortened so that the result still fits the name limit."""
    return name[: MAX_NAME_LENGTH - len(AUTO_RESEND_SUFFIX)].rstrip() + AUTO_RESEND_SUFFIX


def validate_campaign_id(campaign_id: int, field_name: str = "campaign_id") -> None:
    if campaign_id <= 0:
        raise invalid("CAMPAIGN_ID_REQUIRED", f"{field_name} must be a positive campaign id", field_name)


def require_campaign_ids(campaign_ids: Sequence[int]) -> list[int]:
    """The ids without duplicates, in the order first given; INVALID when there are none."""
    if not campaign_ids:
        raise invalid("CAMPAIGN_IDS_REQUIRED", "campaign_ids must name at least one campaign", "campaign_ids")
    return list(dict.fromkeys(campaign_ids))


def campaign_not_found(campaign_id: int) -> DomainError:
    return DomainError(
        ErrorKind.NOT_FOUND,
        "CAMPAIGN_NOT_FOUND",
        f"campaign {campaign_id} not found",
        [FieldViolation("campaign_id", "CAMPAIGN_NOT_FOUND", f"campaign {campaign_id} not found")],
        {"campaign_id": str(campaign_id)},
    )


def check_all_found(requested: Sequence[int], found: Iterable[int]) -> None:
    """NOT_FOUND with one violation per requested id that was not found (missing or another user's)."""
    found_ids = set(found)
    missing = [campaign_id for campaign_id in dict.fromkeys(requested) if campaign_id not in found_ids]
    if not missing:
        return
    violations = [
        FieldViolation("campaign_ids", "CAMPAIGN_NOT_FOUND", f"campaign {campaign_id} not found")
        for campaign_id in missing
    ]
    raise DomainError(
        ErrorKind.NOT_FOUND,
        "CAMPAIGN_NOT_FOUND",
        violations[0].description if len(missing) == 1 else f"{len(missing)} campaigns not found",
        violations,
        {"campaign_ids": ",".join(str(campaign_id) for campaign_id in missing)},
    )


def text_violation(value: str, field_name: str) -> FieldViolation | None:
    # PostgreSQL text cannot hold NUL; refusing it here keeps the failure a client error.
    if "\x00" in value:
        return FieldViolation(field_name, "TEXT_INVALID", f"{field_name} must not contain NUL characters")
    return None
