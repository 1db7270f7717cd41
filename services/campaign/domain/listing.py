"""ListCampaigns without I/O: the filter, its order, page tokens and LIKE patterns."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.campaign.domain.model import CampaignStatus, ScheduleType, Unrecognized
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations, invalid

MAX_PAGE_SIZE = 1000
# Offsets and counts travel as int32 in the proto; a larger offset can only come from a forged token.
MAX_OFFSET = 2**31 - 1
# A real token is well under 100 characters; refusing long ones bounds the work spent decoding junk.
MAX_PAGE_TOKEN_LENGTH = 256


class OrderField(enum.Enum):
    """The whitelist of orderings a list may ask for."""

    CAMPAIGN_ID = "campaign_id"
    NAME = "name"
    STATUS = "status"
    SEND_TIME = "send_time"
    CREATE_TIME = "create_time"
    UPDATE_TIME = "update_time"


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
    # Only campaigns whose publish_on_rss is this value; None for both.
    publish_on_rss: bool | None = None
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
                self.publish_on_rss,
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


def list_owner_scope(principal: Principal, owner_user_id: int, things: str = "campaigns") -> int | None:
    """The owner a listing of `things` is limited to: an admin may name any user (0: everyone); a user only
    themself."""
    if principal.is_admin:
        return owner_user_id or None
    if owner_user_id not in (0, principal.user_id):
        message = f"only an admin may list another user's {things}"
        raise DomainError(
            ErrorKind.PERMISSION,
            "ADMIN_REQUIRED",
            message,
            [FieldViolation("owner_user_id", "ADMIN_REQUIRED", message)],
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
    publish_on_rss: bool | None = None,
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
        publish_on_rss=publish_on_rss,
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
