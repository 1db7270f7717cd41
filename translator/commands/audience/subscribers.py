"""Rows for the subscriber commands: subscriber.create, subscriber.get, subscribers.get and subscribers.delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import structlog
from google.protobuf import timestamp_pb2
from herald.audience.v1 import audience_pb2

from translator.commands import (
    ERROR_TEXT,
    MAX_TEXT,
    Args,
    Command,
    Context,
    Param,
    Problems,
    flagged_fields,
    validate_only,
)
from translator.commands.audience.legacy import (
    LIST_ID,
    ORDER_TYPE,
    RATE_LIMIT,
    RULES_JSON,
    RULES_OPERATOR,
    SUBSCRIBER_LIST_ID,
    UNKNOWN_ENUM,
    field_instant,
    field_value_text,
    lenient_int,
    rules_list,
    scalar_text,
)
from translator.params import ParamError, legacy_bool, legacy_name

log = structlog.get_logger()

DEFAULT_SUBSCRIBERS_PAGE = 25
_DATE_RE = re.compile(r"\s*([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[ T]([0-9]{2}:[0-9]{2}:[0-9]{2}))?\s*")
STATUS_NAMES = {
    audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED: "Subscribed",
    audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED: "Unsubscribed",
    audience_pb2.SUBSCRIBER_STATUS_OPT_IN_PENDING: "Opt-In Pending",
    audience_pb2.SUBSCRIBER_STATUS_OPT_OUT_PENDING: "Opt-Out Pending",
}
BOUNCE_NAMES = {
    audience_pb2.BOUNCE_TYPE_NOT_BOUNCED: "Not Bounced",
    audience_pb2.BOUNCE_TYPE_SOFT: "Soft",
    audience_pb2.BOUNCE_TYPE_HARD: "Hard",
}
# Herald's extension of SubscriberInformation: why the address is suppressed ("" when it is not).
SUPPRESSION_REASON_NAMES = {
    audience_pb2.SUPPRESSION_REASON_MANUAL: "Manual",
    audience_pb2.SUPPRESSION_REASON_BOUNCE: "Bounce",
    audience_pb2.SUPPRESSION_REASON_COMPLAINT: "Complaint",
}
# subscribers.get's named segments: (status, bounce type, suppressed only).
NAMED_SEGMENTS: dict[str, tuple[Any, Any, bool]] = {
    "active": (audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED, 0, False),
    "suppressed": (0, 0, True),
    "unsubscribed": (audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED, 0, False),
    "soft bounced": (0, audience_pb2.BOUNCE_TYPE_SOFT, False),
    "hard bounced": (0, audience_pb2.BOUNCE_TYPE_HARD, False),
    "opt-in pending": (audience_pb2.SUBSCRIBER_STATUS_OPT_IN_PENDING, 0, False),
}


def parse_legacy_instant(text: str) -> timestamp_pb2.Timestamp | None:
    """`Y-m-d` or `Y-m-d H:i:s` (UTC) as a Timestamp; None when it is neither."""
    match = _DATE_RE.fullmatch(text)
    if match is None:
        return None
    day, clock = match.groups()
    try:
        moment = datetime.strptime(f"{day} {clock or '00:00:00'}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def render_subscriber(subscriber: audience_pb2.Subscriber) -> dict[str, Any]:
    custom = dict(sorted(subscriber.custom_fields.items()))
    return {
        "SubscriberID": subscriber.subscriber_id,
        "ListID": subscriber.list_id,
        "EmailAddress": subscriber.email_address,
        "FirstName": subscriber.first_name,
        "LastName": subscriber.last_name,
        "SubscriptionStatus": STATUS_NAMES.get(subscriber.status, "Subscribed"),
        "BounceType": BOUNCE_NAMES.get(subscriber.bounce_type, "Not Bounced"),
        "SubscriptionDate": field_instant(subscriber, "subscription_time"),
        "SubscriptionIP": subscriber.subscription_ip,
        "UnsubscriptionDate": field_instant(subscriber, "unsubscription_time"),
        "UnsubscriptionIP": subscriber.unsubscription_ip,
        # Herald's: "complaint" when a spam complaint unsubscribed the subscriber (docs/bounces.md).
        "UnsubscriptionChannel": subscriber.unsubscription_channel,
        "OptInDate": field_instant(subscriber, "opt_in_time"),
        "Source": subscriber.source,
        "SourceRef": subscriber.source_ref,
        "SuppressionReason": SUPPRESSION_REASON_NAMES.get(subscriber.suppression_reason, ""),
        "CustomFields": custom,
        # The personalization name of a custom field is Subscriber:CustomField<ID>.
        **{f"CustomField{key}": value for key, value in custom.items() if key.isdigit()},
    }


def render_segments_of(subscriber: audience_pb2.Subscriber) -> list[dict[str, Any]]:
    return [{"SegmentID": s.segment_id, "SegmentName": s.name} for s in subscriber.segments]


# Legacy parameter → the field the service reports it under.
SUBSCRIBER_FIELDS = {
    "listid": "subscriber.list_id",
    "emailaddress": "subscriber.email_address",
    "status": "subscriber.status",
    "bouncetype": "subscriber.bounce_type",
    "subscriptiondate": "subscriber.subscription_time",
    "subscriptionip": "subscriber.subscription_ip",
    "unsubscriptiondate": "subscriber.unsubscription_time",
    "unsubscriptionip": "subscriber.unsubscription_ip",
    "optindate": "subscriber.opt_in_time",
    "customfields": "subscriber.custom_fields",
    "firstname": "subscriber.first_name",
    "lastname": "subscriber.last_name",
    "optinconfirmationemailid": "opt_in_confirmation_email_id",
}


def instant_param(args: Args, name: str, *, required: bool) -> timestamp_pb2.Timestamp | None:
    raw = args.params.raw(name)
    if raw is None or raw == "":
        if required:
            args.problems.append(ParamError(name, "missing", f"{name} is required for this status"))
        return None
    stamp = parse_legacy_instant(raw) if isinstance(raw, str) else None
    if stamp is None:
        args.problems.append(ParamError(name, "malformed", f"{name} must be Y-m-d or Y-m-d H:i:s"))
    return stamp


def custom_fields(args: Args) -> dict[str, str]:
    """CustomFields {"<CustomFieldID>": value}: scalar values as text, arrays of scalars (checkboxes) joined
    by commas, null skipped, anything else code 17."""
    try:
        given = args.params.obj("customfields")
    except ParamError:
        args.problems.append(ParamError("customfields", "malformed", "CustomFields must be an object"))
        return {}
    values: dict[str, str] = {}
    for key, value in (given or {}).items():
        if value is None:
            continue
        text = field_value_text(value)
        if text is None:
            args.problems.append(
                ParamError(
                    "customfields", "malformed", f"custom field {key} must be text, a number or a list of them"
                )
            )
            continue
        values[str(key)] = text
    return values


def subscriber_request(args: Args) -> audience_pb2.CreateSubscriberRequest:
    subscriber = audience_pb2.Subscriber(
        list_id=args.int("listid", required=True, min=1),
        email_address=args.str("emailaddress", required=True, max_len=1000),
        first_name=args.str("firstname", max_len=MAX_TEXT),
        last_name=args.str("lastname", max_len=MAX_TEXT),
        subscription_ip=scalar_text(args.params.raw("subscriptionip")) or "",
        unsubscription_ip=scalar_text(args.params.raw("unsubscriptionip")) or "",
        source=scalar_text(args.params.raw("source")) or "",
        source_ref=scalar_text(args.params.raw("sourceref")) or "",
    )
    status_text = args.str("status", max_len=64)
    status_name = "Subscribed"
    if status_text.strip():
        by_name = {legacy_name(name): value for value, name in STATUS_NAMES.items()}
        subscriber.status = by_name.get(legacy_name(status_text), UNKNOWN_ENUM)
        status_name = STATUS_NAMES.get(subscriber.status, "")
    bounce_text = args.str("bouncetype", max_len=64)
    if bounce_text.strip():
        bounce_by_name = {legacy_name(name): value for value, name in BOUNCE_NAMES.items()}
        subscriber.bounce_type = bounce_by_name.get(legacy_name(bounce_text), UNKNOWN_ENUM)
    subscribing = status_name in ("Subscribed", "Opt-In Pending")
    unsubscribing = status_name in ("Unsubscribed", "Opt-Out Pending")
    for name, field_name, required in (
        ("subscriptiondate", "subscription_time", subscribing),
        ("unsubscriptiondate", "unsubscription_time", unsubscribing),
        ("optindate", "opt_in_time", False),
    ):
        stamp = instant_param(args, name, required=required)
        if stamp is not None:
            getattr(subscriber, field_name).CopyFrom(stamp)
    if subscribing and not subscriber.subscription_ip.strip():
        args.problems.append(ParamError("subscriptionip", "missing", "SubscriptionIP is required for this status"))
    if unsubscribing and not subscriber.unsubscription_ip.strip():
        args.problems.append(
            ParamError("unsubscriptionip", "missing", "UnsubscriptionIP is required for this status")
        )
    subscriber.custom_fields.update(custom_fields(args))
    # ApplyBehaviors, UpdateStatistics, TriggerWebServices and TriggerAutoResponders name things Herald does
    # not keep (behaviors, stored subscription statistics, web services, autoresponders): read as the legacy
    # booleans they are, and the subscriber is added all the same (docs/legacy-mapping.md, "no counterpart").
    asked = [name for name in NO_COUNTERPART_FLAGS if args.bool(name, default=False)]
    if asked:
        log.info("subscriber.create asks for what Herald does not have", flags=asked)
    return audience_pb2.CreateSubscriberRequest(
        subscriber=subscriber,
        update_if_duplicate=args.bool("updateifduplicate", default=False),
        update_if_unsubscribed=args.bool("updateifunsubscribed", default=False),
        opt_in_confirmation_email_id=args.int("optinconfirmationemailid", min=0),
        enforce_required_fields=args.bool("enforcerequiredfields", default=False),
        # The fact sheet's default is false: the confirmation email goes out only when asked for.
        send_confirmation_email=args.bool("sendconfirmationemail", default=False),
    )


# Flags of subscriber.create with no counterpart in Herald (see subscriber_request).
NO_COUNTERPART_FLAGS = ("ApplyBehaviors", "UpdateStatistics", "TriggerWebServices", "TriggerAutoResponders")


async def create_subscriber(args: Args, ctx: Context) -> dict[str, Any]:
    request = subscriber_request(args)
    method = ctx.stubs.audience.CreateSubscriber
    if args.problems:
        # An int-shaped answer is the first failing check in code order, so the service's verdict on
        # the rest (a bad address is code 3) still counts.
        request.validate_only = True
        failure = await validate_only(ctx, method, request, judged_fields=flagged_fields(args, SUBSCRIBER_FIELDS))
        raise Problems(args.problems, failure)
    subscriber = await ctx.call(method, request)
    return {
        "SubscriberInformation": render_subscriber(subscriber),
        "Suppressed": subscriber.suppressed,
        "SubscriberTags": [],
        "SubscriberSegments": render_segments_of(subscriber),
        "SubscriberJourneys": [],
        "SubscriberWebsiteEvents": [],
    }


async def get_subscriber(args: Args, ctx: Context) -> dict[str, Any]:
    request = audience_pb2.GetSubscriberRequest(
        list_id=args.int("listid", required=True, min=1),
        subscriber_id=args.int("subscriberid", min=1),
        email_address=args.str("emailaddress", max_len=1000),
    )
    if (
        not request.subscriber_id
        and not request.email_address.strip()
        and "subscriberid" not in {p.name for p in args.problems}
    ):
        args.problems.append(ParamError("subscriberid", "missing", "EmailAddress or SubscriberID is required"))
    try:
        include = args.params.obj("include") or {}
    except ParamError:
        include = {}
    if args.problems:
        raise Problems(args.problems)
    subscriber = await ctx.call(ctx.stubs.audience.GetSubscriber, request)

    def wanted(name: str) -> bool:
        return legacy_bool(include[name]) if name in include else True

    answer: dict[str, Any] = {
        "SubscriberInformation": render_subscriber(subscriber),
        "Suppressed": subscriber.suppressed,
    }
    # Herald keeps no subscriber tags, journeys, website events, activity or revenue: those are empty.
    if wanted("tags"):
        answer["SubscriberTags"] = []
    if wanted("segments"):
        answer["SubscriberSegments"] = render_segments_of(subscriber)
    if wanted("journeys"):
        answer["SubscriberJourneys"] = {"InProgress": [], "Completed": []}
    if wanted("events"):
        answer["SubscriberWebsiteEvents"] = []
    if wanted("activity"):
        answer["SubscriberActivity"] = []
    if wanted("revenue"):
        answer["TotalRevenue"] = 0
    return answer


async def list_subscribers(args: Args, ctx: Context) -> dict[str, Any]:
    list_id = args.int("subscriberlistid", required=True, min=1)
    segment_raw = args.params.raw("subscribersegment")
    request = audience_pb2.ListSubscribersRequest(
        list_id=list_id,
        skip=lenient_int(args, "recordsfrom", 0),
        order_by=str(args.params.raw("orderfield") or ""),
        descending=str(args.params.raw("ordertype") or "").strip().upper() == "DESC",
        search_field=scalar_text(args.params.raw("searchfield")) or "",
        search_keyword=scalar_text(args.params.raw("searchkeyword")) or "",
    )
    named = None
    segment_text = scalar_text(segment_raw) if segment_raw is not None else None
    if segment_text is None or not segment_text.strip():
        args.problems.append(ParamError("subscribersegment", "missing", "SubscriberSegment is required"))
    elif legacy_name(segment_text) in NAMED_SEGMENTS:
        named = NAMED_SEGMENTS[legacy_name(segment_text)]
        request.status, request.bounce_type, request.suppressed_only = named
    elif segment_text.strip().isdigit() and 0 < len(segment_text.strip()) <= 18 and int(segment_text) > 0:
        request.segment_id = int(segment_text)
    else:
        args.problems.append(ParamError("subscribersegment", "malformed", "SubscriberSegment is not a segment"))
    if request.search_keyword and not request.search_field:
        request.search_field = "EmailAddress"
    if args.problems:
        raise Problems(args.problems)
    # RecordsPerRequest quirks: a JSON 0 is the default of 25; a string "0" is no limit for a named
    # segment and no rows at all for a segment id. Anything unusable is the default.
    raw_page = args.params.raw("recordsperrequest")
    no_rows = False
    if isinstance(raw_page, str) and raw_page.strip() == "0":
        no_rows = named is None
        request.page_size = 1 if no_rows else 0
    else:
        page = lenient_int(args, "recordsperrequest", DEFAULT_SUBSCRIBERS_PAGE)
        request.page_size = page or DEFAULT_SUBSCRIBERS_PAGE
    response = await ctx.call(ctx.stubs.audience.ListSubscribers, request)
    rows = [] if no_rows else [render_subscriber(s) for s in response.subscribers]
    return {"ErrorText": "", "Subscribers": rows, "TotalSubscribers": response.total_size}


async def delete_subscribers(args: Args, ctx: Context) -> dict[str, Any]:
    request = audience_pb2.DeleteSubscribersRequest(
        list_id=args.int("subscriberlistid", required=True, min=1),
        subscriber_ids=args.int_list("subscribers"),
        rules_operator=args.str("rulesoperator", max_len=16),
        suppressed=args.bool("suppressed", default=False),
    )
    if not request.subscriber_ids:
        rules = rules_list(args, "rulesjson")
        if rules is not None:
            request.rules.CopyFrom(rules)
    named = {p.name for p in args.problems}
    if not request.subscriber_ids and not request.HasField("rules") and not named & {"subscribers", "rulesjson"}:
        args.problems.append(ParamError("subscribers", "missing", "Subscribers or RulesJSON is required"))
    if args.problems:
        raise Problems(args.problems)
    await ctx.call(ctx.stubs.audience.DeleteSubscribers, request)
    return {"ErrorText": ""}


SUBSCRIBER_CREATE_CODES = {
    "listid:missing": 1,
    "listid:malformed": 4,
    "LIST_ID_REQUIRED": 1,
    "emailaddress:missing": 2,
    "emailaddress:malformed": 3,
    "EMAIL_ADDRESS_REQUIRED": 2,
    "EMAIL_ADDRESS_INVALID": 3,
    "bouncetype": 5,
    "BOUNCE_TYPE_INVALID": 5,
    "status": 6,
    "STATUS_INVALID": 6,
    "subscriptiondate:malformed": 7,
    "subscriptiondate:missing": 8,
    "subscriptionip:missing": 9,
    "SUBSCRIPTION_IP_INVALID": 10,
    "unsubscriptiondate:missing": 11,
    "unsubscriptionip:missing": 12,
    "unsubscriptiondate:malformed": 13,
    "UNSUBSCRIPTION_IP_INVALID": 14,
    "OPT_IN_TIME_REQUIRED": 15,
    "optindate:malformed": 16,
    "customfields": 17,
    "CUSTOM_FIELD_INVALID": 17,
    # A key that names no field of the list (nor a global one of its owner), or a value its field's type
    # cannot hold; with EnforceRequiredFields, the field's own rules in the order required, validation,
    # uniqueness (the service reports the first problem only).
    "CUSTOM_FIELD_NOT_FOUND": 17,
    "CUSTOM_FIELD_VALUE_INVALID": 17,
    "CUSTOM_FIELD_REQUIRED": 26,
    "CUSTOM_FIELD_NOT_UNIQUE": 27,
    "CUSTOM_FIELD_VALIDATION_FAILED": 28,
    "SUBSCRIBER_ALREADY_EXISTS": 20,
    "SUBSCRIBER_UNSUBSCRIBED": 21,
    "LIST_NOT_FOUND": 23,
    "optinconfirmationemailid": 24,
    "EMAIL_NOT_FOUND": 25,
    # Herald's extension: text the seed has no code for (a name longer than 255 characters).
    "firstname": 29,
    "lastname": 29,
    "TEXT_INVALID": 29,
}
SUBSCRIBER_CREATE_TEXTS = {
    1: "Missing required parameter (ListID)",
    2: "Missing required parameter (EmailAddress)",
    3: "Invalid EmailAddress",
    4: "Invalid ListID",
    5: "Invalid BounceType",
    6: "Invalid Status",
    7: "Invalid SubscriptionDate",
    8: "Missing SubscriptionDate",
    9: "Missing SubscriptionIP",
    10: "Invalid SubscriptionIP",
    11: "Missing UnsubscriptionDate",
    12: "Missing UnsubscriptionIP",
    13: "Invalid UnsubscriptionDate",
    14: "Invalid UnsubscriptionIP",
    15: "Missing OptInDate",
    16: "Invalid OptInDate",
    17: "Invalid custom field value",
    20: "Subscriber already exists in the list",
    21: "Subscriber previously unsubscribed from the list",
    23: "List not found or doesn't belong to user",
    24: "Invalid OptInConfirmationEmailID",
    25: "OptInConfirmationEmailID not found or doesn't belong to user",
    26: "Required custom field is empty or was omitted",
    27: "Unique custom field value already exists",
    28: "Custom field value failed its validation method",
}
SUBSCRIBER_CREATE_CAUSES = {"CUSTOM_FIELD_NOT_FOUND": "Unknown custom field ID"}

# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

LEGACY_INSTANT = "Y-m-d or Y-m-d H:i:s, UTC"
SUBSCRIBER_ANSWER = (
    Param("SubscriberInformation", "object", "The subscriber row, CustomFields included", required=True),
    Param("Suppressed", "boolean", "Whether the address is on the owner's suppression list", required=True),
)
SUBSCRIBER_CREATE_PARAMS = (
    LIST_ID,
    Param("EmailAddress", "string", "The subscriber's address", required=True, format="email"),
    Param("FirstName", "string", "At most 255 characters"),
    Param("LastName", "string", "At most 255 characters"),
    Param("Status", "string", "Subscription status", default="Subscribed", enum=tuple(STATUS_NAMES.values())),
    Param("SubscriptionDate", "string", f"{LEGACY_INSTANT}; required for Subscribed and Opt-In Pending"),
    Param("SubscriptionIP", "string", "Required for Subscribed and Opt-In Pending"),
    Param("UnsubscriptionDate", "string", f"{LEGACY_INSTANT}; required for Unsubscribed and Opt-Out Pending"),
    Param("UnsubscriptionIP", "string", "Required for Unsubscribed and Opt-Out Pending"),
    Param("OptInDate", "string", LEGACY_INSTANT),
    Param("BounceType", "string", "Bounce status", enum=tuple(BOUNCE_NAMES.values())),
    Param(
        "CustomFields",
        "object",
        '{"<CustomFieldID>": value}: text, a number, or a list of option values (Checkboxes); every ID must '
        "name a field of the list or a global one of the owner",
    ),
    Param(
        "EnforceRequiredFields",
        "boolean",
        "Also check each custom field's required, validation and uniqueness rules (26, 28, 27)",
        default=False,
    ),
    Param(
        "Source",
        "string",
        "Anything else becomes Unknown",
        default="API",
        enum=("CSVImport", "API", "Webhook", "Manual", "Other", "Unknown"),
    ),
    Param("SourceRef", "string", "Free text, cut to 64 characters"),
    Param("UpdateIfDuplicate", "boolean", "Update the subscriber when the address is on the list", default=False),
    Param("UpdateIfUnsubscribed", "boolean", "Subscribe again an address that unsubscribed", default=False),
    Param(
        "OptInConfirmationEmailID",
        "integer",
        "ID of the confirmation email to send instead of the list's (with SendConfirmationEmail)",
    ),
    Param(
        "SendConfirmationEmail",
        "boolean",
        "Send the confirmation email to a subscriber added Opt-In Pending to a double opt-in list (at most "
        "once an hour); without it the subscriber stays pending and is sent nothing",
        default=False,
    ),
    *(
        Param(
            name,
            "boolean",
            f"No counterpart: Herald has no {what}; the subscriber is added either way",
            default=False,
        )
        for name, what in (
            ("ApplyBehaviors", "list behaviors"),
            ("UpdateStatistics", "stored subscription statistics (list counts are counted from the subscribers)"),
            ("TriggerWebServices", "web service integrations"),
            ("TriggerAutoResponders", "autoresponders"),
        )
    ),
)
SUBSCRIBER_GET_PARAMS = (
    LIST_ID,
    Param("SubscriberID", "integer", "The subscriber (or give EmailAddress)"),
    Param("EmailAddress", "string", "The subscriber (or give SubscriberID)", format="email"),
    Param(
        "Include",
        "object",
        "Which parts to answer (each defaults to true)",
        fields=tuple(
            Param(name, "boolean", default=True)
            for name in ("Journeys", "Events", "Activity", "Revenue", "Tags", "Segments")
        ),
    ),
)
SUBSCRIBERS_GET_PARAMS = (
    SUBSCRIBER_LIST_ID,
    Param(
        "SubscriberSegment",
        "string",
        "Active, Suppressed, Unsubscribed, Soft bounced, Hard bounced, Opt-in pending, or a segment ID",
        required=True,
    ),
    Param(
        "RecordsPerRequest", "integer", 'Page size (25); "0" as a string: no limit for a named segment', default=25
    ),
    Param("RecordsFrom", "integer", "Rows to skip", default=0),
    Param("OrderField", "string", "Sort column", default="EmailAddress"),
    ORDER_TYPE,
    Param(
        "SearchField",
        "string",
        "EmailAddress, SubscriberID, SubscriptionDate, SubscriptionIP, OptInDate, or a custom field ID",
    ),
    Param("SearchKeyword", "string", "What SearchField must contain"),
)
SUBSCRIBERS_DELETE_PARAMS = (
    SUBSCRIBER_LIST_ID,
    Param("Subscribers", "integers", "Subscriber IDs (or give RulesJSON)"),
    RULES_JSON,
    RULES_OPERATOR,
    Param(
        "Suppressed", "boolean", "Delete the owner's suppression entries of these addresses instead", default=False
    ),
)

ROWS = [
    Command(
        "subscriber.create",
        create_subscriber,
        permission="Subscribers.Import",
        shape="int",
        codes=SUBSCRIBER_CREATE_CODES,
        texts=SUBSCRIBER_CREATE_TEXTS,
        cause_texts=SUBSCRIBER_CREATE_CAUSES,
        rate_limit=RATE_LIMIT,
        errors_list=True,
        summary="Add a subscriber to a list",
        params=SUBSCRIBER_CREATE_PARAMS,
        returns=(
            *SUBSCRIBER_ANSWER,
            Param("SubscriberTags", "array", "Always empty: Herald keeps no subscriber tags", required=True),
            Param("SubscriberSegments", "array", "[{SegmentID, SegmentName}]", required=True),
            Param("SubscriberJourneys", "array", "Always empty", required=True),
            Param("SubscriberWebsiteEvents", "array", "Always empty", required=True),
        ),
    ),
    Command(
        "subscriber.get",
        get_subscriber,
        permission="Subscribers.Get",
        shape="mixed",
        codes={
            "subscriberid": 1,
            "emailaddress": 1,
            "SUBSCRIBER_SELECTOR_REQUIRED": 1,
            "listid:missing": 2,
            "listid:malformed": 4,
            "LIST_ID_REQUIRED": 2,
            "SUBSCRIBER_NOT_FOUND": 3,
            "LIST_NOT_FOUND": 4,
        },
        texts={
            1: "Missing EmailAddress or SubscriberID",
            2: "Missing required parameter (ListID)",
            3: "Subscriber not found",
            4: "Invalid ListID",
        },
        rate_limit=RATE_LIMIT,
        v1_alias=False,
        summary="A subscriber of a list, by ID or address",
        params=SUBSCRIBER_GET_PARAMS,
        returns=(
            *SUBSCRIBER_ANSWER,
            Param("SubscriberTags", "array", "Unless Include.Tags is false; always empty"),
            Param("SubscriberSegments", "array", "Unless Include.Segments is false: [{SegmentID, SegmentName}]"),
            Param("SubscriberJourneys", "object", "Unless Include.Journeys is false; always empty"),
            Param("SubscriberWebsiteEvents", "array", "Unless Include.Events is false; always empty"),
            Param("SubscriberActivity", "array", "Unless Include.Activity is false; always empty"),
            Param("TotalRevenue", "number", "Unless Include.Revenue is false; always 0"),
        ),
    ),
    Command(
        "subscribers.get",
        list_subscribers,
        permission="Subscribers.Get",
        shape="int",
        codes={
            "subscriberlistid:missing": 1,
            "subscriberlistid:malformed": 3,
            "LIST_ID_REQUIRED": 1,
            "subscribersegment": 2,
            "SEGMENT_NOT_FOUND": 2,
            "SEGMENT_ID_INVALID": 2,
            "LIST_NOT_FOUND": 3,
            "SEARCH_FIELD_INVALID": 4,
        },
        texts={
            1: "Missing required parameter (SubscriberListID)",
            2: "Missing or unknown SubscriberSegment",
            3: "List not found or doesn't belong to user",
            4: "Invalid SearchField",
        },
        v1_alias=False,
        summary="A page of a list's subscribers in a named segment or a segment",
        params=SUBSCRIBERS_GET_PARAMS,
        returns=(
            ERROR_TEXT,
            Param("Subscribers", "array", "Subscriber rows", required=True),
            Param("TotalSubscribers", "integer", "Every match, whatever the page", required=True),
        ),
    ),
    Command(
        "subscribers.delete",
        delete_subscribers,
        permission="Subscribers.Delete",
        shape="mixed",
        codes={
            "subscriberlistid": 2,
            "LIST_ID_REQUIRED": 2,
            "LIST_NOT_FOUND": 5,
            "RULE_TYPE_UNSUPPORTED": 6,
            "rulesjson": 7,
            "rulesoperator": 7,
            "RULES_INVALID": 7,
            "subscribers": 8,
            "SUBSCRIBER_IDS_INVALID": 8,
            "SUBSCRIBER_SELECTOR_REQUIRED": 8,
        },
        texts={
            2: "Missing required parameter (SubscriberListID)",
            5: "List not found or doesn't belong to user",
            8: "Subscribers must be a comma-separated list of subscriber IDs (or give RulesJSON)",
        },
        v1_alias=False,
        summary="Delete subscribers of a list, by ID or by rules",
        params=SUBSCRIBERS_DELETE_PARAMS,
        returns=(ERROR_TEXT,),
    ),
]
