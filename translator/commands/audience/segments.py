"""Rows for the segment commands: segment.create, segments.get and segments.delete."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from herald.audience.v1 import audience_pb2

from services.common.protojson import plain_json
from translator.commands import (
    ERROR_TEXT,
    MAX_TEXT,
    Args,
    Command,
    Context,
    Param,
    Problems,
    render_error_text,
    unary,
    validate_only,
)
from translator.commands.audience.legacy import SUBSCRIBER_LIST_ID, field_instant, lenient_int, rules_list
from translator.params import ParamError

SEGMENT_ORDER_FIELDS = {
    "segmentname": audience_pb2.SEGMENT_ORDER_FIELD_NAME,
    "segmentid": audience_pb2.SEGMENT_ORDER_FIELD_SEGMENT_ID,
    "segmentoperator": audience_pb2.SEGMENT_ORDER_FIELD_OPERATOR,
    "subscribercount": audience_pb2.SEGMENT_ORDER_FIELD_SUBSCRIBER_COUNT,
    # Counts are computed when asked, so the last calculation is always now: the same order.
    "subscribercountlastcalculatedon": audience_pb2.SEGMENT_ORDER_FIELD_SUBSCRIBER_COUNT,
}


def render_segment(segment: audience_pb2.Segment, *, counted: bool) -> dict[str, Any]:
    rules = plain_json(json_format.MessageToDict(segment.rules)) if segment.HasField("rules") else []
    return {
        "SegmentID": segment.segment_id,
        "SegmentName": segment.name,
        "SegmentOperator": segment.operator,
        "RelListID": segment.list_id,
        "SubscriberCount": segment.subscriber_count,
        "SubscriberCountLastCalculatedOn": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S") if counted else "",
        "SegmentRules": rules,
        "SegmentRulesJson": json.dumps(rules, separators=(",", ":")),
        "CreatedOn": field_instant(segment, "create_time"),
        "Options": {"Randomness": segment.randomness, "RandomnessAudienceSize": segment.randomness_audience_size},
    }


def as_list(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return [value]


def parallel_rules(args: Args) -> list[Any] | None:
    """The old form: SegmentRuleField[] / SegmentRuleOperator[] / SegmentRuleFilter[], each rule its own
    group so that SegmentOperator joins them."""
    fields = as_list(args.params.raw("segmentrulefield"))
    if not fields:
        return None
    operators = as_list(args.params.raw("segmentruleoperator"))
    filters = as_list(args.params.raw("segmentrulefilter"))
    if len(operators) != len(fields) or len(filters) not in (0, len(fields)):
        args.problems.append(
            ParamError(
                "rulesjson",
                "malformed",
                "SegmentRuleField, SegmentRuleOperator and SegmentRuleFilter differ in length",
            )
        )
        return None
    groups: list[Any] = []
    for i, field_name in enumerate(fields):
        rule: dict[str, Any] = {"type": "fields", "field_id": field_name, "operator": operators[i]}
        if filters:
            rule["value"] = filters[i]
        groups.append([rule])
    return groups


async def create_segment(args: Args, ctx: Context) -> dict[str, Any]:
    segment = audience_pb2.Segment(
        list_id=args.int("subscriberlistid", required=True, min=1),
        name=args.str("segmentname", required=True, max_len=MAX_TEXT),
        operator=args.str("segmentoperator", required=True, max_len=64),
        randomness=args.bool("randomness", default=False),
        # A non-numeric (or negative) audience size becomes 0, as the legacy server did.
        randomness_audience_size=lenient_int(args, "randomnessaudiencesize", 0, high=2**62),
    )
    if segment.operator and segment.operator.strip().lower() not in ("and", "or"):
        args.problems.append(ParamError("segmentoperator", "malformed", "SegmentOperator must be and or or"))
    rules = rules_list(args, "rulesjson")
    if rules is not None:
        segment.rules.CopyFrom(rules)
    elif args.params.raw("rulesjson") in (None, ""):
        old_form = parallel_rules(args)
        if old_form is not None:
            segment.rules.extend(old_form)
    if args.problems:
        failure = None
        if segment.list_id and "subscriberlistid" not in {p.name for p in args.problems}:
            # A list answer names every problem: whether the list is the caller's is one of them. The
            # lookup is the translator's own: the caller holds Segment.Create, not List.Get.
            failure = await validate_only(
                ctx.as_translator(),
                ctx.stubs.audience.GetList,
                audience_pb2.GetListRequest(list_id=segment.list_id),
            )
        raise Problems(args.problems, failure)
    created = await ctx.call(ctx.stubs.audience.CreateSegment, audience_pb2.CreateSegmentRequest(segment=segment))
    return {"SegmentID": created.segment_id}


async def list_segments(args: Args, ctx: Context) -> dict[str, Any]:
    include_totals = args.bool("includetotals", default=True)
    request = audience_pb2.ListSegmentsRequest(
        list_id=args.int("subscriberlistid", required=True, min=1),
        segment_id=lenient_int(args, "segmentid", 0, high=2**62),
        include_totals=include_totals,
        order_by=SEGMENT_ORDER_FIELDS.get(
            str(args.params.raw("orderfield") or "").strip().lower(), audience_pb2.SEGMENT_ORDER_FIELD_NAME
        ),
        # OrderType defaults to DESC here (unlike lists.get).
        descending=str(args.params.raw("ordertype") or "DESC").strip().upper() != "ASC",
    )
    if args.problems:
        raise Problems(args.problems)
    response = await ctx.call(ctx.stubs.audience.ListSegments, request)
    rows = [render_segment(segment, counted=include_totals) for segment in response.segments]
    return {"TotalSegmentCount": len(rows), "Segments": rows}


def delete_segments(args: Args) -> audience_pb2.DeleteSegmentsRequest:
    return audience_pb2.DeleteSegmentsRequest(segment_ids=args.int_list("segments", required=True))


# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

SEGMENT_CREATE_PARAMS = (
    SUBSCRIBER_LIST_ID,
    Param("SegmentName", "string", "Name of the segment", required=True),
    Param("SegmentOperator", "string", "How the rule groups combine", required=True, enum=("and", "or")),
    Param("RulesJson", "json", "Rules as a JSON string: an array of groups of {type, operator, value} rules"),
    Param(
        "SegmentRuleField", "strings", "The old form: rule fields, with SegmentRuleOperator and SegmentRuleFilter"
    ),
    Param("SegmentRuleOperator", "strings", "The old form: one operator per SegmentRuleField"),
    Param("SegmentRuleFilter", "strings", "The old form: one value per SegmentRuleField"),
    Param("Randomness", "boolean", "Pick a random sample of the matches", default=False),
    Param("RandomnessAudienceSize", "integer", "Size of the random sample", default=0),
)
SEGMENTS_GET_PARAMS = (
    SUBSCRIBER_LIST_ID,
    Param("SegmentID", "integer", "Only this segment"),
    Param("IncludeTotals", "boolean", "Count each segment's subscribers", default=True),
    Param(
        "OrderField",
        "string",
        "Sort column",
        enum=("SegmentName", "SegmentID", "SegmentOperator", "SubscriberCount", "SubscriberCountLastCalculatedOn"),
    ),
    Param("OrderType", "string", "Sort direction", enum=("ASC", "DESC"), default="DESC"),
)

ROWS = [
    Command(
        "segment.create",
        create_segment,
        permission="Segment.Create",
        shape="list",
        codes={
            "subscriberlistid": 1,
            "LIST_ID_REQUIRED": 1,
            "segmentname": 2,
            "SEGMENT_NAME_REQUIRED": 2,
            "SEGMENT_NAME_TOO_LONG": 2,
            "segmentoperator": 3,
            "SEGMENT_OPERATOR_REQUIRED": 3,
            "SEGMENT_OPERATOR_INVALID": 3,
            "LIST_NOT_FOUND": 4,
            # Herald's extensions: rules that are malformed, and rule types Herald has no data for.
            "rulesjson": 5,
            "RULES_INVALID": 5,
            "RANDOMNESS_AUDIENCE_SIZE_INVALID": 5,
            "RULE_TYPE_UNSUPPORTED": 6,
        },
        texts={
            1: "Missing required parameter (SubscriberListID)",
            2: "Missing required parameter (SegmentName)",
            3: "Missing or invalid SegmentOperator (and or or)",
            4: "List not found or doesn't belong to user",
        },
        v1_alias=False,
        summary="Create a segment of a list from rules",
        params=SEGMENT_CREATE_PARAMS,
        returns=(Param("SegmentID", "integer", "ID of the new segment", required=True),),
    ),
    Command(
        "segments.get",
        list_segments,
        permission="Segments.Get",
        shape="mixed",
        codes={"subscriberlistid": 1, "LIST_ID_REQUIRED": 1, "LIST_NOT_FOUND": 1},
        texts={1: "Missing or unknown SubscriberListID"},
        v1_alias=False,
        summary="A list's segments, with their subscriber counts",
        params=SEGMENTS_GET_PARAMS,
        returns=(
            Param("TotalSegmentCount", "integer", required=True),
            Param("Segments", "array", "Segment rows", required=True),
        ),
    ),
    Command(
        "segments.delete",
        unary(lambda s: s.audience.DeleteSegments, delete_segments, render_error_text),
        permission="Segments.Delete",
        shape="mixed",
        codes={"segments": 1, "SEGMENT_IDS_REQUIRED": 1},
        texts={1: "Missing required parameter (Segments)"},
        v1_alias=False,
        summary="Delete segments",
        params=(Param("Segments", "integers", "Segment IDs, comma-separated or an array", required=True),),
        returns=(ERROR_TEXT,),
    ),
]
