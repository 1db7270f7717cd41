"""Rows for the audience commands: lists (list.create/get, lists.get/delete), subscribers and segments."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import email_pb2

from services.common.grpcutil import decode_error
from services.common.protojson import plain_json
from translator import envelope
from translator.commands import (
    ERROR_TEXT,
    MAX_TEXT,
    UNAVAILABLE_CODES,
    Args,
    Command,
    Context,
    Param,
    Problems,
    flagged_fields,
    instant,
    render_error_text,
    unary,
    validate_only,
    without,
)
from translator.envelope import AuthError
from translator.params import INT32_MAX, ParamError, legacy_bool, legacy_name

# An enum value no client can mean: the service answers it as "not a valid value" (the proto
# enums are open), so one call reports it together with every other problem.
UNKNOWN_ENUM: Any = 99
RATE_LIMIT = (100, 60.0)
DEFAULT_SUBSCRIBERS_PAGE = 25
_DATE_RE = re.compile(r"\s*([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[ T]([0-9]{2}:[0-9]{2}:[0-9]{2}))?\s*")

OPT_IN_NAMES = {audience_pb2.OPT_IN_MODE_SINGLE: "Single", audience_pb2.OPT_IN_MODE_DOUBLE: "Double"}
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
CONTENT_TYPES = {
    "html": email_pb2.CONTENT_TYPE_HTML,
    "plain": email_pb2.CONTENT_TYPE_PLAIN,
    "both": email_pb2.CONTENT_TYPE_BOTH,
}
MODES = {
    "empty": email_pb2.EMAIL_MODE_EMPTY,
    "editor": email_pb2.EMAIL_MODE_EDITOR,
    "template": email_pb2.EMAIL_MODE_TEMPLATE,
    "import": email_pb2.EMAIL_MODE_IMPORT,
    "unlayer": email_pb2.EMAIL_MODE_UNLAYER,
    "stripo": email_pb2.EMAIL_MODE_STRIPO,
}
LIST_ORDER_FIELDS = {
    "listid": audience_pb2.LIST_ORDER_FIELD_LIST_ID,
    "name": audience_pb2.LIST_ORDER_FIELD_NAME,
    "createdon": audience_pb2.LIST_ORDER_FIELD_CREATE_TIME,
    "archivedat": audience_pb2.LIST_ORDER_FIELD_ARCHIVE_TIME,
    "activesubscribercount": audience_pb2.LIST_ORDER_FIELD_ACTIVE_SUBSCRIBER_COUNT,
    "segmentcount": audience_pb2.LIST_ORDER_FIELD_SEGMENT_COUNT,
    "lastactivityat": audience_pb2.LIST_ORDER_FIELD_LAST_ACTIVITY_TIME,
}
ARCHIVED_FILTERS = {
    "false": audience_pb2.LIST_ARCHIVED_FILTER_UNARCHIVED,
    "true": audience_pb2.LIST_ARCHIVED_FILTER_ARCHIVED,
    "all": audience_pb2.LIST_ARCHIVED_FILTER_ALL,
}
SEGMENT_ORDER_FIELDS = {
    "segmentname": audience_pb2.SEGMENT_ORDER_FIELD_NAME,
    "segmentid": audience_pb2.SEGMENT_ORDER_FIELD_SEGMENT_ID,
    "segmentoperator": audience_pb2.SEGMENT_ORDER_FIELD_OPERATOR,
    "subscribercount": audience_pb2.SEGMENT_ORDER_FIELD_SUBSCRIBER_COUNT,
    # Counts are computed when asked, so the last calculation is always now: the same order.
    "subscribercountlastcalculatedon": audience_pb2.SEGMENT_ORDER_FIELD_SUBSCRIBER_COUNT,
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


def field_instant(message: Any, field_name: str) -> str:
    return instant(getattr(message, field_name), is_set=message.HasField(field_name))


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


def lenient_int(args: Args, name: str, default: int, *, low: int = 0, high: int = INT32_MAX) -> int:
    """A paging number read as the legacy server did (PHP intval): anything unusable is the default."""
    try:
        value = args.params.int(name)
    except ParamError:
        return default
    if value is None or value < low:
        return default
    return min(value, high)


def scalar_text(value: object) -> str | None:
    """A JSON scalar as text (true → "1"), None for objects, arrays and non-finite numbers."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return None


def rules_list(args: Args, name: str) -> struct_pb2.ListValue | None:
    """RulesJSON: a JSON string (even inside a JSON body) holding an array; None when absent or ""."""
    try:
        value = args.params.json_str(name)
    except ParamError as exc:
        args.problems.append(
            ParamError(name, "malformed", f"{name} must be a JSON string holding the rules: {exc}")
        )
        return None
    if value is None:
        return None
    if not isinstance(value, list):
        args.problems.append(ParamError(name, "malformed", f"{name} must hold an array of rule groups"))
        return None
    rules = struct_pb2.ListValue()
    rules.extend(value)
    return rules


# Rendering ------------------------------------------------------------------------------------


def render_list(mailing_list: audience_pb2.List) -> dict[str, Any]:
    return {
        "ListID": mailing_list.list_id,
        "Name": mailing_list.name,
        "Description": mailing_list.description,
        "RelOwnerUserID": mailing_list.owner_user_id,
        "OptInMode": OPT_IN_NAMES.get(mailing_list.opt_in_mode, "Single"),
        "OptInConfirmationEmailID": mailing_list.confirmation_email_id,
        "SenderName": mailing_list.sender_name,
        "SenderEmailAddress": mailing_list.sender_email_address,
        "SenderCompany": mailing_list.sender_company,
        "SenderAddress": mailing_list.sender_address,
        "CreatedOn": field_instant(mailing_list, "create_time"),
        "ArchivedAt": field_instant(mailing_list, "archive_time"),
        "LastActivityAt": field_instant(mailing_list, "last_activity_time"),
        "SubscriberCount": mailing_list.subscriber_count,
        "ActiveSubscriberCount": mailing_list.active_subscriber_count,
        "SegmentCount": mailing_list.segment_count,
        "Options": {"OptInConfirmationEmailID": mailing_list.confirmation_email_id},
    }


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
        "OptInDate": field_instant(subscriber, "opt_in_time"),
        "Source": subscriber.source,
        "SourceRef": subscriber.source_ref,
        "CustomFields": custom,
        # The personalization name of a custom field is Subscriber:CustomField<ID>.
        **{f"CustomField{key}": value for key, value in custom.items() if key.isdigit()},
    }


def render_segments_of(subscriber: audience_pb2.Subscriber) -> list[dict[str, Any]]:
    return [{"SegmentID": s.segment_id, "SegmentName": s.name} for s in subscriber.segments]


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


# Lists ----------------------------------------------------------------------------------------


def confirmation_email(args: Args) -> email_pb2.Email | None:
    """The bundled ConfirmationEmail object (keys in any case); an empty object still counts (and fails)."""
    if not args.params.has("confirmationemail"):
        return None
    try:
        given = args.params.obj("confirmationemail")
    except ParamError:
        args.problems.append(ParamError("confirmationemail", "malformed", "ConfirmationEmail must be an object"))
        return None
    email = email_pb2.Email()
    if given is None:
        return email
    texts = {
        "emailname": "name",
        "subject": "subject",
        "preheadertext": "preheader_text",
        "fromname": "from_name",
        "fromemail": "from_email",
        "replytoname": "reply_to_name",
        "replytoemail": "reply_to_email",
        "htmlcontent": "html_content",
        "plaincontent": "plain_content",
    }
    for key, attribute in texts.items():
        value = given.get(key)
        if value is None:
            continue
        text = scalar_text(value)
        if text is None:
            args.problems.append(
                ParamError("confirmationemail", "malformed", f"ConfirmationEmail.{key} must be text")
            )
            continue
        setattr(email, attribute, text)
    content_type = given.get("contenttype")
    if content_type is not None:
        email.content_type = CONTENT_TYPES.get(legacy_name(str(content_type)), UNKNOWN_ENUM)
    mode = given.get("mode")
    if mode is not None and str(mode).strip():
        email.mode = MODES.get(legacy_name(str(mode)), UNKNOWN_ENUM)
    template = given.get("reltemplateid")
    if template is not None and template != "":
        text = scalar_text(template)
        if text is None or not text.strip().isdigit() or len(text.strip()) > 18:
            args.problems.append(
                ParamError(
                    "confirmationemail.reltemplateid", "malformed", "ConfirmationEmail.RelTemplateID must be an id"
                )
            )
        else:
            email.template_id = int(text)
    return email


async def create_list(args: Args, ctx: Context) -> dict[str, Any]:
    request = audience_pb2.CreateListRequest(
        # Not required here: the service names a missing name together with every other problem.
        name=args.str("subscriberlistname", max_len=MAX_TEXT),
        description=args.str("description", max_len=MAX_TEXT),
        sender_name=args.str("sendername", max_len=MAX_TEXT),
        sender_email_address=args.str("senderemailaddress", max_len=MAX_TEXT),
        sender_company=args.str("sendercompany", max_len=MAX_TEXT),
        sender_address=args.str("senderaddress", max_len=MAX_TEXT),
    )
    mode = args.str("optinmode", max_len=64)
    if mode:
        request.opt_in_mode = {"single": 1, "double": 2}.get(mode.strip().lower(), UNKNOWN_ENUM)
    email = confirmation_email(args)
    if email is not None:
        request.confirmation_email.CopyFrom(email)
    if args.problems:
        raise Problems(args.problems)
    created = await ctx.call(ctx.stubs.audience.CreateList, request)
    answer: dict[str, Any] = {"ListID": created.list_id}
    if email is not None:
        answer["ConfirmationEmailID"] = created.confirmation_email_id
    return answer


def get_list(args: Args) -> audience_pb2.GetListRequest:
    return audience_pb2.GetListRequest(list_id=args.int("listid", required=True, min=1))


def render_get_list(response: audience_pb2.List, args: Args) -> dict[str, Any]:
    row = render_list(response)
    if args.bool("getstats", default=False):
        row["Statistics"] = {
            "TotalSubscribers": response.subscriber_count,
            "ActiveSubscribers": response.active_subscriber_count,
            "Segments": response.segment_count,
        }
    return {"List": row}


def list_lists(args: Args) -> audience_pb2.ListListsRequest:
    archived = args.params.raw("archived")
    archived_text = "false"
    if isinstance(archived, str) and archived.strip().lower() == "all":
        archived_text = "all"
    elif archived is not None:
        archived_text = "true" if args.bool("archived", default=False) else "false"
    return audience_pb2.ListListsRequest(
        page_size=lenient_int(args, "recordsperrequest", 0),
        skip=lenient_int(args, "recordsfrom", 0),
        order_by=LIST_ORDER_FIELDS.get(
            str(args.params.raw("orderfield") or "").strip().lower(), audience_pb2.LIST_ORDER_FIELD_LIST_ID
        ),
        descending=str(args.params.raw("ordertype") or "").strip().upper() == "DESC",
        search=scalar_text(args.params.raw("search")) or "",
        archived=ARCHIVED_FILTERS[archived_text],
    )


def render_lists(response: audience_pb2.ListListsResponse, args: Args) -> dict[str, Any]:
    return {"TotalListCount": response.total_size, "Lists": [render_list(item) for item in response.lists]}


def delete_lists(args: Args) -> audience_pb2.DeleteListsRequest:
    return audience_pb2.DeleteListsRequest(list_ids=args.int_list("lists", required=True))


# Subscribers ----------------------------------------------------------------------------------

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
    """CustomFields {"<CustomFieldID>": value}: scalar values as text, null skipped, anything else code 17."""
    try:
        given = args.params.obj("customfields")
    except ParamError:
        args.problems.append(ParamError("customfields", "malformed", "CustomFields must be an object"))
        return {}
    values: dict[str, str] = {}
    for key, value in (given or {}).items():
        if value is None:
            continue
        text = scalar_text(value)
        if text is None:
            args.problems.append(
                ParamError("customfields", "malformed", f"custom field {key} must be text or a number")
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
    # EnforceRequiredFields, ApplyBehaviors, SendConfirmationEmail, UpdateStatistics, TriggerWebServices
    # and TriggerAutoResponders are accepted and change nothing: Herald keeps no custom field
    # definitions, behaviors, web services or autoresponders (docs/legacy-mapping.md).
    return audience_pb2.CreateSubscriberRequest(
        subscriber=subscriber,
        update_if_duplicate=args.bool("updateifduplicate", default=False),
        update_if_unsubscribed=args.bool("updateifunsubscribed", default=False),
        opt_in_confirmation_email_id=args.int("optinconfirmationemailid", min=0),
    )


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


UNSUBSCRIBE_FIELDS = {
    "listid": "list_id",
    "ipaddress": "ip_address",
    "emailaddress": "email_address",
    "subscriberid": "subscriber_id",
    "rulesjson": "rules",
    "rulesoperator": "rules_operator",
}


# RULINGS 13: without credentials the call is an unsubscribe link's, for the one subscriber it names.
# What acts on, or tells about, more than that needs the list owner's APIKey or SessionID.
OWNER_ONLY = {"rulesjson": "RulesJSON", "addtoglobalsuppression": "AddToGlobalSuppression", "preview": "Preview"}
# What a credential-free call answers like a success: telling these apart from one would tell a
# stranger whether an address is on the list.
MEMBERSHIP_REASONS = frozenset({"SUBSCRIBER_NOT_FOUND", "SUBSCRIBER_ALREADY_UNSUBSCRIBED"})


def owner_only_options(args: Args) -> list[str]:
    """The options given that only the list's owner may use (an empty RulesJSON counts as absent)."""
    given = []
    rules = args.params.raw("rulesjson")
    if rules is not None and not (isinstance(rules, str) and not rules.strip()):
        given.append("rulesjson")
    given += [name for name in ("addtoglobalsuppression", "preview") if args.bool(name, default=False)]
    return [OWNER_ONLY[name] for name in given]


async def unsubscribe(args: Args, ctx: Context) -> dict[str, Any]:
    link = ctx.caller is None
    if link and (refused := owner_only_options(args)):
        raise AuthError(
            envelope.NOT_AUTHENTICATED, f"{', '.join(refused)}: the list owner's APIKey or SessionID is required"
        )
    request = audience_pb2.UnsubscribeSubscribersRequest(
        list_id=args.int("listid", required=True, min=1),
        ip_address=args.str("ipaddress", required=True, max_len=100),
        email_address=args.str("emailaddress", max_len=1000),
        subscriber_id=args.int("subscriberid", min=1),
        rules_operator=args.str("rulesoperator", max_len=16),
        add_to_suppression=args.bool("addtoglobalsuppression", default=False),
        preview=args.bool("preview", default=False),
    )
    if not request.email_address and not request.subscriber_id:
        rules = rules_list(args, "rulesjson")
        if rules is not None:
            request.rules.CopyFrom(rules)
    # The campaign, email and autoresponder an unsubscription came from are checked for form only:
    # Herald does not attribute unsubscriptions to them (delivery's tracking does).
    args.int("campaignid", min=1)
    args.int("emailid", min=1)
    args.int("autoresponderid", min=1)
    given = {p.name for p in args.problems}
    if (
        not request.email_address
        and not request.subscriber_id
        and not request.HasField("rules")
        and not (given & {"emailaddress", "subscriberid", "rulesjson"})
    ):
        args.problems.append(
            ParamError("selector", "missing", "EmailAddress, SubscriberID or RulesJSON is required")
        )
    # With credentials the call is the caller's, so the service checks that the list is theirs.
    # Without, the list decides whose subscriber this is, so the call is the translator's own.
    if link:
        ctx = dataclasses.replace(
            ctx, metadata=(*ctx.metadata, ("authorization", f"Bearer {ctx.identity.system_token()}"))
        )
    # Whether the subscriber is on the list (or already unsubscribed) is not told to a link.
    hidden = MEMBERSHIP_REASONS if link else frozenset()
    method = ctx.stubs.audience.UnsubscribeSubscribers
    if args.problems:
        checked = audience_pb2.UnsubscribeSubscribersRequest()
        checked.CopyFrom(request)
        checked.preview = True
        # A mixed answer lists every malformed parameter, the service's findings included; a dry run
        # (preview) gives them without changing anything.
        flagged = flagged_fields(args, UNSUBSCRIBE_FIELDS)
        if {"emailaddress", "subscriberid", "rulesjson"} & {p.name for p in args.problems}:
            flagged.append("subscriber_id")  # the selector was given, just malformed: not "missing"
        failure = await validate_only(ctx, method, checked, judged_fields=flagged, judged_reasons=hidden)
        raise Problems(args.problems, failure)
    try:
        await ctx.call(method, request)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in UNAVAILABLE_CODES or without(decode_error(exc), reasons=hidden) is not None:
            raise
        # Nobody on the list to unsubscribe, or already unsubscribed: a link's answer is the same as
        # when the subscriber was unsubscribed now.
    # Herald lists keep no unsubscription page to redirect to.
    return {"RedirectURL": ""}


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


# Segments -------------------------------------------------------------------------------------


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


# The table -----------------------------------------------------------------------------------

INVALID_PARAMETER_LIST = 31
CONFIRMATION_CODES = {
    "confirmationemail": 21,
    "CONFIRMATION_EMAIL_FIELD_REQUIRED": 21,
    "CONFIRMATION_EMAIL_CONTENT_TYPE_INVALID": 22,
    "CONFIRMATION_EMAIL_HTML_REQUIRED": 23,
    "CONFIRMATION_EMAIL_PLAIN_REQUIRED": 24,
    "CONFIRMATION_EMAIL_MODE_INVALID": 25,
    "CONFIRMATION_EMAIL_TEMPLATE_REQUIRED": 26,
    "confirmationemail.reltemplateid": 26,
    "CONFIRMATION_EMAIL_FAILED": 30,
}
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
}

# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

LIST_ID = Param("ListID", "integer", "ID of the list", required=True)
SUBSCRIBER_LIST_ID = Param("SubscriberListID", "integer", "ID of the list", required=True)
ORDER_TYPE = Param("OrderType", "string", "Sort direction", enum=("ASC", "DESC"))
RULES_JSON = Param(
    "RulesJSON", "json", "Rules as a JSON string: an array of groups of {type, operator, value} rules"
)
RULES_OPERATOR = Param("RulesOperator", "string", "How RulesJSON's groups combine", enum=("and", "or"))
CONTENT_NAMES = ("HTML", "Plain", "Both")
EMAIL_MODES = ("Empty", "Editor", "Template", "Import", "Unlayer", "Stripo")
LEGACY_INSTANT = "Y-m-d or Y-m-d H:i:s, UTC"
CONFIRMATION_EMAIL = Param(
    "ConfirmationEmail",
    "object",
    "A double opt-in confirmation email created with the list (both or neither)",
    fields=(
        Param("Subject", "string", required=True),
        Param("FromName", "string", required=True),
        Param("FromEmail", "string", required=True, format="email"),
        Param("ContentType", "string", required=True, enum=CONTENT_NAMES),
        Param("HTMLContent", "string", "Required for HTML and Both"),
        Param("PlainContent", "string", "Required for Plain and Both"),
        Param("ReplyToName", "string"),
        Param("ReplyToEmail", "string", format="email"),
        Param("PreHeaderText", "string"),
        Param("EmailName", "string", "Default: Confirmation email: <ListID>"),
        Param("Mode", "string", enum=EMAIL_MODES, default="Empty"),
        Param("RelTemplateID", "integer", "Required for Template mode"),
    ),
)
LIST_CREATE_PARAMS = (
    Param("SubscriberListName", "string", "Name of the list", required=True),
    Param("Description", "string", "What the list is for"),
    Param("OptInMode", "string", "Double with a ConfirmationEmail", enum=("Single", "Double"), default="Single"),
    Param("SenderName", "string", "Sender name shown to subscribers"),
    Param("SenderEmailAddress", "string", "Sender address", format="email"),
    Param("SenderCompany", "string", "Sender company"),
    Param("SenderAddress", "string", "Sender postal address"),
    CONFIRMATION_EMAIL,
)
LISTS_GET_PARAMS = (
    Param("RecordsPerRequest", "integer", "Page size; 0 means all", default=0),
    Param("RecordsFrom", "integer", "Rows to skip", default=0),
    Param(
        "OrderField",
        "string",
        "Sort column (anything else: ListID)",
        enum=(
            "ListID",
            "Name",
            "CreatedOn",
            "ArchivedAt",
            "ActiveSubscriberCount",
            "SegmentCount",
            "LastActivityAt",
        ),
    ),
    ORDER_TYPE,
    Param("Search", "string", "Case-insensitive substring of the name or description"),
    Param(
        "Archived",
        "string",
        "Which lists: unarchived (false), archived (true) or all",
        enum=("false", "true", "all"),
    ),
)
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
    Param("CustomFields", "object", '{"<CustomFieldID>": value}: text or numbers'),
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
    Param("OptInConfirmationEmailID", "integer", "ID of the confirmation email to send"),
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
UNSUBSCRIBE_PARAMS = (
    LIST_ID,
    Param("IPAddress", "string", "Where the request came from", required=True),
    Param("EmailAddress", "string", "One subscriber by address", format="email"),
    Param("SubscriberID", "integer", "One subscriber by ID"),
    RULES_JSON,
    RULES_OPERATOR,
    Param(
        "AddToGlobalSuppression",
        "boolean",
        "Also suppress the addresses for the list's owner (the owner's credentials only)",
        default=False,
    ),
    Param("Preview", "boolean", "A dry run: change nothing (the owner's credentials only)", default=False),
    Param("CampaignID", "integer", "The campaign the request came from (checked for form only)"),
    Param("EmailID", "integer", "The email the request came from (checked for form only)"),
    Param("AutoResponderID", "integer", "The autoresponder the request came from (checked for form only)"),
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
        "list.create",
        create_list,
        permission="List.Create",
        shape="mixed",
        codes={
            "subscriberlistname": 1,
            "LIST_NAME_REQUIRED": 1,
            "LIST_NAME_TOO_LONG": 1,
            "optinmode": 20,
            "OPT_IN_MODE_INVALID": 20,
            **CONFIRMATION_CODES,
            **{
                key: INVALID_PARAMETER_LIST
                for key in (
                    "description",
                    "sendername",
                    "senderemailaddress",
                    "sendercompany",
                    "senderaddress",
                    "TEXT_INVALID",
                )
            },
        },
        texts={
            1: "Missing required parameter (SubscriberListName)",
            20: "Invalid OptInMode (Single or Double)",
            21: "Missing required field of ConfirmationEmail",
            22: "Invalid ConfirmationEmail ContentType (HTML, Plain or Both)",
            23: "ConfirmationEmail HTMLContent is required for this ContentType",
            24: "ConfirmationEmail PlainContent is required for this ContentType",
            25: "Invalid ConfirmationEmail Mode",
            26: "ConfirmationEmail RelTemplateID is required for Template mode",
        },
        v1_alias=False,
        summary="Create a list, optionally with its double opt-in confirmation email",
        params=LIST_CREATE_PARAMS,
        returns=(
            Param("ListID", "integer", "ID of the new list", required=True),
            Param("ConfirmationEmailID", "integer", "With a ConfirmationEmail: its email's ID"),
        ),
    ),
    Command(
        "list.get",
        unary(lambda s: s.audience.GetList, get_list, render_get_list),
        permission="List.Get",
        shape="mixed",
        codes={"listid": 1, "LIST_ID_REQUIRED": 1, "LIST_NOT_FOUND": 1},
        texts={1: "Missing or unknown ListID"},
        v1_alias=False,
        summary="A list, with its subscriber and segment counts",
        params=(LIST_ID, Param("GetStats", "boolean", "Add Statistics to the list", default=False)),
        returns=(Param("List", "object", "The list row", required=True),),
    ),
    Command(
        "lists.get",
        unary(lambda s: s.audience.ListLists, list_lists, render_lists),
        permission="Lists.Get",
        shape="list",
        v1_alias=False,
        summary="List the caller's lists, filtered, sorted and paged",
        params=LISTS_GET_PARAMS,
        returns=(
            Param("TotalListCount", "integer", "Every match, whatever the page", required=True),
            Param("Lists", "array", "List rows", required=True),
        ),
    ),
    Command(
        "lists.delete",
        unary(lambda s: s.audience.DeleteLists, delete_lists, render_error_text),
        permission="List.Delete",
        shape="mixed",
        codes={"lists": 1, "LIST_IDS_REQUIRED": 1},
        texts={1: "Missing required parameter (Lists)"},
        v1_alias=False,
        summary="Delete lists",
        params=(Param("Lists", "integers", "List IDs, comma-separated or an array", required=True),),
        returns=(ERROR_TEXT,),
    ),
    Command(
        "subscriber.create",
        create_subscriber,
        permission="Subscribers.Import",
        shape="int",
        codes=SUBSCRIBER_CREATE_CODES,
        texts=SUBSCRIBER_CREATE_TEXTS,
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
        "subscriber.unsubscribe",
        unsubscribe,
        scope="optional",
        shape="mixed",
        rate_limit=RATE_LIMIT,
        codes={
            "listid:missing": 1,
            "listid:malformed": 4,
            "LIST_ID_REQUIRED": 1,
            "ipaddress": 2,
            "IP_ADDRESS_REQUIRED": 2,
            "IP_ADDRESS_INVALID": 2,
            "selector": 3,
            "subscriberid": 3,
            "SUBSCRIBER_SELECTOR_REQUIRED": 3,
            "LIST_NOT_FOUND": 4,
            "emailaddress": 6,
            "EMAIL_ADDRESS_INVALID": 6,
            "SUBSCRIBER_NOT_FOUND": 7,
            "rulesjson": 7,
            "rulesoperator": 7,
            "RULES_INVALID": 7,
            "campaignid": 8,
            "SUBSCRIBER_ALREADY_UNSUBSCRIBED": 9,
            "emailid": 10,
            "autoresponderid": 10,
            "RULE_TYPE_UNSUPPORTED": 11,
        },
        texts={
            1: "Missing required parameter (ListID)",
            2: "Missing or invalid IPAddress",
            3: "Missing EmailAddress, SubscriberID or RulesJSON",
            4: "Invalid ListID",
            6: "Invalid EmailAddress",
            8: "Invalid CampaignID",
            9: "Subscriber already unsubscribed",
            10: "Invalid EmailID",
        },
        v1_alias=False,
        summary=(
            "Unsubscribe one subscriber from a list (no credentials: the unsubscribe link), or many by "
            "RulesJSON (the list owner's credentials)"
        ),
        params=UNSUBSCRIBE_PARAMS,
        returns=(Param("RedirectURL", "string", "Always empty", required=True),),
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
