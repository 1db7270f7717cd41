"""The row for subscriber.subscribe: the public subscription form's call, without credentials.

The list decides whose subscriber this is, so the call to the audience service is the translator's own
(as for an unsubscribe link). Calls count against a per-client-address limit. The answers say what a
form would: a value that is wrong, or that the address is already on the list (code 9, which the
contract names); never the existing subscriber's status, ID or data (docs/legacy-mapping.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from herald.audience.v1 import audience_pb2

from services.common.grpcutil import decode_error
from translator.commands import (
    UNAVAILABLE_CODES,
    Args,
    Command,
    Context,
    Param,
    Problems,
    flagged_fields,
    validate_only,
)
from translator.commands.audience.legacy import RATE_LIMIT, field_value_text, scalar_text
from translator.commands.audience.subscribers import STATUS_NAMES
from translator.envelope import LegacyError
from translator.params import ParamError

# CustomField<ID> parameters (lower-cased names, as the dispatcher has them).
CUSTOM_FIELD_FAMILY = r"customfield[0-9]{1,18}"
# Legacy parameter → the field the service reports it under.
SUBSCRIBE_FIELDS = {"listid": "list_id", "emailaddress": "email_address", "ipaddress": "ip_address"}
REQUIRED_FIELD_MISSING = 6


def list_id_of(args: Args) -> int:
    """ListID: an ID, or a comma-separated string of IDs of which Herald takes exactly one: it subscribes
    to one list per call rather than to the others unchecked, as the legacy server did."""
    raw = args.params.raw("listid")
    if not (isinstance(raw, str) and "," in raw):
        return args.int("listid", required=True, min=1)
    ids = [item.strip() for item in raw.split(",") if item.strip()]
    if len(ids) != 1:
        if ids:
            args.problems.append(ParamError("listid", "malformed", "ListID names one list per call"))
        else:
            args.problems.append(ParamError("listid", "missing", "ListID is required"))
        return 0
    text = ids[0]
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and int(text) > 0):
        args.problems.append(ParamError("listid", "malformed", "ListID must be a list ID"))
        return 0
    return int(text)


def subscribe_request(args: Args) -> audience_pb2.SubscribeSubscriberRequest:
    request = audience_pb2.SubscribeSubscriberRequest(
        list_id=list_id_of(args),
        email_address=args.str("emailaddress", required=True, max_len=1000),
        ip_address=args.str("ipaddress", required=True, max_len=100),
        enforce_required_fields=args.bool("enforcerequiredfields", default=False),
        source=scalar_text(args.params.raw("source")) or "",
        source_ref=scalar_text(args.params.raw("sourceref")) or "",
    )
    for name in args.params.names_in(SUBSCRIBE.parameter_families[0]):
        value = args.params.raw(name)
        if value is None:
            continue
        text = field_value_text(value)
        if text is None:
            args.problems.append(
                ParamError("customfield", "malformed", f"{name} must be text, a number or a list of them")
            )
            continue
        request.custom_fields[name.removeprefix("customfield")] = text
    return request


async def subscribe(args: Args, ctx: Context) -> dict[str, Any]:
    request = subscribe_request(args)
    ctx = dataclasses.replace(
        ctx, metadata=(*ctx.metadata, ("authorization", f"Bearer {ctx.identity.system_token()}"))
    )
    method = ctx.stubs.audience.SubscribeSubscriber
    if args.problems:
        # An int answer is the first failing check in code order, so the service's verdict on the rest counts.
        request.validate_only = True
        failure = await validate_only(ctx, method, request, judged_fields=flagged_fields(args, SUBSCRIBE_FIELDS))
        raise _legacy_error(Problems(args.problems, failure))
    try:
        subscriber = await ctx.call(method, request)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in UNAVAILABLE_CODES:
            raise
        raise _legacy_error(Problems([], decode_error(exc))) from exc
    return {
        "SubscriberID": subscriber.subscriber_id,
        # Herald lists keep no confirmation page to redirect to.
        "RedirectURL": "",
        "Subscriber": {
            "SubscriberID": subscriber.subscriber_id,
            "EmailAddress": subscriber.email_address,
            "SubscriptionStatus": STATUS_NAMES.get(subscriber.status, "Subscribed"),
        },
    }


def _legacy_error(problems: Problems) -> Exception:
    """The command's answer to the problems; a required field that is missing (6) names the field in
    ErrorCustomFieldID and ErrorCustomFieldTitle, as the contract's example does. An error without a legacy
    code goes back to the dispatcher, which answers it as a fault."""
    error = SUBSCRIBE.legacy_error(problems)
    if error is None:
        return problems
    failure = problems.failure
    if (
        min(error.codes) == REQUIRED_FIELD_MISSING
        and failure is not None
        and "custom_field_id" in failure.metadata
    ):
        error = LegacyError(
            error.codes,
            error.texts,
            {
                "ErrorCustomFieldID": int(failure.metadata["custom_field_id"]),
                "ErrorCustomFieldTitle": failure.metadata.get("custom_field_name", ""),
            },
            malformed=error.malformed,
        )
    return error


# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

SUBSCRIBE_PARAMS = (
    Param("ListID", "integer", "ID of the list (one; a comma-separated string may name only one)", required=True),
    Param("EmailAddress", "string", "The subscriber's address", required=True, format="email"),
    Param("IPAddress", "string", "The subscriber's IP address (stored as SubscriptionIP)", required=True),
    Param(
        "CustomField<ID>",
        "string",
        "A custom field's value (CustomField12=...); a list of option values for Checkboxes, YYYY-MM-DD for a "
        "Date field. Checked for the field's type, then its required, validation and uniqueness rules",
        family=CUSTOM_FIELD_FAMILY,
    ),
    Param(
        "EnforceRequiredFields",
        "boolean",
        "Also report required fields that were not sent at all (6); a list field with a default is not missing",
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
)

SUBSCRIBE = Command(
    "subscriber.subscribe",
    subscribe,
    scope="none",
    shape="int",
    rate_limit=RATE_LIMIT,
    codes={
        "listid:missing": 1,
        "LIST_ID_REQUIRED": 1,
        "emailaddress:missing": 2,
        "EMAIL_ADDRESS_REQUIRED": 2,
        "ipaddress": 3,
        "IP_ADDRESS_REQUIRED": 3,
        "IP_ADDRESS_INVALID": 3,
        "listid:malformed": 4,
        "LIST_NOT_FOUND": 4,
        "emailaddress:malformed": 5,
        "EMAIL_ADDRESS_INVALID": 5,
        "CUSTOM_FIELD_REQUIRED": 6,
        "CUSTOM_FIELD_NOT_UNIQUE": 7,
        "customfield": 8,
        "CUSTOM_FIELD_INVALID": 8,
        "CUSTOM_FIELD_NOT_FOUND": 8,
        "CUSTOM_FIELD_VALUE_INVALID": 8,
        "CUSTOM_FIELD_VALIDATION_FAILED": 8,
        "SUBSCRIBER_ALREADY_EXISTS": 9,
    },
    texts={
        1: "Missing required parameter (ListID)",
        2: "Missing required parameter (EmailAddress)",
        3: "Missing or invalid IPAddress",
        4: "Invalid ListID",
        5: "Invalid EmailAddress",
        6: "Required custom field is missing",
        7: "Custom field value is not unique",
        8: "Invalid custom field value",
        9: "Duplicate email address",
    },
    cause_texts={"CUSTOM_FIELD_NOT_FOUND": "Unknown custom field"},
    v1_alias=False,
    summary="Subscribe an address to a list, as a public subscription form does (no credentials)",
    params=SUBSCRIBE_PARAMS,
    returns=(
        Param("SubscriberID", "integer", "The new subscriber", required=True),
        Param("RedirectURL", "string", "Always empty: Herald lists keep no confirmation page", required=True),
        Param(
            "Subscriber",
            "object",
            "The new subscriber: SubscriptionStatus is Opt-In Pending on a double opt-in list",
            required=True,
            fields=(
                Param("SubscriberID", "integer", required=True),
                Param("EmailAddress", "string", required=True),
                Param("SubscriptionStatus", "string", required=True, enum=("Subscribed", "Opt-In Pending")),
            ),
        ),
    ),
)

ROWS = [SUBSCRIBE]
