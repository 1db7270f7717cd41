"""The `herald` command: run everything, serve one service, manage users and admins, mint principal tokens."""

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
from typing import Any

import uvloop

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
    "delivery-worker": "services.delivery.worker",
}
SERVABLE = (*SERVICES, *ENTRY_MODULES)


@contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings with a DATABASE_URL: the configured one, or the embedded cluster (started for this command if needed)."""
    if settings.database_url:
        yield settings
        return
    from services.common.embedded import EmbeddedPostgres

    postgres = EmbeddedPostgres(settings.data_dir / "pg")
    was_running = (postgres.directory / "postmaster.pid").exists()
    url = postgres.start()
    try:
        yield settings.model_copy(update={"database_url": url})
    finally:
        if not was_running:
            postgres.stop()


def _serve(settings: Settings, name: str) -> None:
    configure_logging(settings.log_level, settings.log_format, process=name)
    module = importlib.import_module(ENTRY_MODULES.get(name, f"services.{name}.main"))
    entry: Callable[[Settings], Coroutine[Any, Any, None]] = module.main
    # The modules' objects live as long as the process: full collections need not scan them again.
    gc.freeze()
    # uvloop roughly halves the event loop's own cost per request in aiohttp, grpc.aio and psycopg.
    uvloop.run(entry(settings))


def _identity(settings: Settings, action: Callable[[Any], Awaitable[dict[str, Any]]]) -> None:
    from translator import identity

    # stdout carries only the JSON answer, so scripts can parse it; logs go to stderr.
    configure_logging("WARNING", "console", process="herald")

    async def go(s: Settings) -> dict[str, Any]:
        store = await identity.IdentityStore.open(s)
        try:
            return await action(store)
        finally:
            await store.close()

    with database(settings) as s:
        try:
            result = asyncio.run(go(s))
        except identity.IdentityError as exc:
            print(json.dumps({"Error": str(exc)}), file=sys.stderr)
            raise SystemExit(1) from exc
    # A token is printed bare so that it drops into `-H "authorization: Bearer $(herald token mint ...)"`.
    print(result["Token"] if "Token" in result else json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="herald", description=__doc__)
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
    user_update.add_argument("--user", type=int, required=True, help="user id")
    trust = user_update.add_mutually_exclusive_group(required=True)
    trust.add_argument("--untrusted", dest="untrusted", action="store_true", help="campaigns need approval")
    trust.add_argument("--trusted", dest="untrusted", action="store_false", help="campaigns need no approval")

    admin = commands.add_parser("admin", help="manage admins").add_subparsers(dest="action", required=True)
    admin_create = admin.add_parser("create", help="create an admin; prints {AdminID, AdminAPIKey}")
    admin_create.add_argument("--username", required=True)
    admin_create.add_argument("--password", required=True)

    token = commands.add_parser("token", help="principal tokens").add_subparsers(dest="action", required=True)
    mint = token.add_parser("mint", help="mint a principal token for direct gRPC callers")
    who = mint.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="user id")
    who.add_argument("--admin", type=int, help="admin id")
    mint.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")

    from services.audience import import_client

    subscribers = commands.add_parser("subscribers", help="subscribers of lists").add_subparsers(
        dest="action", required=True
    )
    import_client.add_arguments(
        subscribers.add_parser(
            "import", help="stream a CSV file into a list with a progress bar; prints the import's report as JSON"
        )
    )

    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "run":
        from services.supervisor import run

        raise SystemExit(run(settings))
    if args.command == "serve":
        _serve(settings, args.service)
        return
    if args.command == "subscribers":
        raise SystemExit(import_client.run_import(settings, args))
    if args.command == "user" and args.action == "update":
        _identity(settings, lambda store: store.set_untrusted(args.user, args.untrusted))
    elif args.command == "user":
        permissions = [p.strip() for p in args.permissions.split(",") if p.strip()]
        _identity(
            settings,
            lambda store: store.create_user(
                args.username, args.password, permissions=permissions, email=args.email, untrusted=args.untrusted
            ),
        )
    elif args.command == "admin":
        _identity(settings, lambda store: store.create_admin(args.username, args.password))
    elif args.command == "token":
        _identity(settings, lambda store: store.mint_for(user_id=args.user, admin_id=args.admin, ttl=args.ttl))


if __name__ == "__main__":
    main()
