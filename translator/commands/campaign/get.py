"""The row for campaign.get: one campaign, with its statistics, tags and A/B figures on request."""

from __future__ import annotations

from typing import Any

from herald.campaign.v1 import campaign_pb2

from translator.commands import Args, Command, Context, Param, Problems
from translator.commands.campaign.legacy import CAMPAIGN_ID
from translator.commands.campaign.render import (
    EXTRAS_PARAMS,
    STATISTICS_RETURNS,
    Extras,
    render_with_extras,
    statistics_view_of,
    view_of,
)


async def get_campaign(args: Args, ctx: Context) -> dict[str, Any]:
    campaign_id = args.int("campaignid", required=True, min=1)
    extras = Extras(
        statistics=args.bool("retrievestatistics", default=False),
        tags=args.bool("retrievetags", default=False),
        variation_statistics=args.bool("splitabteststatistics", default=False),
        domains=args.bool("retrieverecipientdomains", default=True),
    )
    if args.problems:
        raise Problems(args.problems)
    get = ctx.stubs.campaign.GetCampaign
    statistics_view = statistics_view_of(extras)
    campaign = await ctx.call(
        get,
        campaign_pb2.GetCampaignRequest(
            campaign_id=campaign_id, view=view_of(extras.full_view), statistics_view=statistics_view
        ),
    )
    if not extras.full_view and campaign.HasField("send_time"):
        # CampaignThroughput is always answered; once sending started only delivery knows it. The
        # totals suffice for it (statistics_view is STATISTICS_VIEW_TOTALS here): a client polling a
        # campaign while it sends costs delivery one counters row per poll.
        campaign = await ctx.call(
            get,
            campaign_pb2.GetCampaignRequest(
                campaign_id=campaign_id, view=view_of(True), statistics_view=statistics_view
            ),
        )
    statistics = campaign.statistics
    return {
        "Campaign": render_with_extras(campaign, extras),
        "CampaignThroughput": {
            "EmailsPerSecond": statistics.emails_per_second,
            "Duration": statistics.duration_seconds,
        },
    }


GET_PARAMS = (
    CAMPAIGN_ID,
    Param("RetrieveStatistics", "boolean", "Add the delivery statistics", default=False),
    *EXTRAS_PARAMS,
    Param("RetrieveRecipientDomains", "boolean", "With RetrieveStatistics: add RecipientDomains", default=True),
)
GET_RETURNS = (
    Param(
        "Campaign",
        "object",
        "Every stored field of the campaign under its legacy name; the statistics with RetrieveStatistics",
        required=True,
        fields=STATISTICS_RETURNS,
    ),
    Param(
        "CampaignThroughput",
        "object",
        "Emails per second between the first and the last send, and those seconds",
        required=True,
        fields=(
            Param("EmailsPerSecond", "number", required=True),
            Param("Duration", "integer", required=True),
        ),
    ),
)

ROWS = [
    Command(
        "campaign.get",
        get_campaign,
        scope="user_or_admin",
        permission="Campaign.Get",
        shape="int",
        codes={"campaignid": 2, "CAMPAIGN_ID_REQUIRED": 2, "CAMPAIGN_NOT_FOUND": 2},
        texts={2: "Campaign not found or invalid CampaignID"},
        summary="A campaign, with its statistics, tags and A/B figures on request",
        params=GET_PARAMS,
        returns=GET_RETURNS,
    ),
]
