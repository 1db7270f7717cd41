"""The `herald` command: run everything, serve one service, manage users, admins, DKIM sending domains and email templates, mint principal tokens."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import uvloop
from pydantic import ValidationError

from services.common.config import SERVICES, Settings, get_settings
from services.common.logging import configure_logging

# gRPC core's own pollers instead of its EventEngine threads for channels and listening sockets:
# the thread that polls the completion queue then does the socket work itself, which saves thread
# wake-ups on every call and 10-15% of a cheap call's CPU in grpc.aio (see the README's benchmarks).
# gRPC reads it once, when it loads: it is set here, before anything imports grpc (nothing above
# does). An operator's own GRPC_EXPERIMENTS wins.
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)

# Processes that are not a service's main module, by the name `herald serve` knows them.
ENTRY_MODULES = {
    "translator": "translator.main",
    "mail-capture": "services.delivery.capture",
    "bounce-receiver": "services.delivery.bounce_receiver",
    "delivery-worker": "services.delivery.worker",
}
SERVABLE = (*SERVICES, *ENTRY_MODULES)


@contextmanager
def database(settings: Settings, command: str) -> Iterator[Settings]:
    """Settings with a DATABASE_URL: the configured one, or the embedded cluster's.

    While `herald run` (or another command) holds the data directory, this uses its PostgreSQL and never
    stops it. Otherwise it takes the data directory's lock for the command's duration, so that no
    `herald run` starts meanwhile and mistakes the server for a leftover, and stops the server after
    if it started it.
    """
    if settings.database_url:
        yield settings
        return
    from services.common.embedded import EmbeddedPostgres
    from services.datadir import DataDirInUse, DataDirLock

    try:
        lock: DataDirLock | None = DataDirLock.acquire(settings.data_dir, command)
    except DataDirInUse:
        lock = None
    postgres = EmbeddedPostgres(settings.data_dir / "pg")
    try:
        url = postgres.start()
        yield settings.model_copy(update={"database_url": url})
    finally:
        if lock is not None:
            if postgres.started:
                postgres.stop()
            lock.release()


def _serve(settings: Settings, name: str) -> None:
    from services.common import tracing

    try:
        traced = tracing.start(name)
    except ValueError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    configure_logging(settings.log_level, settings.log_format, process=name, trace_ids=traced)
    from services.common import logging as herald_logging

    herald_logging.repeat_seconds = settings.log_repeat_seconds
    from services.common import metrics

    metrics.start(settings, name)
    module = importlib.import_module(ENTRY_MODULES.get(name, f"services.{name}.main"))
    entry: Callable[[Settings], Coroutine[Any, Any, None]] = module.main
    # The modules' objects live as long as the process: full collections need not scan them again.
    gc.freeze()
    # uvloop roughly halves the event loop's own cost per request in aiohttp, grpc.aio and psycopg.
    uvloop.run(entry(settings))


class CommandFailed(Exception):
    """A management command could not do its work; the message is the one line the user sees."""


def _fail(message: str, status: int = 1) -> NoReturn:
    # Every failure is one line on stderr, JSON like the answers on stdout, and a non-zero exit.
    print(json.dumps({"Error": message}), file=sys.stderr)
    raise SystemExit(status)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (pointing at --help) rather than the usage text."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{self.prog}: {message} (see {self.prog} --help)", 2)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _identity(settings: Settings, command: str, action: Callable[[Any], Awaitable[Any]]) -> None:
    from sqlalchemy.exc import DBAPIError

    from translator import identity

    # stdout carries only the JSON answer, so scripts can parse it; logs go to stderr.
    configure_logging("WARNING", "console", process="herald")

    async def go(s: Settings) -> Any:
        store = await identity.IdentityStore.open(s)
        try:
            return await action(store)
        finally:
            await store.close()

    with database(settings, command) as s:
        try:
            result = asyncio.run(go(s))
        except (identity.IdentityError, ValueError) as exc:
            # ValueError: a DATABASE_URL that is no PostgreSQL URL.
            raise CommandFailed(str(exc)) from exc
        except (DBAPIError, OSError) as exc:
            # psycopg's own message names the host and what went wrong; SQLAlchemy's wrapper adds lines.
            raise CommandFailed(f"database unreachable: {_first_line(getattr(exc, 'orig', None) or exc)}") from exc
    # A token is printed bare so that it drops into `-H "authorization: Bearer $(herald token mint ...)"`.
    print(result["Token"] if isinstance(result, dict) and "Token" in result else json.dumps(result))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _grpc_status(args: argparse.Namespace) -> None:
    from services import status_details

    text = sys.stdin.read() if args.value in (None, "-") else args.value
    try:
        decoded = status_details.explain(text, args.type)
    except ValueError as exc:
        raise CommandFailed(str(exc)) from exc
    print(json.dumps(decoded, indent=2, ensure_ascii=False))


def _parser() -> _Parser:
    parser = _Parser(prog="herald", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the whole system in the foreground")
    serve = commands.add_parser("serve", help="run one service (how Herald is deployed beyond one machine)")
    serve.add_argument("service", choices=SERVABLE)

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    user_create = user.add_parser("create", help="create a user; prints {UserID, APIKey}")
    user_create.add_argument("--username", required=True)
    user_create.add_argument("--password", required=True)
    user_create.add_argument("--email", default="")
    user_create.add_argument(
        "--permissions", default="*", help="comma-separated permission names, or * for all (default)"
    )
    user_create.add_argument("--untrusted", action="store_true", help="campaigns need an admin's approval")

    user_update = user.add_parser("update", help="change a user's attributes; prints {UserID, Untrusted}")
    user_update.add_argument("--user", type=_positive, required=True, help="user id")
    trust = user_update.add_mutually_exclusive_group(required=True)
    trust.add_argument("--untrusted", dest="untrusted", action="store_true", help="campaigns need approval")
    trust.add_argument("--trusted", dest="untrusted", action="store_false", help="campaigns need no approval")

    reissue = user.add_parser(
        "reissue-key",
        help="replace a user's API key (a lost one cannot be shown again); prints {UserID, Username, APIKey}. "
        "The old key stops working within 5 s (the translators' look-up cache)",
    )
    whose = reissue.add_mutually_exclusive_group(required=True)
    whose.add_argument("--user", type=_positive, help="user id")
    whose.add_argument("--username", help="username (any case)")
    user.add_parser("list", help="list users as JSON (no password or key hashes)")

    admin = commands.add_parser("admin", help="manage admins").add_subparsers(dest="action", required=True)
    admin_create = admin.add_parser("create", help="create an admin; prints {AdminID, AdminAPIKey}")
    admin_create.add_argument("--username", required=True)
    admin_create.add_argument("--password", required=True)

    token = commands.add_parser("token", help="principal tokens").add_subparsers(dest="action", required=True)
    mint = token.add_parser("mint", help="mint a principal token for direct gRPC callers")
    who = mint.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=_positive, help="user id")
    who.add_argument("--admin", type=_positive, help="admin id")
    mint.add_argument("--ttl", type=_positive, default=3600, help="lifetime in seconds (default 3600)")

    decode = commands.add_parser(
        "grpc-status",
        help="decode a gRPC error's details: buf curl's error output, or a base64 grpc-status-details-bin",
    )
    decode.add_argument("value", nargs="?", help="the error text or base64 value; - or nothing reads stdin")
    decode.add_argument(
        "--type", default="", help="decode VALUE as one detail of this type (e.g. google.rpc.BadRequest)"
    )

    from services.audience import import_client
    from services.campaign import template_client
    from services.delivery import dkim_client, event_webhook_client

    dkim = commands.add_parser("dkim", help="DKIM sending domains").add_subparsers(dest="action", required=True)
    dkim_client.add_arguments(dkim, _positive)
    webhooks = commands.add_parser(
        "webhooks", help="event webhook endpoints: a user's events POSTed, signed, to their URLs"
    ).add_subparsers(dest="action", required=True)
    event_webhook_client.add_arguments(webhooks, _positive)
    template = commands.add_parser(
        "template", help="email templates, which emails copy in Template mode"
    ).add_subparsers(dest="action", required=True)
    template_client.add_arguments(template, _positive)

    subscribers = commands.add_parser("subscribers", help="subscribers of lists").add_subparsers(
        dest="action", required=True
    )
    import_client.add_arguments(
        subscribers.add_parser(
            "import", help="stream a CSV file into a list with a progress bar; prints the import's report as JSON"
        )
    )

    return parser


def main(argv: list[str] | None = None) -> None:
    from services.audience import import_client

    args = _parser().parse_args(argv)
    if args.command == "grpc-status":
        _manage(lambda: _grpc_status(args))
        return
    try:
        settings = get_settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        _fail(f"invalid setting {name if name.isupper() else 'HERALD_' + name.upper()}: {error['msg']}")
    if args.command == "run":
        from services.supervisor import run

        raise SystemExit(run(settings))
    if args.command == "serve":
        _serve(settings, args.service)
        return
    if args.command == "subscribers":
        exit_status: list[int] = []
        _manage(lambda: exit_status.append(import_client.run_import(settings, args)))
        raise SystemExit(exit_status[0])
    if args.command in ("dkim", "template", "webhooks"):
        from services import cli_calls
        from services.campaign import template_client
        from services.delivery import dkim_client, event_webhook_client

        client = {"dkim": dkim_client, "template": template_client, "webhooks": event_webhook_client}[args.command]

        def service_command() -> None:
            try:
                _identity(settings, f"herald {args.command} {args.action}", client.action(args, settings))
            except cli_calls.CallFailed as exc:
                raise CommandFailed(str(exc)) from exc

        _manage(service_command)
        return
    _manage(lambda: _identity(settings, f"herald {args.command} {args.action}", _identity_action(args)))


def _identity_action(args: argparse.Namespace) -> Callable[[Any], Awaitable[Any]]:
    """What a user, admin or token command asks of the identity store."""
    if args.command == "user" and args.action == "update":
        return lambda store: store.set_untrusted(args.user, args.untrusted)
    if args.command == "user" and args.action == "reissue-key":
        return lambda store: store.reissue_key(user_id=args.user, username=args.username or "")
    if args.command == "user" and args.action == "list":
        return lambda store: store.list_users()
    if args.command == "user":
        permissions = [p.strip() for p in args.permissions.split(",") if p.strip()]
        return lambda store: store.create_user(
            args.username, args.password, permissions=permissions, email=args.email, untrusted=args.untrusted
        )
    if args.command == "admin":
        return lambda store: store.create_admin(args.username, args.password)
    return lambda store: store.mint_for(user_id=args.user, admin_id=args.admin, ttl=args.ttl)


def _manage(command: Callable[[], None]) -> None:
    """Runs a management command: any failure is one line on stderr and exit status 1, never a traceback."""
    try:
        command()
    except CommandFailed as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        _fail(f"{type(exc).__name__}: {_first_line(exc)}")


if __name__ == "__main__":
    main()
