"""`herald template create|list|show|update|delete`: a user's email templates through TemplateService.

`create` calls as the user it names (a token minted from the identity store, which also tells a user id
that does not exist), so it can do no more than that user could. The other actions do the same with
`--user`, and act as an admin without it (every user's templates). Bodies come from files, or from stdin
for `-`. Answers are JSON on stdout; a failure is one JSON line on stderr (services/cli.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from herald.campaign.v1 import template_pb2, template_pb2_grpc

from services import cli_calls
from services.common.config import Settings

if TYPE_CHECKING:
    from translator.identity import IdentityStore

# Option -> Template field, for the texts given on the command line and the bodies read from files.
TEXT_OPTIONS = {"name": "name", "subject": "subject", "preheader": "preheader_text"}
FILE_OPTIONS = {"html": "html_content", "text": "plain_content"}
LIST_PAGE_SIZE = 100


def add_arguments(template: argparse._SubParsersAction[Any], positive: Callable[[str], int]) -> None:
    create = template.add_parser("create", help="create a template; prints it as JSON")
    create.add_argument("--user", type=positive, required=True, help="user id (who owns the template)")
    create.add_argument("--name", required=True)
    _content_arguments(create)
    listing = template.add_parser("list", help="list templates without their bodies, by id")
    listing.add_argument("--user", type=positive, help="user id (default: every user's)")
    show = template.add_parser("show", help="print one template with its bodies")
    update = template.add_parser("update", help="change the fields given; prints the template")
    update.add_argument("--name")
    _content_arguments(update)
    delete = template.add_parser("delete", help="delete a template; emails made from it keep their copy")
    for parser in (show, update, delete):
        parser.add_argument("--id", type=positive, required=True, help="template id")
        parser.add_argument("--user", type=positive, help="user id (default: any user's, as an admin)")


def _content_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject")
    parser.add_argument("--preheader", help="pre-header text")
    parser.add_argument("--html", metavar="FILE", help="file with the HTML body; - reads stdin")
    parser.add_argument("--text", metavar="FILE", help="file with the plain-text body; - reads stdin")


def given_fields(args: argparse.Namespace) -> dict[str, str]:
    """The Template fields the options give, bodies read from their files (UTF-8); CallFailed when one cannot be."""
    if [getattr(args, option, None) for option in FILE_OPTIONS].count("-") > 1:
        raise cli_calls.CallFailed("only one of --html and --text can read stdin")
    fields = {
        field: value
        for option, field in TEXT_OPTIONS.items()
        if (value := getattr(args, option, None)) is not None
    }
    for option, field in FILE_OPTIONS.items():
        source = getattr(args, option, None)
        if source is not None:
            fields[field] = _read(option, source)
    return fields


def _read(option: str, source: str) -> str:
    try:
        return sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise cli_calls.CallFailed(f"cannot read --{option} {source}: {exc}") from exc


def shown(template: template_pb2.Template, *, bodies: bool = True) -> dict[str, Any]:
    """A template as the command prints it (the names email.get uses for an email's content)."""
    row: dict[str, Any] = {
        "TemplateID": template.template_id,
        "UserID": template.owner_user_id,
        "Name": template.name,
        "Subject": template.subject,
        "PreHeaderText": template.preheader_text,
    }
    if bodies:
        row["HTMLContent"] = template.html_content
        row["PlainContent"] = template.plain_content
    row["CreatedOn"] = template.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    row["UpdatedOn"] = template.update_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    return row


def _template(fields: dict[str, str], template_id: int = 0) -> template_pb2.Template:
    template = template_pb2.Template(template_id=template_id)
    for field, value in fields.items():
        setattr(template, field, value)
    return template


async def _call(settings: Settings, token: str, rpc: Callable[[Any], Any], request: Message) -> Any:
    return await cli_calls.call(settings, "campaign", template_pb2_grpc.TemplateServiceStub, token, rpc, request)


def action(args: argparse.Namespace, settings: Settings) -> Callable[[IdentityStore], Awaitable[Any]]:
    """What `herald template <action>` does with the identity store (a user's token) and the campaign service."""

    async def token_of(store: IdentityStore) -> str:
        return (
            cli_calls.admin_token(settings) if args.user is None else await cli_calls.user_token(store, args.user)
        )

    async def create(store: IdentityStore) -> Any:
        fields = given_fields(args)
        token = await cli_calls.user_token(store, args.user)
        request = template_pb2.CreateTemplateRequest(template=_template(fields))
        return shown(await _call(settings, token, lambda stub: stub.CreateTemplate, request))

    async def listing(store: IdentityStore) -> Any:
        token = await token_of(store)
        rows: list[dict[str, Any]] = []
        page_token = ""
        while True:
            request = template_pb2.ListTemplatesRequest(page_size=LIST_PAGE_SIZE, page_token=page_token)
            page = await _call(settings, token, lambda stub: stub.ListTemplates, request)
            rows += [shown(template, bodies=False) for template in page.templates]
            page_token = page.next_page_token
            if not page_token:
                return rows

    async def show(store: IdentityStore) -> Any:
        token = await token_of(store)
        request = template_pb2.GetTemplateRequest(template_id=args.id)
        return shown(await _call(settings, token, lambda stub: stub.GetTemplate, request))

    async def update(store: IdentityStore) -> Any:
        fields = given_fields(args)
        if not fields:
            raise cli_calls.CallFailed("nothing to change: give --name, --subject, --preheader, --html or --text")
        token = await token_of(store)
        request = template_pb2.UpdateTemplateRequest(
            template=_template(fields, template_id=args.id),
            # Named explicitly, so that an empty value (--subject "") clears its field.
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
        )
        return shown(await _call(settings, token, lambda stub: stub.UpdateTemplate, request))

    async def delete(store: IdentityStore) -> Any:
        token = await token_of(store)
        request = template_pb2.DeleteTemplateRequest(template_id=args.id)
        await _call(settings, token, lambda stub: stub.DeleteTemplate, request)
        return {"TemplateID": args.id, "Deleted": True}

    actions: dict[str, Callable[[IdentityStore], Awaitable[Any]]] = {
        "create": create,
        "list": listing,
        "show": show,
        "update": update,
        "delete": delete,
    }
    return actions[args.action]
