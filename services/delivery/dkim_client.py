"""`herald dkim add|list|remove`: a user's DKIM sending domains through DeliveryService; `add` prints the DNS TXT record to publish.

The command calls as the user it names (a token minted from the identity store, which also tells a
user id that does not exist), so it can do no more than that user could; `list` without `--user`
lists every user's domains as an admin. Answers are JSON on stdout; a failure is one JSON line on
stderr (services/cli.py).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services import cli_calls
from services.common.config import Settings

if TYPE_CHECKING:
    from translator.identity import IdentityStore


# A TXT record's strings hold at most 255 characters each (RFC 1035 §3.3.14); a 2048-bit key needs two.
TXT_STRING_LENGTH = 255


def add_arguments(dkim: argparse._SubParsersAction[Any], positive: Callable[[str], int]) -> None:
    add = dkim.add_parser(
        "add", help="add a sending domain: generates its key; prints the DNS TXT record to publish"
    )
    add.add_argument("--user", type=positive, required=True, help="user id (whose campaigns are signed)")
    add.add_argument("--domain", required=True, help="the From domain to sign for (example.com)")
    add.add_argument(
        "--selector", required=True, help="the DKIM selector: the record is <selector>._domainkey.<domain>"
    )
    listing = dkim.add_parser("list", help="list sending domains with their DNS records (never a private key)")
    listing.add_argument("--user", type=positive, help="user id (default: every user's)")
    remove = dkim.add_parser(
        "remove", help="remove a sending domain and its key; later mail from it is not signed"
    )
    remove.add_argument("--user", type=positive, required=True, help="user id")
    remove.add_argument("--domain", required=True)


def zone_file_line(name: str, value: str) -> str:
    """The record as a zone file line, the value cut into quoted strings of at most 255 characters."""
    strings = " ".join(f'"{part}"' for part in textwrap.wrap(value, TXT_STRING_LENGTH, drop_whitespace=False))
    return f"{name}. IN TXT ( {strings} )"


def shown(domain: delivery_pb2.SendingDomain) -> dict[str, Any]:
    """A sending domain as the command prints it."""
    return {
        "UserID": domain.owner_user_id,
        "Domain": domain.domain,
        "Selector": domain.selector,
        "DnsRecord": {"Name": domain.dns_record_name, "Type": "TXT", "Value": domain.dns_txt_value},
        "ZoneFileLine": zone_file_line(domain.dns_record_name, domain.dns_txt_value),
        "CreatedOn": domain.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
    }


async def _call(settings: Settings, token: str, rpc: Callable[[Any], Any], request: Message) -> Any:
    return await cli_calls.call(settings, "delivery", delivery_pb2_grpc.DeliveryServiceStub, token, rpc, request)


def action(args: argparse.Namespace, settings: Settings) -> Callable[[IdentityStore], Awaitable[Any]]:
    """What `herald dkim <action>` does with the identity store (a user's token) and the delivery service."""

    async def add(store: IdentityStore) -> Any:
        token = await cli_calls.user_token(store, args.user)
        created = await _call(
            settings,
            token,
            lambda stub: stub.CreateSendingDomain,
            delivery_pb2.CreateSendingDomainRequest(domain=args.domain, selector=args.selector),
        )
        return shown(created)

    async def listing(store: IdentityStore) -> Any:
        token = (
            cli_calls.admin_token(settings) if args.user is None else await cli_calls.user_token(store, args.user)
        )
        found = await _call(
            settings, token, lambda stub: stub.ListSendingDomains, delivery_pb2.ListSendingDomainsRequest()
        )
        return [shown(domain) for domain in found.sending_domains]

    async def remove(store: IdentityStore) -> Any:
        from services.delivery import dkim  # the key and signing libraries only where they are needed

        token = await cli_calls.user_token(store, args.user)
        await _call(
            settings,
            token,
            lambda stub: stub.DeleteSendingDomain,
            delivery_pb2.DeleteSendingDomainRequest(domain=args.domain),
        )
        return {"UserID": args.user, "Domain": dkim.normalized_domain(args.domain), "Removed": True}

    actions: dict[str, Callable[[IdentityStore], Awaitable[Any]]] = {"add": add, "list": listing, "remove": remove}
    return actions[args.action]
