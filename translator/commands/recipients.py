"""The row for campaign.recipients.get: who an unsent campaign would be sent to, as the audience service selects them."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import campaign_pb2

from services.common.grpcutil import decode_error
from translator.commands import Args, Command, Context, Param, Problems
from translator.commands.campaign import STATUS_NAMES
from translator.envelope import LegacyError

# The seed has no paging: an answer lists at most this many recipients (the first by subscriber id);
# TotalRecipients is always the full count.
MAX_RECIPIENTS = 10_000
# A stream has no default deadline; this one is at most MAX_RECIPIENTS rows.
STREAM_TIMEOUT_SECONDS = 10.0
UNSENT = frozenset(
    {
        campaign_pb2.CAMPAIGN_STATUS_DRAFT,
        campaign_pb2.CAMPAIGN_STATUS_READY,
        campaign_pb2.CAMPAIGN_STATUS_PENDING_APPROVAL,
    }
)
# The audience's verdicts on the targeting itself (a list or segment gone or not the owner's, a
# malformed rules bundle): the campaign's recipients cannot be retrieved, code 10.
RETRIEVAL_FAILURES = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})

MISSING_ID_TEXT = "Missing required parameter (CampaignID)"
MALFORMED_ID_TEXT = "Invalid CampaignID (must be numeric)"
NOT_FOUND_TEXT = "Campaign not found or access denied"
UNSENT_ONLY_TEXT = "This endpoint only works for unsent campaigns"
NO_TARGETING_TEXT = "Campaign has no RulesJsonBundle or criteria defined"
RETRIEVAL_TEXT = "Error retrieving campaign recipients"


def has_criteria(bundle: struct_pb2.Struct) -> bool:
    """Whether a rules bundle names any criteria (its keys read case-insensitively, as the audience reads them)."""
    return any(
        key.lower() == "criteria" and len(value.list_value.values) > 0 for key, value in bundle.fields.items()
    )


def targeting_spec(targeting: campaign_pb2.Targeting) -> audience_pb2.TargetingSpec | None:
    """The campaign's targeting as the audience service reads it; None when it names no source at all.

    A bundle is passed on whenever it is set, even with no criteria: beside included sources the
    audience judges it (delivery would send with it), alone it selects nobody (code 5).
    """
    has_bundle = targeting.HasField("rules_bundle") and bool(targeting.rules_bundle.fields)
    if not targeting.included and not (has_bundle and has_criteria(targeting.rules_bundle)):
        return None
    spec = audience_pb2.TargetingSpec(
        included=[
            audience_pb2.ListSegment(list_id=s.list_id, segment_id=s.segment_id) for s in targeting.included
        ],
        excluded=[
            audience_pb2.ListSegment(list_id=s.list_id, segment_id=s.segment_id) for s in targeting.excluded
        ],
    )
    if has_bundle:
        spec.rules_bundle.CopyFrom(targeting.rules_bundle)
    return spec


def as_owner(ctx: Context, owner_user_id: int) -> Context:
    """The context to ask the audience in: the campaign owner's, as delivery asks when it sends.

    An admin's principal would see every user's lists, so a campaign naming a list that is not its
    owner's would show recipients that delivery would refuse to send to. The token is the translator's
    (CountRecipients and StreamRecipients are internal RPCs): the caller holds Campaign.Get, not a
    permission to read arbitrary audiences.
    """
    return ctx.as_translator(owner_user_id)


def render_recipient(recipient: audience_pb2.Recipient) -> dict[str, Any]:
    return {
        "SubscriberID": recipient.subscriber_id,
        "EmailAddress": recipient.email_address,
        "FirstName": recipient.first_name,
        "LastName": recipient.last_name,
        "ListID": recipient.list_id,
    }


async def recipient_count(ctx: Context, spec: audience_pb2.TargetingSpec) -> int:
    request = audience_pb2.CountRecipientsRequest(included=spec.included, excluded=spec.excluded)
    if spec.HasField("rules_bundle"):
        request.rules_bundle.CopyFrom(spec.rules_bundle)
    counted: audience_pb2.CountRecipientsResponse = await ctx.call(ctx.stubs.audience.CountRecipients, request)
    return counted.total


async def first_recipients(ctx: Context, spec: audience_pb2.TargetingSpec) -> list[dict[str, Any]]:
    request = audience_pb2.StreamRecipientsRequest(targeting=spec, limit=MAX_RECIPIENTS)
    call = ctx.stubs.audience.StreamRecipients(
        request, metadata=ctx.metadata, timeout=ctx.timeout or STREAM_TIMEOUT_SECONDS, wait_for_ready=True
    )
    rows: list[dict[str, Any]] = []
    async for chunk in call:
        rows.extend(render_recipient(recipient) for recipient in chunk.recipients)
    return rows[:MAX_RECIPIENTS]


async def get_recipients(args: Args, ctx: Context) -> dict[str, Any]:
    campaign_id = args.int("campaignid", required=True, min=1)
    only_total = args.bool("onlytotal", default=False)
    if args.problems:
        raise Problems(args.problems)
    campaign: campaign_pb2.Campaign = await ctx.call(
        ctx.stubs.campaign.GetCampaign,
        campaign_pb2.GetCampaignRequest(campaign_id=campaign_id, view=campaign_pb2.CAMPAIGN_VIEW_BASIC),
    )
    if campaign.status not in UNSENT:
        status = STATUS_NAMES.get(campaign.status, campaign_pb2.CampaignStatus.Name(campaign.status))
        # The seed's example answers ErrorMessage and CampaignStatus beside the code.
        extra = {"ErrorMessage": UNSENT_ONLY_TEXT, "CampaignStatus": status}
        raise LegacyError([4], [UNSENT_ONLY_TEXT], extra, malformed=False)
    spec = targeting_spec(campaign.targeting)
    if spec is None:
        raise LegacyError([5], [NO_TARGETING_TEXT], malformed=False)
    owner = as_owner(ctx, campaign.owner_user_id)
    try:
        recipients = [] if only_total else await first_recipients(owner, spec)
        if only_total or len(recipients) >= MAX_RECIPIENTS:
            total = await recipient_count(owner, spec)
        else:
            # Below the cap the stream read the whole audience: its length is the count, and the
            # answer cannot disagree with itself (a second read could see the lists changed).
            total = len(recipients)
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in RETRIEVAL_FAILURES:
            # Unavailability stays 100004; anything else is the framework's to map (or 100005).
            raise
        failure = decode_error(exc)
        text = f"{RETRIEVAL_TEXT}: {failure.message}" if failure.message else RETRIEVAL_TEXT
        raise LegacyError([10], [text], malformed=False) from exc
    return {"CampaignID": campaign.campaign_id, "TotalRecipients": total, "Recipients": recipients}


ROWS = [
    Command(
        "campaign.recipients.get",
        get_recipients,
        scope="user_or_admin",
        permission="Campaign.Get",
        shape="int",
        codes={
            "campaignid:missing": 1,
            "CAMPAIGN_ID_REQUIRED": 1,
            "campaignid:malformed": 2,
            "CAMPAIGN_NOT_FOUND": 3,
        },
        # 4, 5 and 10 are raised by the handler itself; listed for the OpenAPI document.
        texts={
            1: MISSING_ID_TEXT,
            2: MALFORMED_ID_TEXT,
            3: NOT_FOUND_TEXT,
            4: UNSENT_ONLY_TEXT,
            5: NO_TARGETING_TEXT,
            10: RETRIEVAL_TEXT,
        },
        summary="Who an unsent campaign (Draft, Ready, Pending Approval) would be sent to",
        params=(
            Param("CampaignID", "integer", "ID of the campaign", required=True),
            Param("OnlyTotal", "boolean", "Answer the count without the recipients", default=False),
        ),
        returns=(
            Param("CampaignID", "integer", required=True),
            Param("TotalRecipients", "integer", "Every recipient, however many are listed", required=True),
            Param(
                "Recipients",
                "array",
                f"At most {MAX_RECIPIENTS:,}, lowest subscriber ID first; empty with OnlyTotal",
                required=True,
                fields=(
                    Param("SubscriberID", "integer", required=True),
                    Param("EmailAddress", "string", required=True, format="email"),
                    Param("FirstName", "string", required=True),
                    Param("LastName", "string", required=True),
                    Param("ListID", "integer", required=True),
                ),
            ),
        ),
    ),
]
