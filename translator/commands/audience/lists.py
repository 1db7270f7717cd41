"""Rows for the list commands: list.create (with its double opt-in confirmation email), list.get, lists.get
and lists.delete."""

from __future__ import annotations

from typing import Any

from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import email_pb2

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
)
from translator.commands.audience.legacy import (
    LIST_ID,
    ORDER_TYPE,
    UNKNOWN_ENUM,
    field_instant,
    lenient_int,
    scalar_text,
)
from translator.commands.email import CONTENT_TYPE_NAMES, MODE_BY_LEGACY, MODE_NAMES, TEXT_FIELDS
from translator.params import ParamError, legacy_name

OPT_IN_NAMES = {audience_pb2.OPT_IN_MODE_SINGLE: "Single", audience_pb2.OPT_IN_MODE_DOUBLE: "Double"}
OPT_IN_BY_LEGACY = {name.lower(): mode for mode, name in OPT_IN_NAMES.items()}
# A confirmation email is an email: its fields are email.update's (but the import URLs and free contents).
CONFIRMATION_TEXTS = {
    name: path
    for name, path in TEXT_FIELDS.items()
    if name not in ("fetchurl", "fetchplainurl", "extracontent1", "extracontent2")
}
CONTENT_TYPES = {name.lower(): content_type for content_type, name in CONTENT_TYPE_NAMES.items()}
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
    for key, attribute in CONFIRMATION_TEXTS.items():
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
        email.mode = MODE_BY_LEGACY.get(legacy_name(str(mode)), UNKNOWN_ENUM)
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
        request.opt_in_mode = OPT_IN_BY_LEGACY.get(mode.strip().lower(), UNKNOWN_ENUM)
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

# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

CONTENT_NAMES = tuple(CONTENT_TYPE_NAMES.values())
EMAIL_MODES = tuple(MODE_NAMES.values())
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
]
