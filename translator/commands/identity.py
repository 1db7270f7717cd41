"""Rows for the login commands, which need no credentials and talk to the identity store, not to a service.

Failed logins are throttled per username and per client address (the identity store raises
RateLimited, answered as the legacy 429 with Retry-After, before any password is checked).
"""

from __future__ import annotations

from typing import Any

from translator.commands import Args, Command, Context
from translator.envelope import LegacyError


async def user_login(args: Args, ctx: Context) -> dict[str, Any]:
    api_key = args.str("apikey")
    username, password = args.str("username"), args.str("password")
    if not api_key:
        problems = [(1, "Missing Username")] if not username else []
        problems += [(2, "Missing Password")] if not password else []
        if problems:
            raise LegacyError([c for c, _ in problems], [t for _, t in problems])
    result = await ctx.identity.login_user(
        username=username, password=password, api_key=api_key, client=ctx.client_address
    )
    if result is None:
        raise LegacyError([3], ["Invalid login information"])
    return {"ErrorText": "", **result}


async def admin_login(args: Args, ctx: Context) -> dict[str, Any]:
    api_key = args.str("adminapikey")
    username, password = args.str("username"), args.str("password")
    if not api_key and not (username and password):
        missing = "Username" if not username else "Password"
        raise LegacyError([3], [f"Missing {missing}"])
    result = await ctx.identity.login_admin(
        username=username, password=password, api_key=api_key, client=ctx.client_address
    )
    if result is None:
        raise LegacyError([3], ["Invalid login information"])
    return {"ErrorText": "", **result}


ROWS = [
    Command("user.login", user_login, scope="none", shape="list"),
    Command("admin.login", admin_login, scope="none", shape="int"),
]
