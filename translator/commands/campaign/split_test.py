"""The row for splittest.create: an A/B campaign's variations go to a test group first, the winner to the rest."""

from __future__ import annotations

from typing import Any

from herald.campaign.v1 import campaign_pb2

from translator.commands import Args, Command, Context, Param, Problems, validate_only
from translator.commands.campaign.legacy import CAMPAIGN_ID, MISSING_ID_TEXT, NOT_FOUND_TEXT, WINNER_BY_LEGACY
from translator.params import INT32_MAX, ParamError, legacy_name


def winner(args: Args) -> campaign_pb2.Winner.ValueType:
    text = args.str("winner", required=True, max_len=64)
    if args.problems and args.problems[-1].name == "winner":
        return campaign_pb2.WINNER_UNSPECIFIED
    value = WINNER_BY_LEGACY.get(legacy_name(text).replace(" ", "_"))
    if value is None:
        args.problems.append(
            ParamError("winner", "malformed", "Winner must be highest_open_rate or most_unique_clicks")
        )
        return campaign_pb2.WINNER_UNSPECIFIED
    return value


async def create_split_test(args: Args, ctx: Context) -> dict[str, Any]:
    request = campaign_pb2.CreateSplitTestRequest(
        campaign_id=args.int("campaignid", required=True, min=1),
        test_size_percent=args.int("testsize", required=True, min=1, max=99),
        test_duration_hours=args.int("testduration", required=True, min=1, max=INT32_MAX),
        winner=winner(args),
    )
    if args.problems:
        failure = None
        if request.campaign_id:
            # A list command names every problem: an unknown campaign too (code 6).
            lookup = campaign_pb2.GetCampaignRequest(campaign_id=request.campaign_id)
            # The translator's own lookup: the caller holds Campaign.Create, not Campaign.Get.
            failure = await validate_only(ctx.as_translator(), ctx.stubs.campaign.GetCampaign, lookup)
        raise Problems(args.problems, failure)
    split_test: campaign_pb2.SplitTest = await ctx.call(ctx.stubs.campaign.CreateSplitTest, request)
    return {"SplitTestID": split_test.split_test_id}


SPLIT_TEST_PARAMS = (
    CAMPAIGN_ID,
    Param("TestSize", "integer", "Percentage of the recipients in the test group (1-99)", required=True),
    Param("TestDuration", "integer", "Hours before the winner goes to the other recipients", required=True),
    Param(
        "Winner",
        "string",
        "How the winner is chosen",
        required=True,
        enum=("highest_open_rate", "most_unique_clicks", "Highest Open Rate", "Most Unique Clicks"),
    ),
)

ROWS = [
    Command(
        "splittest.create",
        create_split_test,
        permission="Campaign.Create",
        codes={
            "campaignid": 1,
            "CAMPAIGN_ID_REQUIRED": 1,
            "testsize": 2,
            "TEST_SIZE_REQUIRED": 2,
            "TEST_SIZE_INVALID": 2,
            "testduration": 4,
            "TEST_DURATION_REQUIRED": 4,
            "TEST_DURATION_INVALID": 4,
            "winner": 5,
            "WINNER_REQUIRED": 5,
            "WINNER_INVALID": 5,
            "CAMPAIGN_NOT_FOUND": 6,
        },
        texts={
            1: MISSING_ID_TEXT,
            2: "Missing or invalid TestSize (a percentage from 1 to 99)",
            4: "Missing or invalid TestDuration (hours)",
            5: "Missing or invalid Winner (highest_open_rate or most_unique_clicks)",
            6: NOT_FOUND_TEXT,
        },
        v1_alias=False,
        summary="Send an A/B campaign's variations to a test group first, the winner to the rest later",
        params=SPLIT_TEST_PARAMS,
        returns=(Param("SplitTestID", "integer", "ID of the split test", required=True),),
    ),
]
