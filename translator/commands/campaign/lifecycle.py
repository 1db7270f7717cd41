"""Rows for a campaign's lifecycle: campaign.create, campaign.copy, campaign.pause, campaign.resume,
campaign.cancel, campaign.approve and campaigns.delete, one service call each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from herald.campaign.v1 import campaign_pb2

from translator.commands import ERROR_TEXT, Args, Command, Param, render_error_text, render_nothing, unary
from translator.commands.campaign.legacy import CAMPAIGN_ID, ID_CODES, MISSING_ID_TEXT, NOT_FOUND_TEXT


def create(args: Args) -> campaign_pb2.CreateCampaignRequest:
    return campaign_pb2.CreateCampaignRequest(name=args.str("campaignname", required=True))


def render_created(response: campaign_pb2.Campaign, args: Args) -> dict[str, Any]:
    return {"CampaignID": response.campaign_id}


def copy(args: Args) -> campaign_pb2.CopyCampaignRequest:
    return campaign_pb2.CopyCampaignRequest(campaign_id=args.int("campaignid", required=True, min=1))


def render_copy(response: campaign_pb2.Campaign, args: Args) -> dict[str, Any]:
    return {"NewCampaignID": response.campaign_id}


def delete(args: Args) -> campaign_pb2.DeleteCampaignsRequest:
    return campaign_pb2.DeleteCampaignsRequest(campaign_ids=args.int_list("campaigns", required=True))


def by_id(request_type: Callable[..., Any]) -> Callable[[Args], Any]:
    def build(args: Args) -> Any:
        return request_type(campaign_id=args.int("campaignid", required=True, min=1))

    return build


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
        summary="Create a Draft campaign",
        params=(Param("CampaignName", "string", "Name of the new campaign", required=True),),
        returns=(Param("CampaignID", "integer", "ID of the new campaign", required=True),),
    ),
    Command(
        "campaign.copy",
        unary(lambda s: s.campaign.CopyCampaign, copy, render_copy),
        permission="Campaign.Create",
        codes={"campaignid": 1, "CAMPAIGN_ID_REQUIRED": 1, "CAMPAIGN_NOT_FOUND": 1},
        texts={1: "Invalid source campaign"},
        summary="Copy a campaign into a new Draft",
        params=(Param("CampaignID", "integer", "ID of the campaign to copy", required=True),),
        returns=(Param("NewCampaignID", "integer", "ID of the copy", required=True),),
    ),
    Command(
        "campaign.pause",
        unary(lambda s: s.campaign.PauseCampaign, by_id(campaign_pb2.PauseCampaignRequest), render_nothing),
        permission="Campaign.Update",
        shape="int",
        codes=ID_CODES,
        texts={
            1: MISSING_ID_TEXT,
            2: NOT_FOUND_TEXT,
            3: "Invalid campaign status (campaign must be Sending or Ready to be paused)",
        },
        summary="Pause a Sending or Ready campaign",
        params=(CAMPAIGN_ID,),
    ),
    Command(
        "campaign.resume",
        unary(lambda s: s.campaign.ResumeCampaign, by_id(campaign_pb2.ResumeCampaignRequest), render_nothing),
        permission="Campaign.Update",
        shape="int",
        codes=ID_CODES,
        texts={
            1: MISSING_ID_TEXT,
            2: NOT_FOUND_TEXT,
            3: "Campaign status is not Paused (only Paused campaigns can be resumed)",
        },
        summary="Resume a Paused campaign",
        params=(CAMPAIGN_ID,),
    ),
    Command(
        "campaign.cancel",
        unary(lambda s: s.campaign.CancelCampaign, by_id(campaign_pb2.CancelCampaignRequest), render_nothing),
        permission="Campaign.Update",
        shape="list",
        codes=ID_CODES,
        texts={1: MISSING_ID_TEXT, 2: NOT_FOUND_TEXT, 3: "Invalid campaign status"},
        summary="Cancel a campaign: a Ready one back to Draft, a Sending or Paused one to Cancelled",
        params=(CAMPAIGN_ID,),
    ),
    Command(
        "campaign.approve",
        unary(lambda s: s.campaign.ApproveCampaign, by_id(campaign_pb2.ApproveCampaignRequest), render_nothing),
        scope="admin",
        shape="mixed",
        codes=ID_CODES,
        texts={1: MISSING_ID_TEXT, 2: "Campaign not found", 3: "Campaign is not Pending Approval"},
        summary="Approve an untrusted user's Pending Approval campaign (it becomes Ready)",
        params=(CAMPAIGN_ID,),
    ),
    Command(
        "campaigns.delete",
        unary(lambda s: s.campaign.DeleteCampaigns, delete, render_error_text),
        permission="Campaign.Delete",
        codes={"campaigns": 1, "CAMPAIGN_IDS_REQUIRED": 1},
        texts={1: "Missing required parameter (Campaigns)"},
        summary="Delete campaigns and their auto-resend campaigns (unknown and foreign IDs are ignored)",
        params=(Param("Campaigns", "integers", "Campaign IDs, comma-separated or an array", required=True),),
        returns=(ERROR_TEXT,),
    ),
]
