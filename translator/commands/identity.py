"""Rows for the login commands, which need no credentials and talk to the identity store, not to a service.

Failed logins are throttled per username and per client address (the identity store raises
RateLimited, answered as the legacy 429 with Retry-After, before any password is checked).
"""

from __future__ import annotations

from typing import Any

from translator.commands import ERROR_TEXT, Args, Command, Context, Param
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


# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

# Herald accounts have no two-factor authentication (AdminInfo's 2FA_Enabled is always false): as for an
# account without 2FA in the legacy product, a code sent along is not asked for and not checked.
TFA_CODE = Param(
    "TFACode",
    "string",
    "No counterpart: Herald accounts have no two-factor authentication, so no code is asked for or checked; "
    "the login is decided by the credentials above",
)
SESSION_ID = Param("SessionID", "string", "A session for the SessionID parameter of other commands", required=True)

ROWS = [
    Command(
        "user.login",
        user_login,
        scope="none",
        shape="list",
        # Raised by the handler itself; listed for the OpenAPI document.
        texts={1: "Missing Username", 2: "Missing Password", 3: "Invalid login information"},
        summary="Open a user session, with a username and password or with an API key",
        params=(
            Param("Username", "string", "Required unless APIKey is given"),
            Param("Password", "string", "Required unless APIKey is given", format="password"),
            Param("APIKey", "string", "Log in with the user's API key instead of a password"),
            TFA_CODE,
            Param(
                "TFARecoveryCode",
                "string",
                "No counterpart: Herald accounts have no two-factor authentication, so there is none to recover "
                "or disable; the login is decided by the credentials above",
            ),
        ),
        returns=(
            ERROR_TEXT,
            SESSION_ID,
            Param(
                "UserInfo",
                "object",
                "UserID, Username, EmailAddress, FirstName, LastName, AccountStatus, ...",
                required=True,
            ),
        ),
    ),
    Command(
        "admin.login",
        admin_login,
        scope="none",
        shape="int",
        texts={3: "Missing or invalid login information"},
        summary="Open an admin session, with a username and password or with an admin API key",
        params=(
            Param("Username", "string", "Required unless AdminAPIKey is given"),
            Param("Password", "string", "Required unless AdminAPIKey is given", format="password"),
            Param("AdminAPIKey", "string", "Log in with the admin's API key instead of a password"),
            TFA_CODE,
        ),
        returns=(
            ERROR_TEXT,
            SESSION_ID,
            Param(
                "AdminInfo",
                "object",
                "AdminID, Username, FirstName, LastName, EmailAddress, CreatedOn, ...",
                required=True,
            ),
        ),
    ),
]
