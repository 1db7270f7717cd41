"""Rows for the campaign commands served so far (create, get, copy, delete, list)."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2
from herald.campaign.v1 import campaign_pb2

from translator.commands import Args, Command, Context, Problems, unary
from translator.params import ParamError

STATUS_NAMES = {
    campaign_pb2.CAMPAIGN_STATUS_DRAFT: "Draft",
    campaign_pb2.CAMPAIGN_STATUS_READY: "Ready",
    campaign_pb2.CAMPAIGN_STATUS_SENDING: "Sending",
    campaign_pb2.CAMPAIGN_STATUS_PAUSED: "Paused",
    campaign_pb2.CAMPAIGN_STATUS_PENDING_APPROVAL: "Pending Approval",
    campaign_pb2.CAMPAIGN_STATUS_SENT: "Sent",
    campaign_pb2.CAMPAIGN_STATUS_FAILED: "Failed",
    campaign_pb2.CAMPAIGN_STATUS_CANCELLED: "Cancelled",
}
STATUS_BY_LEGACY = {name.lower(): status for status, name in STATUS_NAMES.items()}
SCHEDULE_NAMES = {
    campaign_pb2.SCHEDULE_TYPE_NOT_SCHEDULED: "Not Scheduled",
    campaign_pb2.SCHEDULE_TYPE_IMMEDIATE: "Immediate",
    campaign_pb2.SCHEDULE_TYPE_FUTURE: "Future",
    campaign_pb2.SCHEDULE_TYPE_RECURSIVE: "Recursive",
}
# Legacy OrderField values that may be sorted on; anything else falls back to CampaignID.
ORDER_FIELDS = {
    "campaignid": campaign_pb2.CAMPAIGN_ORDER_FIELD_CAMPAIGN_ID,
    "campaignname": campaign_pb2.CAMPAIGN_ORDER_FIELD_NAME,
    "campaignstatus": campaign_pb2.CAMPAIGN_ORDER_FIELD_STATUS,
    "senddate": campaign_pb2.CAMPAIGN_ORDER_FIELD_SEND_TIME,
    "createdatetime": campaign_pb2.CAMPAIGN_ORDER_FIELD_CREATE_TIME,
    "updatedatetime": campaign_pb2.CAMPAIGN_ORDER_FIELD_UPDATE_TIME,
}


def instant(ts: timestamp_pb2.Timestamp) -> str:
    """RULINGS 3: instants as YYYY-MM-DD HH:MM:SS in UTC; "" when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def render_campaign(campaign: campaign_pb2.Campaign) -> dict[str, Any]:
    sent = instant(campaign.send_time)
    return {
        "CampaignID": campaign.campaign_id,
        "CampaignName": campaign.name,
        "CampaignStatus": STATUS_NAMES.get(campaign.status, "Draft"),
        "CampaignStatusReason": campaign.status_reason,
        "RelOwnerUserID": campaign.owner_user_id,
        "RelEmailID": campaign.email_id,
        "ScheduleType": SCHEDULE_NAMES.get(campaign.schedule_type, "Not Scheduled"),
        "SendDate": sent[:10],
        "SendTime": sent[11:],
        "CreateDateTime": instant(campaign.create_time),
        "UpdateDateTime": instant(campaign.update_time),
        "OriginalCampaignID": campaign.original_campaign_id,
    }


def create(args: Args) -> campaign_pb2.CreateCampaignRequest:
    return campaign_pb2.CreateCampaignRequest(name=args.str("campaignname", required=True))


def render_created(response: campaign_pb2.Campaign, args: Args) -> dict[str, Any]:
    return {"CampaignID": response.campaign_id}


def get(args: Args) -> campaign_pb2.GetCampaignRequest:
    return campaign_pb2.GetCampaignRequest(campaign_id=args.int("campaignid", required=True, min=1))


def render_get(response: campaign_pb2.Campaign, args: Args) -> dict[str, Any]:
    # Throughput comes from delivery statistics; nothing is sent before the delivery service lands.
    return {"Campaign": render_campaign(response), "CampaignThroughput": {"EmailsPerSecond": 0, "Duration": 0}}


def copy(args: Args) -> campaign_pb2.CopyCampaignRequest:
    return campaign_pb2.CopyCampaignRequest(campaign_id=args.int("campaignid", required=True, min=1))


def render_copy(response: campaign_pb2.Campaign, args: Args) -> dict[str, Any]:
    return {"NewCampaignID": response.campaign_id}


def delete(args: Args) -> campaign_pb2.DeleteCampaignsRequest:
    return campaign_pb2.DeleteCampaignsRequest(campaign_ids=args.int_list("campaigns", required=True))


def render_deleted(response: campaign_pb2.DeleteCampaignsResponse, args: Args) -> dict[str, Any]:
    return {"ErrorText": ""}


def list_request(args: Args) -> campaign_pb2.ListCampaignsRequest:
    status = args.str("campaignstatus", max_len=64).strip().lower()
    statuses = []
    if status and status != "all":
        if status not in STATUS_BY_LEGACY:
            args.problems.append(ParamError("campaignstatus", "malformed", f"Unknown CampaignStatus {status!r}"))
        else:
            statuses = [STATUS_BY_LEGACY[status]]
    order_type = args.str("ordertype", max_len=8).strip().upper()
    return campaign_pb2.ListCampaignsRequest(
        statuses=statuses,
        search=args.str("searchkeyword", max_len=255),
        campaign_ids=args.int_list("campaignids"),
        order_by=ORDER_FIELDS.get(
            args.str("orderfield", max_len=64).strip().lower(), campaign_pb2.CAMPAIGN_ORDER_FIELD_UNSPECIFIED
        ),
        descending=order_type == "DESC",
        page_size=args.int("recordsperrequest", min=0, max=1000),
        skip=args.int("recordsfrom", min=0, max=2**31 - 1),
        include_auto_resend=args.bool("include_autoresend", default=False),
    )


async def list_campaigns(args: Args, ctx: Context) -> dict[str, Any]:
    request = list_request(args)
    if args.problems:
        raise Problems(args.problems)
    response: campaign_pb2.ListCampaignsResponse = await ctx.call(ctx.stubs.campaign.ListCampaigns, request)
    return {
        "ErrorText": "",
        "Campaigns": [render_campaign(c) for c in response.campaigns],
        "TotalCampaigns": response.total_size,
    }


NOT_FOUND_TEXT = "Campaign not found or doesn't belong to user"
# campaigns.get documents no error codes; RULINGS 2 asks for a list for malformed parameters.
LIST_PARAMS = (
    "campaignstatus",
    "searchkeyword",
    "campaignids",
    "recordsperrequest",
    "recordsfrom",
    "orderfield",
    "ordertype",
)

ROWS = [
    Command(
        "campaign.create",
        unary(lambda s: s.campaign.CreateCampaign, create, render_created),
        permission="Campaign.Create",
        codes={
            "campaignname": 1,
            "CAMPAIGN_NAME_REQUIRED": 1,
            "CAMPAIGN_NAME_TOO_LONG": 1,
            "CAMPAIGN_NAME_INVALID": 1,
        },
        texts={1: "Missing required parameter (CampaignName)"},
    ),
    Command(
        "campaign.get",
        unary(lambda s: s.campaign.GetCampaign, get, render_get),
        scope="user_or_admin",
        permission="Campaign.Get",
        shape="int",
        codes={"campaignid": 2, "CAMPAIGN_ID_REQUIRED": 2, "CAMPAIGN_NOT_FOUND": 2},
        texts={2: "Campaign not found or invalid CampaignID"},
    ),
    Command(
        "campaign.copy",
        unary(lambda s: s.campaign.CopyCampaign, copy, render_copy),
        permission="Campaign.Create",
        codes={"campaignid": 1, "CAMPAIGN_ID_REQUIRED": 1, "CAMPAIGN_NOT_FOUND": 1},
        texts={1: "Invalid source campaign"},
    ),
    Command(
        "campaigns.delete",
        unary(lambda s: s.campaign.DeleteCampaigns, delete, render_deleted),
        permission="Campaign.Delete",
        codes={"campaigns": 1, "CAMPAIGN_IDS_REQUIRED": 1},
        texts={1: "Missing required parameter (Campaigns)"},
    ),
    Command(
        "campaigns.get",
        list_campaigns,
        permission="Campaigns.Get",
        shape="mixed",
        codes={name: 1 for name in LIST_PARAMS}
        | {
            "PAGE_SIZE_INVALID": 1,
            "SKIP_INVALID": 1,
            "SEARCH_INVALID": 1,
            "CAMPAIGN_STATUS_INVALID": 1,
            "ORDER_BY_INVALID": 1,
        },
        texts={1: "Invalid parameter"},
    ),
]
