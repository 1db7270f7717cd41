"""Campaign rules without I/O: the status machine, schedule, targeting and A/B validation, list queries, events."""

from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import enum
import functools
import hashlib
import json
import math
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations, invalid

MAX_NAME_LENGTH = 255
COPY_SUFFIX = " (Copy)"
MAX_PAGE_SIZE = 1000
# Offsets and counts travel as int32 in the proto; a larger offset can only come from a forged token.
MAX_OFFSET = 2**31 - 1
# A real token is well under 100 characters; refusing long ones bounds the work spent decoding junk.
MAX_PAGE_TOKEN_LENGTH = 256
LIKE_ESCAPE = "\\"


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


class OrderField(enum.Enum):
    """The whitelist of orderings a list may ask for."""

    CAMPAIGN_ID = "campaign_id"
    NAME = "name"
    STATUS = "status"
    SEND_TIME = "send_time"
    CREATE_TIME = "create_time"
    UPDATE_TIME = "update_time"


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


def escape_like(text: str) -> str:
    """`text` with LIKE's wildcards and escape character made literal (for `ESCAPE '\\'`)."""
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")
    )


def name_contains_pattern(search: str) -> str:
    """The ILIKE pattern matching names that contain `search` literally."""
    return f"%{escape_like(search)}%"


@dataclass(frozen=True)
class CampaignFilter:
    """Which campaigns a list returns and in what order; the same filter always yields the same sequence."""

    owner_user_id: int | None
    statuses: tuple[CampaignStatus, ...] = ()
    search: str = ""
    campaign_ids: tuple[int, ...] = ()
    include_auto_resend: bool = False
    order_by: OrderField = OrderField.CAMPAIGN_ID
    descending: bool = False
    schedule_types: tuple[ScheduleType, ...] = ()
    # Ready with a Future or Recursive schedule (the legacy "Scheduled"), OR-combined with `statuses`.
    scheduled: bool = False
    # [send_time_from, send_time_to) on the send date: when sending started, else when the campaign is due.
    send_time_from: datetime | None = None
    send_time_to: datetime | None = None
    tag_ids: tuple[int, ...] = ()
    # The campaigns carrying one of `tag_ids`, as the tag service answered; None when not filtering by tag.
    # Not part of the fingerprint: a token stays valid while tags are assigned between pages.
    tagged_campaign_ids: tuple[int, ...] | None = None

    def fingerprint(self) -> str:
        """A short hash of the filter, so a page token is only accepted for the listing that issued it."""
        canonical = json.dumps(
            [
                self.owner_user_id,
                sorted(status.value for status in self.statuses),
                self.search,
                sorted(self.campaign_ids),
                self.include_auto_resend,
                self.order_by.value,
                self.descending,
                sorted(schedule_type.value for schedule_type in self.schedule_types),
                self.scheduled,
                self.send_time_from.isoformat() if self.send_time_from else None,
                self.send_time_to.isoformat() if self.send_time_to else None,
                sorted(self.tag_ids),
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def with_tagged_campaigns(self, campaign_ids: Iterable[int]) -> CampaignFilter:
        return dataclasses.replace(self, tagged_campaign_ids=tuple(sorted(set(campaign_ids))))


@dataclass(frozen=True)
class ListQuery:
    filter: CampaignFilter
    offset: int
    # None returns every match from the offset on.
    limit: int | None


def encode_page_token(offset: int, fingerprint: str) -> str:
    body = json.dumps({"o": offset, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str) -> int:
    """The offset a token carries; INVALID when it does not decode or was issued for another listing."""
    try:
        if len(token) > MAX_PAGE_TOKEN_LENGTH:
            raise ValueError("too long")
        body = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        claims = json.loads(body)
        offset = claims["o"]
        matches = claims["f"] == fingerprint
    except (binascii.Error, ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise invalid("PAGE_TOKEN_INVALID", "page_token is not a token this service issued", "page_token") from exc
    # bool is an int in Python; a forged {"o": true} must not pass as offset 1.
    if not matches or type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
        raise invalid("PAGE_TOKEN_INVALID", "page_token does not belong to this listing's filters", "page_token")
    return offset


def list_owner_scope(principal: Principal, owner_user_id: int) -> int | None:
    """The owner a listing is limited to: an admin may name any user (0: everyone); a user only themself."""
    if principal.is_admin:
        return owner_user_id or None
    if owner_user_id not in (0, principal.user_id):
        raise DomainError(
            ErrorKind.PERMISSION,
            "ADMIN_REQUIRED",
            "only an admin may list another user's campaigns",
            [FieldViolation("owner_user_id", "ADMIN_REQUIRED", "only an admin may list another user's campaigns")],
        )
    return principal.user_id


def build_list_query(
    principal: Principal,
    *,
    statuses: Sequence[CampaignStatus | Unrecognized],
    search: str,
    campaign_ids: Sequence[int],
    include_auto_resend: bool,
    order_by: OrderField | Unrecognized,
    descending: bool,
    page_size: int,
    skip: int,
    page_token: str,
    schedule_types: Sequence[ScheduleType | Unrecognized] = (),
    scheduled: bool = False,
    send_time_from: datetime | None = None,
    send_time_to: datetime | None = None,
    tag_ids: Sequence[int] = (),
    owner_user_id: int = 0,
) -> ListQuery:
    """Validates a list request, naming every bad field at once, and turns it into a query."""
    owner = list_owner_scope(principal, owner_user_id)
    violations = Violations()
    wanted_statuses: list[CampaignStatus] = []
    for status in statuses:
        if isinstance(status, Unrecognized):
            violations.add("statuses", "CAMPAIGN_STATUS_INVALID", f"{status} is not a campaign status")
        elif status not in wanted_statuses:
            wanted_statuses.append(status)
    wanted_schedule_types: list[ScheduleType] = []
    for schedule_type in schedule_types:
        if isinstance(schedule_type, Unrecognized):
            violations.add("schedule_types", "SCHEDULE_TYPE_INVALID", f"{schedule_type} is not a schedule type")
        elif schedule_type not in wanted_schedule_types:
            wanted_schedule_types.append(schedule_type)
    if "\x00" in search:
        violations.add("search", "SEARCH_INVALID", "search must not contain NUL characters")
    if isinstance(order_by, Unrecognized):
        violations.add("order_by", "ORDER_BY_INVALID", f"{order_by} is not an order field")
    if page_size < 0:
        violations.add("page_size", "PAGE_SIZE_INVALID", "page_size must not be negative")
    if skip < 0:
        violations.add("skip", "SKIP_INVALID", "skip must not be negative")
    if any(tag_id <= 0 for tag_id in tag_ids):
        violations.add("tag_ids", "TAG_IDS_INVALID", "tag_ids must be positive tag ids")
    violations.raise_if_any()
    assert not isinstance(order_by, Unrecognized)

    campaign_filter = CampaignFilter(
        owner_user_id=owner,
        statuses=tuple(wanted_statuses),
        search=search,
        campaign_ids=tuple(dict.fromkeys(campaign_ids)),
        include_auto_resend=include_auto_resend,
        order_by=order_by,
        descending=descending,
        schedule_types=tuple(wanted_schedule_types),
        scheduled=scheduled,
        send_time_from=send_time_from,
        send_time_to=send_time_to,
        tag_ids=tuple(dict.fromkeys(tag_ids)),
    )
    # The token, when given, is the authority on where the page starts; skip serves legacy RecordsFrom.
    offset = decode_page_token(page_token, campaign_filter.fingerprint()) if page_token else skip
    limit = min(page_size, MAX_PAGE_SIZE) if page_size > 0 else None
    return ListQuery(filter=campaign_filter, offset=offset, limit=limit)


def next_page_token(query: ListQuery, returned: int, total: int) -> str:
    """The token of the page after this one; empty when this page reached the end."""
    if query.limit is None:
        return ""
    next_offset = query.offset + returned
    if returned == 0 or next_offset >= total or next_offset > MAX_OFFSET:
        return ""
    return encode_page_token(next_offset, query.filter.fingerprint())


@dataclass(frozen=True)
class CampaignsDeleted:
    """The campaign.deleted event: one per owner whose campaigns a delete removed."""

    owner_user_id: int
    campaign_ids: tuple[int, ...]

    def payload(self) -> bytes:
        return json.dumps({"owner_user_id": self.owner_user_id, "campaign_ids": list(self.campaign_ids)}).encode()


def deleted_events(deleted: Iterable[tuple[int, int]]) -> list[CampaignsDeleted]:
    """Groups (campaign_id, owner_user_id) pairs into one event per owner, ids ascending."""
    by_owner: dict[int, list[int]] = {}
    for campaign_id, owner_user_id in deleted:
        by_owner.setdefault(owner_user_id, []).append(campaign_id)
    return [
        CampaignsDeleted(owner_user_id=owner, campaign_ids=tuple(sorted(ids)))
        for owner, ids in sorted(by_owner.items())
    ]


# --- the status machine --------------------------------------------------------------------------------------

# A client asks for these with UpdateCampaign; every other status is reached through a custom method
# (pause, resume, cancel, approve) or by delivery (Sending, Sent, Failed).
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
    """FAILED_PRECONDITION STATUS_INVALID, with the current status (legacy name) in the metadata."""
    violations = [FieldViolation(field_name, "STATUS_INVALID", message)] if field_name else []
    return DomainError(ErrorKind.PRECONDITION, "STATUS_INVALID", message, violations, {"status": current.value})


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


STATUS_CHANGED = "campaign.status_changed"


@dataclass(frozen=True)
class StatusChanged:
    """The campaign.status_changed event: delivery stops or starts workers on it."""

    owner_user_id: int
    campaign_id: int
    status: CampaignStatus
    previous_status: CampaignStatus

    def payload(self) -> bytes:
        return json.dumps(
            {
                "owner_user_id": self.owner_user_id,
                "campaign_id": self.campaign_id,
                "status": self.status.value,
                "previous_status": self.previous_status.value,
            }
        ).encode()


def status_change(before: Campaign, after: Campaign) -> StatusChanged | None:
    """The event to publish for a change, or None when the status stayed the same."""
    if before.status is after.status:
        return None
    return StatusChanged(after.owner_user_id, after.campaign_id, after.status, before.status)


# --- schedules -----------------------------------------------------------------------------------------------

# Entries of the host's zone database that are not IANA zones of their own.
_NOT_TIME_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_RECURSIVE_RANGES: dict[str, tuple[int, int]] = {
    "days_of_week": (0, 6),
    "days_of_month": (1, 31),
    "months": (1, 12),
    "hours": (0, 23),
    "minutes": (0, 59),
}
_RECURSIVE_REQUIRED: dict[str, str] = {
    "months": "RECURSIVE_MONTHS_REQUIRED",
    "hours": "RECURSIVE_HOURS_REQUIRED",
    "minutes": "RECURSIVE_MINUTES_REQUIRED",
}
# The longest each month gets (29 February included): a day of month beyond it never occurs.
_LONGEST_MONTH = {month: calendar.monthrange(2024, month)[1] for month in range(1, 13)}
# Long enough to reach a 29 February from any day (2096 to 2104 skips 2100).
_RECURRENCE_HORIZON_DAYS = 9 * 366


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_TIME_ZONES


def is_time_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone this host knows (e.g. "America/New_York", "UTC")."""
    return name in _time_zones()


@dataclass(frozen=True)
class ScheduleRequest:
    """A schedule as a caller sent it, before validation; `detail` names the oneof member that was set, and
    `type` is None when the caller named no schedule type this version knows."""

    type: ScheduleType | None = None
    detail: Literal["", "future", "recursive"] = ""
    send_time: datetime | None = None
    time_zone: str = ""
    recursive: RecursiveSchedule = RecursiveSchedule()


def validate_schedule(request: ScheduleRequest, now: datetime) -> tuple[Schedule | None, list[FieldViolation]]:
    """The schedule to store and every problem with it; the schedule is None when there is any problem."""
    schedule_type = request.type
    if schedule_type is None:
        return None, [FieldViolation("schedule.type", "SCHEDULE_TYPE_INVALID", "schedule.type is required")]
    expected = {ScheduleType.FUTURE: "future", ScheduleType.RECURSIVE: "recursive"}.get(schedule_type, "")
    if request.detail and request.detail != expected:
        message = f"a {schedule_type.value} schedule takes no {request.detail} detail"
        return None, [FieldViolation("schedule.type", "SCHEDULE_TYPE_INVALID", message)]
    if schedule_type is ScheduleType.FUTURE:
        return _validate_future(request, now)
    if schedule_type is ScheduleType.RECURSIVE:
        rule, violations = validate_recurrence(request.recursive)
        return (None if violations else Schedule(schedule_type, recursive=rule)), violations
    return Schedule(schedule_type), []


def _validate_future(request: ScheduleRequest, now: datetime) -> tuple[Schedule | None, list[FieldViolation]]:
    violations: list[FieldViolation] = []
    if request.time_zone and not is_time_zone(request.time_zone):
        violations.append(
            FieldViolation(
                "schedule.future.time_zone",
                "TIME_ZONE_INVALID",
                f"{request.time_zone!r} is not an IANA time zone",
            )
        )
    if request.send_time is None:
        violations.append(
            FieldViolation(
                "schedule.future.send_time", "SEND_TIME_REQUIRED", "a Future schedule needs a send_time"
            )
        )
    elif request.send_time <= now:
        violations.append(
            FieldViolation("schedule.future.send_time", "SEND_TIME_IN_PAST", "send_time must lie in the future")
        )
    if violations or request.send_time is None:
        return None, violations
    return Schedule(ScheduleType.FUTURE, future=FutureSchedule(request.send_time, request.time_zone)), []


def validate_recurrence(rule: RecursiveSchedule) -> tuple[RecursiveSchedule, list[FieldViolation]]:
    """The rule with each list sorted and without duplicates, and every problem with it."""
    prefix = "schedule.recursive."
    violations: list[FieldViolation] = []
    if not rule.days_of_week and not rule.days_of_month:
        violations.append(
            FieldViolation(
                prefix + "days_of_week",
                "RECURSIVE_DAYS_REQUIRED",
                "a Recursive schedule needs days_of_week or days_of_month",
            )
        )
    for name, (low, high) in _RECURSIVE_RANGES.items():
        values: tuple[int, ...] = getattr(rule, name)
        if name in _RECURSIVE_REQUIRED and not values:
            violations.append(
                FieldViolation(prefix + name, _RECURSIVE_REQUIRED[name], f"a Recursive schedule needs {name}")
            )
        elif any(not low <= value <= high for value in values):
            violations.append(
                FieldViolation(
                    prefix + name, "RECURSIVE_VALUE_INVALID", f"{name} must lie between {low} and {high}"
                )
            )
    if rule.max_instances < 1:
        violations.append(
            FieldViolation(
                prefix + "max_instances", "RECURSIVE_MAX_INSTANCES_REQUIRED", "max_instances must be at least 1"
            )
        )
    if rule.time_zone and not is_time_zone(rule.time_zone):
        violations.append(
            FieldViolation(
                prefix + "time_zone", "TIME_ZONE_INVALID", f"{rule.time_zone!r} is not an IANA time zone"
            )
        )

    def distinct(values: Iterable[int]) -> tuple[int, ...]:
        return tuple(sorted(set(values)))

    normalized = RecursiveSchedule(
        days_of_week=distinct(rule.days_of_week),
        days_of_month=distinct(rule.days_of_month),
        months=distinct(rule.months),
        hours=distinct(rule.hours),
        minutes=distinct(rule.minutes),
        max_instances=rule.max_instances,
        time_zone=rule.time_zone,
    )
    if not violations and not _can_occur(normalized):
        violations.append(
            FieldViolation(
                prefix + "days_of_month",
                "RECURSIVE_VALUE_INVALID",
                "none of days_of_month occurs in any of the months",
            )
        )
    return normalized, violations


def _can_occur(rule: RecursiveSchedule) -> bool:
    if rule.days_of_week:
        return True
    return any(day <= _LONGEST_MONTH[month] for day in rule.days_of_month for month in rule.months)


def _day_matches(rule: RecursiveSchedule, day: date) -> bool:
    weekday = (day.weekday() + 1) % 7  # 0 is Sunday, as in the proto and cron
    by_week = weekday in rule.days_of_week
    by_month = day.day in rule.days_of_month
    if rule.days_of_week and rule.days_of_month:
        return by_week or by_month
    return by_week if rule.days_of_week else by_month


def next_occurrence(rule: RecursiveSchedule, after: datetime) -> datetime | None:
    """The first instant strictly after `after` (UTC) at which the rule fires; None if it never does."""
    zone = zoneinfo.ZoneInfo(rule.time_zone or "UTC")
    first_day = after.astimezone(zone).date()
    times = sorted((hour, minute) for hour in set(rule.hours) for minute in set(rule.minutes))
    for offset in range(_RECURRENCE_HORIZON_DAYS):
        day = first_day + timedelta(days=offset)
        if day.month not in rule.months or not _day_matches(rule, day):
            continue
        for hour, minute in times:
            instant = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
            if instant > after:
                return instant
    return None


def due_at(schedule: Schedule, now: datetime) -> datetime | None:
    """When a campaign armed at `now` with this schedule is due; None when it is not scheduled."""
    if schedule.future is not None:
        return schedule.future.send_time
    if schedule.recursive is not None:
        return next_occurrence(schedule.recursive, now)
    if schedule.type is ScheduleType.IMMEDIATE:
        return now
    return None


# --- targeting, auto-resend, variations ----------------------------------------------------------------------

MIN_VARIATIONS = 2
MAX_VARIATIONS = 5
MAX_AUTO_RESEND_WAIT_DAYS = 365
_RULES_OPERATORS = ("and", "or")


def _text_violation(value: str, field_name: str) -> FieldViolation | None:
    # PostgreSQL text cannot hold NUL; refusing it here keeps the failure a client error.
    if "\x00" in value:
        return FieldViolation(field_name, "TEXT_INVALID", f"{field_name} must not contain NUL characters")
    return None


def _is_positive_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, float) and math.isfinite(value) and value.is_integer() and value > 0


def _json_problem(value: object) -> str | None:
    """Why a JSON-compatible value cannot be stored as jsonb (NUL in a string, a non-finite number), or None."""
    if isinstance(value, str):
        return "strings must not contain NUL characters" if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "numbers must be finite"
    if isinstance(value, Mapping):
        for key, item in value.items():
            problem = _json_problem(key) or _json_problem(item)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = _json_problem(item)
            if problem:
                return problem
    return None


def rules_bundle_problem(bundle: Mapping[str, Any]) -> str | None:
    """What is wrong with the envelope of a RulesJsonBundle, or None; the audience service judges the rules."""
    operator = bundle.get("operator")
    if not isinstance(operator, str) or operator.lower() not in _RULES_OPERATORS:
        return 'rules_bundle needs an "operator" of "and" or "or"'
    criteria = bundle.get("criteria")
    if not isinstance(criteria, list):
        return 'rules_bundle needs a "criteria" list'
    for index, criterion in enumerate(criteria):
        if not isinstance(criterion, Mapping):
            return f"criteria[{index}] must be an object"
        if not _is_positive_integer(criterion.get("list_id")):
            return f"criteria[{index}] needs a positive integer list_id"
    return _json_problem(bundle)


def _integral_numbers(value: Any) -> Any:
    """The value with whole floats turned into ints: protobuf's Struct carries every number as a double."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {key: _integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(item) for item in value]
    return value


def validate_targeting(targeting: Targeting) -> tuple[Targeting, list[FieldViolation]]:
    """The targeting to store (sources without duplicates; an empty bundle means no rules) and its problems."""
    violations: list[FieldViolation] = []
    for name, sources in (("included", targeting.included), ("excluded", targeting.excluded)):
        if any(source.list_id <= 0 or source.segment_id < 0 for source in sources):
            violations.append(
                FieldViolation(
                    f"targeting.{name}",
                    "TARGETING_INVALID",
                    f"targeting.{name} needs positive list ids and segment ids of 0 (whole list) or more",
                )
            )
    bundle: Mapping[str, Any] | None = None
    if targeting.rules_bundle:
        problem = rules_bundle_problem(targeting.rules_bundle)
        if problem:
            violations.append(FieldViolation("targeting.rules_bundle", "RULES_BUNDLE_INVALID", problem))
        else:
            bundle = _integral_numbers(targeting.rules_bundle)
    normalized = Targeting(
        included=tuple(dict.fromkeys(targeting.included)),
        excluded=tuple(dict.fromkeys(targeting.excluded)),
        rules_bundle=bundle,
    )
    return normalized, violations


def validate_auto_resend(auto_resend: AutoResend) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    low = 1 if auto_resend.enabled else 0
    if not low <= auto_resend.wait_days <= MAX_AUTO_RESEND_WAIT_DAYS:
        violations.append(
            FieldViolation(
                "auto_resend.wait_days",
                "AUTO_RESEND_WAIT_DAYS_INVALID",
                f"auto_resend.wait_days must lie between {low} and {MAX_AUTO_RESEND_WAIT_DAYS}",
            )
        )
    if auto_resend.enabled and not auto_resend.subject.strip():
        violations.append(
            FieldViolation(
                "auto_resend.subject", "AUTO_RESEND_SUBJECT_REQUIRED", "an enabled auto-resend needs a subject"
            )
        )
    if auto_resend.enabled and not auto_resend.preheader_text.strip():
        violations.append(
            FieldViolation(
                "auto_resend.preheader_text",
                "AUTO_RESEND_PREHEADER_REQUIRED",
                "an enabled auto-resend needs a preheader_text",
            )
        )
    for name in ("subject", "preheader_text"):
        problem = _text_violation(getattr(auto_resend, name), f"auto_resend.{name}")
        if problem:
            violations.append(problem)
    return violations


def validate_variations(variations: Sequence[Variation]) -> list[FieldViolation]:
    """Problems of an A/B test's variations; an empty list (no A/B test) has none."""
    if not variations:
        return []

    def violation(reason: str, message: str) -> FieldViolation:
        return FieldViolation("variations", reason, message)

    violations: list[FieldViolation] = []
    if len(variations) < MIN_VARIATIONS:
        violations.append(
            violation("VARIATIONS_TOO_FEW", f"an A/B test needs at least {MIN_VARIATIONS} variations")
        )
    if len(variations) > MAX_VARIATIONS:
        violations.append(
            violation("VARIATIONS_TOO_MANY", f"an A/B test takes at most {MAX_VARIATIONS} variations")
        )
    incomplete = [i for i, v in enumerate(variations) if v.email_id == 0 or v.weight == 0]
    if incomplete:
        violations.append(
            violation("VARIATION_FIELDS_REQUIRED", f"variations {incomplete} need an email_id and a weight")
        )
    negative = [i for i, v in enumerate(variations) if v.email_id < 0 or v.weight < 0]
    email_ids = [v.email_id for v in variations if v.email_id > 0]
    if negative:
        violations.append(violation("VARIATION_VALUE_INVALID", f"variations {negative} have a negative value"))
    elif len(set(email_ids)) != len(email_ids):
        violations.append(violation("VARIATION_VALUE_INVALID", "two variations name the same email_id"))
    weights = [v.weight for v in variations]
    total = sum(weights)
    # Judged only on positive weights, where a share means something; integer arithmetic avoids rounding.
    if all(weight > 0 for weight in weights) and any(weight * 100 < total for weight in weights):
        violations.append(
            violation("VARIATION_SHARE_TOO_SMALL", "every variation must get at least 1% of the recipients")
        )
    return violations


# --- UpdateCampaign ------------------------------------------------------------------------------------------

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
    schedule: ScheduleRequest = ScheduleRequest()
    targeting: Targeting = Targeting()
    auto_resend: AutoResend = AutoResend()
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
            problem = _text_violation(getattr(patch, name), name)
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


# --- split tests ---------------------------------------------------------------------------------------------

MAX_TEST_DURATION_HOURS = 720


@dataclass(frozen=True)
class SplitTestSettings:
    test_size_percent: int
    test_duration_hours: int
    winner: Winner


def check_split_test(
    campaign_id: int, test_size_percent: int, test_duration_hours: int, winner: Winner | Unrecognized | None
) -> tuple[SplitTestSettings | None, list[FieldViolation]]:
    """The settings to store and every problem with the request (the campaign's existence aside); `winner`
    is None when the caller gave none."""
    violations: list[FieldViolation] = []
    if campaign_id <= 0:
        violations.append(FieldViolation("campaign_id", "CAMPAIGN_ID_REQUIRED", "campaign_id is required"))
    if test_size_percent == 0:
        violations.append(
            FieldViolation("test_size_percent", "TEST_SIZE_REQUIRED", "test_size_percent is required")
        )
    elif not 1 <= test_size_percent <= 99:
        violations.append(
            FieldViolation("test_size_percent", "TEST_SIZE_INVALID", "test_size_percent must lie between 1 and 99")
        )
    if test_duration_hours == 0:
        violations.append(
            FieldViolation("test_duration_hours", "TEST_DURATION_REQUIRED", "test_duration_hours is required")
        )
    elif not 1 <= test_duration_hours <= MAX_TEST_DURATION_HOURS:
        violations.append(
            FieldViolation(
                "test_duration_hours",
                "TEST_DURATION_INVALID",
                f"test_duration_hours must lie between 1 and {MAX_TEST_DURATION_HOURS}",
            )
        )
    if winner is None:
        violations.append(FieldViolation("winner", "WINNER_REQUIRED", "winner is required"))
    elif isinstance(winner, Unrecognized):
        violations.append(FieldViolation("winner", "WINNER_INVALID", f"{winner} is not a winner rule"))
    if violations or not isinstance(winner, Winner):
        return None, violations
    return SplitTestSettings(test_size_percent, test_duration_hours, winner), []


def split_test_failure(violations: Sequence[FieldViolation], missing_campaign_id: int | None) -> DomainError:
    """INVALID naming every bad field (and the missing campaign beside them), or NOT_FOUND when that is all."""
    items = list(violations)
    if missing_campaign_id is not None:
        items.append(
            FieldViolation("campaign_id", "CAMPAIGN_NOT_FOUND", f"campaign {missing_campaign_id} not found")
        )
    kind = ErrorKind.INVALID if violations else ErrorKind.NOT_FOUND
    metadata = {"campaign_id": str(missing_campaign_id)} if missing_campaign_id is not None else {}
    return DomainError(kind, items[0].reason, items[0].description, items, metadata)


# --- statistics ----------------------------------------------------------------------------------------------

# CAMPAIGN_VIEW_FULL sums statistics over at most this many of a listing's matches (the first in its order),
# so that one listing never asks delivery about an unbounded number of campaigns.
MAX_TOTAL_STATISTICS_CAMPAIGNS = 10_000


def throughput(total_sent: int, first_send: datetime | None, last_send: datetime | None) -> tuple[float, int]:
    """RULINGS 11: emails per second between the first and the last send, and those seconds rounded."""
    if first_send is None or last_send is None:
        return 0.0, 0
    seconds = (last_send - first_send).total_seconds()
    if seconds <= 0:
        return 0.0, 0
    return total_sent / seconds, round(seconds)


def new_event_id(event: str) -> str:
    """A Nats-Msg-Id for one occurrence of an event."""
    return f"{event}:{uuid.uuid4()}"
