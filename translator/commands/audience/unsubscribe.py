"""The row for subscriber.unsubscribe: one subscriber through an unsubscribe link (no credentials), or many by
RulesJSON with the list owner's credentials (RULINGS 13). With a CampaignID the unsubscriptions count in that
campaign's statistics, for the subscribers it was sent to (delivery's RecordUnsubscriptions)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grpc
import structlog
from herald.audience.v1 import audience_pb2
from herald.delivery.v1 import delivery_pb2

from services.common.grpcutil import decode_error
from translator import envelope
from translator.commands import (
    UNAVAILABLE_CODES,
    Args,
    Command,
    Context,
    Param,
    Problems,
    flagged_fields,
    validate_only,
    without,
)
from translator.commands.audience.legacy import LIST_ID, RATE_LIMIT, RULES_JSON, RULES_OPERATOR, rules_list
from translator.envelope import AuthError
from translator.params import ParamError

log = structlog.get_logger()

# Legacy parameter → the field the service reports it under.
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
# Subscribers per RecordUnsubscriptions call (delivery's MAX_UNSUBSCRIBED_SUBSCRIBERS).
ATTRIBUTION_CHUNK = 10_000


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
    # The campaign (and its email) the unsubscription came from: it is counted in that campaign's statistics.
    campaign_id = args.int("campaignid", min=1)
    email_id = args.int("emailid", min=1)
    request.include_unsubscribed = campaign_id > 0
    # Herald has no autoresponders, so no AutoResponderID names one: there is nothing to count it in
    # (docs/legacy-mapping.md, the field audit). The unsubscription itself goes ahead.
    autoresponder_id = args.int("autoresponderid", min=1)
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
        response = await ctx.call(method, request)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in UNAVAILABLE_CODES or without(decode_error(exc), reasons=hidden) is not None:
            raise
        # Nobody on the list to unsubscribe, or already unsubscribed: a link's answer is the same as
        # when the subscriber was unsubscribed now (and nobody was unsubscribed now, so nothing is counted).
    else:
        if campaign_id and response.unsubscribed:
            await count_in_campaign(ctx, link, request.list_id, campaign_id, email_id, response.unsubscribed)
    if autoresponder_id:
        log.info("unsubscription names an autoresponder; Herald has none", autoresponder_id=autoresponder_id)
    # Herald lists keep no unsubscription page to redirect to.
    return {"RedirectURL": ""}


async def count_in_campaign(
    ctx: Context,
    link: bool,
    list_id: int,
    campaign_id: int,
    email_id: int,
    unsubscribed: Sequence[audience_pb2.UnsubscribedSubscriber],
) -> None:
    """Counts the subscribers just unsubscribed in the campaign's statistics, as delivery finds it was sent to them.

    The answer is the same whatever delivery records (a campaign not sent to them, another user's, one that does
    not exist): the unsubscription is done, and a stranger learns nothing about campaigns. Delivery's own checks
    keep a stranger from counting anything but real recipients of that list, each once. An owner's call is
    scoped to the owner's campaigns; a link's (the translator's own token, like its audience call) to the
    campaign's rows of this list's subscribers, which only the list's owner's campaigns have.
    """
    caller = ctx if link else ctx.as_translator()
    for start in range(0, len(unsubscribed), ATTRIBUTION_CHUNK):
        chunk = unsubscribed[start : start + ATTRIBUTION_CHUNK]
        try:
            recorded = await caller.call(
                ctx.stubs.delivery.RecordUnsubscriptions,
                delivery_pb2.RecordUnsubscriptionsRequest(
                    campaign_id=campaign_id,
                    list_id=list_id,
                    email_id=email_id,
                    subscribers=[
                        delivery_pb2.UnsubscribedSubscriber(
                            subscriber_id=subscriber.subscriber_id, email_address=subscriber.email_address
                        )
                        for subscriber in chunk
                    ],
                ),
            )
        except grpc.aio.AioRpcError as exc:
            # The unsubscriptions stand; only their count in the campaign is missing, so the answer stays a success.
            log.error(
                "unsubscriptions not counted in the campaign",
                campaign_id=campaign_id,
                list_id=list_id,
                subscribers=len(chunk),
                code=exc.code().name,
                error=exc.details(),
            )
            return
        log.info(
            "unsubscriptions counted in the campaign",
            campaign_id=campaign_id,
            list_id=list_id,
            subscribers=len(chunk),
            recorded=recorded.recorded_count,
        )


# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

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
    Param(
        "CampaignID",
        "integer",
        "The campaign the request came from: the unsubscription counts in its TotalUnsubscriptions when it was "
        "sent to the subscriber",
    ),
    Param(
        "EmailID",
        "integer",
        "With CampaignID: counts only when this is the email (A/B variation) the subscriber was sent",
    ),
    Param(
        "AutoResponderID",
        "integer",
        "Checked for form; Herald has no autoresponders, so the unsubscription counts in none",
    ),
    Param(
        "Channel",
        "string",
        "No counterpart: Herald sends by email only and keeps no subscription per channel; the subscriber is "
        "unsubscribed from the list whatever it says",
    ),
    Param(
        "BypassListSuppressionSettings",
        "boolean",
        "No counterpart: Herald lists have no suppression settings to apply or bypass; an unsubscription "
        "suppresses the address only with AddToGlobalSuppression",
        default=False,
    ),
)

ROWS = [
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
]
