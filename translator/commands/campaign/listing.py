"""The row for campaigns.get: campaigns filtered, sorted and paged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from herald.campaign.v1 import campaign_pb2

from translator.commands import ERROR_TEXT, Args, Command, Context, Param, Problems
from translator.commands.campaign.legacy import SCHEDULE_BY_LEGACY, STATUS_BY_LEGACY, parse_date
from translator.commands.campaign.render import (
    EXTRAS_PARAMS,
    STATISTICS_RETURNS,
    Extras,
    render_with_extras,
    statistics_view_of,
    view_of,
)
from translator.params import INT32_MAX, ParamError, legacy_name

# Legacy OrderField values that may be sorted on; anything else falls back to CampaignID.
ORDER_FIELDS = {
    "campaignid": campaign_pb2.CAMPAIGN_ORDER_FIELD_CAMPAIGN_ID,
    "campaignname": campaign_pb2.CAMPAIGN_ORDER_FIELD_NAME,
    "campaignstatus": campaign_pb2.CAMPAIGN_ORDER_FIELD_STATUS,
    "senddate": campaign_pb2.CAMPAIGN_ORDER_FIELD_SEND_TIME,
    "createdatetime": campaign_pb2.CAMPAIGN_ORDER_FIELD_CREATE_TIME,
    "updatedatetime": campaign_pb2.CAMPAIGN_ORDER_FIELD_UPDATE_TIME,
}


def list_status_filter(args: Args) -> tuple[list[campaign_pb2.CampaignStatus.ValueType], bool]:
    """CampaignStatus: one legacy status (or several, comma-separated), "Scheduled" or "All"."""
    statuses: list[campaign_pb2.CampaignStatus.ValueType] = []
    scheduled = False
    for item in args.str_list("campaignstatus"):
        name = legacy_name(item)
        if name == "all":
            return [], False
        if name == "scheduled":
            scheduled = True
        elif name in STATUS_BY_LEGACY:
            statuses.append(STATUS_BY_LEGACY[name])
        else:
            args.problems.append(
                ParamError("campaignstatus", "malformed", f"Unknown CampaignStatus {item[:40]!r}")
            )
    return statuses, scheduled


def list_schedule_types(args: Args) -> list[campaign_pb2.ScheduleType.ValueType]:
    types: list[campaign_pb2.ScheduleType.ValueType] = []
    for item in args.str_list("scheduletype"):
        value = SCHEDULE_BY_LEGACY.get(legacy_name(item))
        if value is None:
            args.problems.append(ParamError("scheduletype", "malformed", f"Unknown ScheduleType {item[:40]!r}"))
        elif value not in types:
            types.append(value)
    return types


def day_start(args: Args, name: str, *, after: bool) -> timestamp_pb2.Timestamp | None:
    """Date_From / Date_To as the instant their day starts (UTC); Date_To's next day, as the range is inclusive."""
    text = args.str(name, max_len=32).strip()
    if not text:
        return None
    day = parse_date(text)
    if day is None:
        args.problems.append(ParamError(name, "malformed", f"{name} must be a date (YYYY-MM-DD)"))
        return None
    start = datetime.combine(day, time(0), tzinfo=UTC) + (timedelta(days=1) if after else timedelta(0))
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromDatetime(start)
    except (ValueError, OverflowError):
        # 9999-12-31 + 1 day: the range is open-ended then.
        return None
    return stamp


@dataclass
class ListOptions:
    request: campaign_pb2.ListCampaignsRequest
    extras: Extras
    exclude_columns: frozenset[str]
    include_totals: bool


def list_options(args: Args, ctx: Context) -> ListOptions:
    statuses, scheduled = list_status_filter(args)
    order_type = args.str("ordertype", max_len=8).strip().upper()
    extras = Extras(
        statistics=args.bool("retrievestatistics", default=True),
        tags=args.bool("retrievetags", default=False),
        variation_statistics=args.bool("splitabteststatistics", default=False),
    )
    include_totals = args.bool("includetotalrecipients", default=False)
    owner = args.int("filterbyuserid", min=0)
    is_admin = ctx.caller is not None and ctx.caller.is_admin
    own_id = ctx.caller.user_id if ctx.caller is not None else 0
    if not is_admin and owner not in (0, own_id):
        # FilterByUserID is admin-only; a user may name only themself.
        args.problems.append(ParamError("filterbyuserid", "malformed", "FilterByUserID needs admin credentials"))
    request = campaign_pb2.ListCampaignsRequest(
        statuses=statuses,
        scheduled=scheduled,
        schedule_types=list_schedule_types(args),
        search=args.str("searchkeyword", max_len=255),
        campaign_ids=args.int_list("campaignids"),
        order_by=ORDER_FIELDS.get(
            args.str("orderfield", max_len=64).strip().lower(), campaign_pb2.CAMPAIGN_ORDER_FIELD_UNSPECIFIED
        ),
        descending=order_type == "DESC",
        page_size=args.int("recordsperrequest", min=0, max=1000),
        skip=args.int("recordsfrom", min=0, max=INT32_MAX),
        include_auto_resend=args.bool("include_autoresend", default=False),
        tag_ids=args.int_list("tags"),
        owner_user_id=owner if is_admin else 0,
        view=view_of(extras.full_view or include_totals),
        statistics_view=statistics_view_of(extras),
    )
    date_from = day_start(args, "date_from", after=False)
    date_to = day_start(args, "date_to", after=True)
    if date_from is not None:
        request.send_time_from.CopyFrom(date_from)
    if date_to is not None:
        request.send_time_to.CopyFrom(date_to)
    exclude = frozenset(name.lower() for name in args.str_list("excludecolumns")) - {"campaignid"}
    return ListOptions(request, extras, exclude, include_totals)


async def list_campaigns(args: Args, ctx: Context) -> dict[str, Any]:
    options = list_options(args, ctx)
    if args.problems:
        raise Problems(args.problems)
    response = await ctx.call(ctx.stubs.campaign.ListCampaigns, options.request)
    rows = []
    for campaign in response.campaigns:
        row = render_with_extras(campaign, options.extras)
        rows.append({key: value for key, value in row.items() if key.lower() not in options.exclude_columns})
    answer: dict[str, Any] = {"ErrorText": "", "Campaigns": rows, "TotalCampaigns": response.total_size}
    if options.include_totals:
        totals = response.total_statistics
        answer |= {
            "TotalRecipients": totals.total_recipients,
            "TotalSent": totals.total_sent,
            "TotalFailed": totals.total_failed,
            "TotalDeferred": totals.total_deferred,
        }
    return answer


# campaigns.get documents no error codes; RULINGS 2 asks for a list for malformed parameters.
LIST_PARAMS = (
    "campaignstatus",
    "scheduletype",
    "searchkeyword",
    "filterbyuserid",
    "campaignids",
    "date_from",
    "date_to",
    "recordsperrequest",
    "recordsfrom",
    "orderfield",
    "ordertype",
    "tags",
    "excludecolumns",
)
LIST_REASONS = (
    "PAGE_SIZE_INVALID",
    "SKIP_INVALID",
    "SEARCH_INVALID",
    "CAMPAIGN_STATUS_INVALID",
    "SCHEDULE_TYPE_INVALID",
    "ORDER_BY_INVALID",
    "SEND_TIME_RANGE_INVALID",
    "TAG_IDS_INVALID",
    "OWNER_USER_ID_INVALID",
)
LIST_PARAMS_DECLARED = (
    Param("CampaignStatus", "strings", "Statuses (comma-separated or an array), Scheduled, or All"),
    Param("ScheduleType", "strings", "Schedule types (comma-separated or an array)"),
    Param("SearchKeyword", "string", "Case-insensitive substring of the name"),
    Param("FilterByUserID", "integer", "Only this user's campaigns (admin credentials only)"),
    Param("CampaignIDs", "integers", "Only these campaigns (comma-separated or an array)"),
    Param("Date_From", "string", "Sent (or due) on this day or later, UTC", format="date"),
    Param("Date_To", "string", "Sent (or due) on this day or earlier, UTC", format="date"),
    Param("RecordsPerRequest", "integer", "Page size, at most 1000; 0 means all", default=0),
    Param("RecordsFrom", "integer", "Rows to skip", default=0),
    Param(
        "OrderField",
        "string",
        "Sort column",
        enum=("CampaignID", "CampaignName", "CampaignStatus", "SendDate", "CreateDateTime", "UpdateDateTime"),
    ),
    Param("OrderType", "string", "Sort direction", enum=("ASC", "DESC")),
    Param("Tags", "integers", "Only campaigns with one of these tag IDs"),
    Param("ExcludeColumns", "strings", "Columns left out of each row (never CampaignID)"),
    Param("RetrieveStatistics", "boolean", "Add the statistics fields to each row", default=True),
    *EXTRAS_PARAMS,
    Param(
        "IncludeTotalRecipients",
        "boolean",
        "Add TotalRecipients, TotalSent, TotalFailed, TotalDeferred over every match",
        default=False,
    ),
    Param("Include_AutoResend", "boolean", "Also list auto-resend campaigns", default=False),
)
LIST_RETURNS = (
    ERROR_TEXT,
    Param(
        "Campaigns",
        "array",
        "One object per campaign, as campaign.get's Campaign",
        required=True,
        fields=STATISTICS_RETURNS,
    ),
    Param("TotalCampaigns", "integer", "Every match, whatever the page", required=True),
    Param("TotalRecipients", "integer", "With IncludeTotalRecipients"),
    Param("TotalSent", "integer", "With IncludeTotalRecipients"),
    Param("TotalFailed", "integer", "With IncludeTotalRecipients"),
    Param("TotalDeferred", "integer", "With IncludeTotalRecipients"),
)

ROWS = [
    Command(
        "campaigns.get",
        list_campaigns,
        scope="user_or_admin",
        permission="Campaigns.Get",
        shape="mixed",
        codes={name: 1 for name in LIST_PARAMS} | {reason: 1 for reason in LIST_REASONS},
        texts={1: "Invalid parameter"},
        summary="List campaigns, filtered, sorted and paged",
        params=LIST_PARAMS_DECLARED,
        returns=LIST_RETURNS,
    ),
]
