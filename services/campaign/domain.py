"""Campaign rules without I/O: statuses and their proto values, name checks, list queries, page tokens and events."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from herald.campaign.v1 import campaign_pb2

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


class OrderField(enum.Enum):
    """The whitelist of orderings a list may ask for."""

    CAMPAIGN_ID = "campaign_id"
    NAME = "name"
    STATUS = "status"
    SEND_TIME = "send_time"
    CREATE_TIME = "create_time"
    UPDATE_TIME = "update_time"


_STATUS_TO_PROTO: dict[CampaignStatus, campaign_pb2.CampaignStatus.ValueType] = {
    CampaignStatus.DRAFT: campaign_pb2.CAMPAIGN_STATUS_DRAFT,
    CampaignStatus.READY: campaign_pb2.CAMPAIGN_STATUS_READY,
    CampaignStatus.SENDING: campaign_pb2.CAMPAIGN_STATUS_SENDING,
    CampaignStatus.PAUSED: campaign_pb2.CAMPAIGN_STATUS_PAUSED,
    CampaignStatus.PENDING_APPROVAL: campaign_pb2.CAMPAIGN_STATUS_PENDING_APPROVAL,
    CampaignStatus.SENT: campaign_pb2.CAMPAIGN_STATUS_SENT,
    CampaignStatus.FAILED: campaign_pb2.CAMPAIGN_STATUS_FAILED,
    CampaignStatus.CANCELLED: campaign_pb2.CAMPAIGN_STATUS_CANCELLED,
}
_STATUS_FROM_PROTO: dict[int, CampaignStatus] = {value: status for status, value in _STATUS_TO_PROTO.items()}

_SCHEDULE_TYPE_TO_PROTO: dict[ScheduleType, campaign_pb2.ScheduleType.ValueType] = {
    ScheduleType.NOT_SCHEDULED: campaign_pb2.SCHEDULE_TYPE_NOT_SCHEDULED,
    ScheduleType.IMMEDIATE: campaign_pb2.SCHEDULE_TYPE_IMMEDIATE,
    ScheduleType.FUTURE: campaign_pb2.SCHEDULE_TYPE_FUTURE,
    ScheduleType.RECURSIVE: campaign_pb2.SCHEDULE_TYPE_RECURSIVE,
}
_SCHEDULE_TYPE_FROM_PROTO: dict[int, ScheduleType] = {
    value: schedule for schedule, value in _SCHEDULE_TYPE_TO_PROTO.items()
}

_ORDER_FIELD_FROM_PROTO: dict[int, OrderField] = {
    campaign_pb2.CAMPAIGN_ORDER_FIELD_UNSPECIFIED: OrderField.CAMPAIGN_ID,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_CAMPAIGN_ID: OrderField.CAMPAIGN_ID,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_NAME: OrderField.NAME,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_STATUS: OrderField.STATUS,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_SEND_TIME: OrderField.SEND_TIME,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_CREATE_TIME: OrderField.CREATE_TIME,
    campaign_pb2.CAMPAIGN_ORDER_FIELD_UPDATE_TIME: OrderField.UPDATE_TIME,
}


def status_to_proto(status: CampaignStatus) -> campaign_pb2.CampaignStatus.ValueType:
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: int) -> CampaignStatus | None:
    """The status a proto value names; None for UNSPECIFIED and values this version does not know."""
    return _STATUS_FROM_PROTO.get(value)


def schedule_type_to_proto(schedule_type: ScheduleType) -> campaign_pb2.ScheduleType.ValueType:
    return _SCHEDULE_TYPE_TO_PROTO[schedule_type]


def schedule_type_from_proto(value: int) -> ScheduleType | None:
    """The schedule type a proto value names; None for UNSPECIFIED and unknown values."""
    return _SCHEDULE_TYPE_FROM_PROTO.get(value)


def order_field_from_proto(value: int) -> OrderField | None:
    """The ordering a proto value names (UNSPECIFIED means by campaign id); None for unknown values."""
    return _ORDER_FIELD_FROM_PROTO.get(value)


@dataclass(frozen=True)
class Campaign:
    campaign_id: int
    owner_user_id: int
    name: str
    status: CampaignStatus
    status_reason: str
    email_id: int | None
    schedule_type: ScheduleType
    original_campaign_id: int | None
    created_at: datetime
    updated_at: datetime
    send_started_at: datetime | None


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
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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


def build_list_query(
    principal: Principal,
    *,
    statuses: Sequence[int],
    search: str,
    campaign_ids: Sequence[int],
    include_auto_resend: bool,
    order_by: int,
    descending: bool,
    page_size: int,
    skip: int,
    page_token: str,
) -> ListQuery:
    """Validates a list request, naming every bad field at once, and turns it into a query."""
    violations = Violations()
    wanted_statuses: list[CampaignStatus] = []
    for value in statuses:
        status = status_from_proto(value)
        if status is None:
            violations.add("statuses", "CAMPAIGN_STATUS_INVALID", f"{value} is not a campaign status")
        elif status not in wanted_statuses:
            wanted_statuses.append(status)
    if "\x00" in search:
        violations.add("search", "SEARCH_INVALID", "search must not contain NUL characters")
    order_field = order_field_from_proto(order_by)
    if order_field is None:
        violations.add("order_by", "ORDER_BY_INVALID", f"{order_by} is not an order field")
    if page_size < 0:
        violations.add("page_size", "PAGE_SIZE_INVALID", "page_size must not be negative")
    if skip < 0:
        violations.add("skip", "SKIP_INVALID", "skip must not be negative")
    violations.raise_if_any()
    assert order_field is not None

    campaign_filter = CampaignFilter(
        owner_user_id=owner_scope(principal),
        statuses=tuple(wanted_statuses),
        search=search,
        campaign_ids=tuple(dict.fromkeys(campaign_ids)),
        include_auto_resend=include_auto_resend,
        order_by=order_field,
        descending=descending,
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
