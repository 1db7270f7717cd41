"""Rows for the delivery commands: admin.campaign.retryfailed (resend a finished campaign's failed recipients)."""

from __future__ import annotations

from typing import Any

import grpc
from herald.campaign.v1 import campaign_pb2

from services.common.grpcutil import decode_error
from translator.commands import ERROR_TEXT, Args, Command, Context, Param, Problems

# delivery's reason when its database failed mid-retry; any other unavailability is the hard 100004.
DATABASE_ERROR = "DATABASE_ERROR"


async def retry_failed(args: Args, ctx: Context) -> dict[str, Any]:
    request = campaign_pb2.RetryFailedRecipientsRequest(campaign_id=args.int("campaignid", required=True, min=1))
    if args.problems:
        raise Problems(args.problems)
    try:
        response: campaign_pb2.RetryFailedRecipientsResponse = await ctx.call(
            ctx.stubs.campaign.RetryFailedRecipients, request
        )
    except grpc.aio.AioRpcError as exc:
        failure = decode_error(exc)
        if exc.code() == grpc.StatusCode.UNAVAILABLE and failure.reason == DATABASE_ERROR:
            raise Problems([], failure) from exc
        raise
    retried, batches = response.retried_count, response.batches_created
    return {
        "ErrorText": "",
        "RetriedCount": retried,
        "BatchesCreated": batches,
        "Message": f"{retried} failed recipients queued for retry in {batches} batch(es).",
    }


ROWS = [
    Command(
        "admin.campaign.retryfailed",
        retry_failed,
        scope="admin",
        shape="int",
        codes={
            "campaignid": 1,
            "CAMPAIGN_ID_REQUIRED": 1,
            "CAMPAIGN_NOT_FOUND": 2,
            "STATUS_INVALID": 3,
            "RUN_NOT_FOUND": 4,
            "NO_FAILED_RECIPIENTS": 5,
            DATABASE_ERROR: 6,
        },
        texts={
            1: "campaign_id parameter is required",
            2: "Campaign not found",
            3: (
                "Campaign is not in Sent or Failed status. Only completed or failed campaigns can have their "
                "failed recipients retried."
            ),
            4: "Queue table does not exist for this campaign",
            5: "No failed recipients found for this campaign",
            6: "Database error during retry operation",
        },
        rate_limit=(100, 60.0),
        summary="Send a finished campaign's failed recipients again",
        params=(Param("CampaignID", "integer", "ID of a Sent or Failed campaign", required=True),),
        returns=(
            ERROR_TEXT,
            Param("RetriedCount", "integer", "Recipients queued again", required=True),
            Param("BatchesCreated", "integer", "Delivery batches made for them", required=True),
            Param("Message", "string", "The same in words", required=True),
        ),
    ),
]
