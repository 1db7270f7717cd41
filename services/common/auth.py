"""The signed principal token: who is calling (user id, admin flag, permissions), minted by the translator."""

from __future__ import annotations

import contextvars
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt

from services.common.errors import DomainError, ErrorKind

ISSUER = "herald"
ALGORITHM = "HS256"
# Tolerated clock skew between the minting and the verifying machine.
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class Principal:
    """The caller of a service method. An admin may act on any user's resources."""

    user_id: int
    is_admin: bool = False
    permissions: frozenset[str] = frozenset()
    # An untrusted user's campaigns need an admin's approval before they may be sent (RULINGS 8).
    untrusted: bool = False


def mint_token(principal: Principal, secret: str, ttl_seconds: int) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": str(principal.user_id),
        "adm": principal.is_admin,
        "perms": sorted(principal.permissions),
        "untrusted": principal.untrusted,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


_verified: dict[tuple[str, str], tuple[float, Principal]] = {}


def verify_token(token: str, secret: str) -> Principal:
    """Returns the token's principal, or raises DomainError with reason UNAUTHENTICATED.

    A verified token is remembered until it expires: callers reuse a token for minutes, and
    checking its signature on every call would cost more than the call itself.
    """
    cached = _verified.get((token, secret))
    if cached is not None and cached[0] > time.time():
        return cached[1]
    principal, expires = _verify(token, secret)
    if len(_verified) > 50_000:
        _verified.clear()
    _verified[(token, secret)] = (expires + LEEWAY_SECONDS, principal)
    return principal


def _verify(token: str, secret: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub"]},
            leeway=LEEWAY_SECONDS,
        )
        return _principal_of(claims), float(claims["exp"])
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise DomainError(ErrorKind.PERMISSION, "UNAUTHENTICATED", f"invalid principal token: {exc}") from exc


_USER_ID = re.compile(r"0|[1-9][0-9]{0,17}")


def _principal_of(claims: dict[str, Any]) -> Principal:
    """The principal of verified claims, each of exactly the JSON type Herald mints, or ValueError.

    Strict on purpose: a claim of another type was not written by mint_token, so the token is refused
    rather than read charitably (a string "false" in `adm` must never make an admin).
    """
    subject = claims["sub"]
    if not isinstance(subject, str) or not _USER_ID.fullmatch(subject):
        raise ValueError("the sub claim must be a user id in decimal digits")
    is_admin = claims.get("adm", False)
    if not isinstance(is_admin, bool):
        raise ValueError("the adm claim must be a JSON boolean")
    permissions = claims.get("perms", [])
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise ValueError("the perms claim must be a list of strings")
    untrusted = claims.get("untrusted", False)
    if not isinstance(untrusted, bool):
        raise ValueError("the untrusted claim must be a JSON boolean")
    return Principal(
        user_id=int(subject),
        is_admin=is_admin,
        permissions=frozenset(permissions),
        untrusted=untrusted,
    )


# Set by the server interceptor for the duration of one call; read by domain code and by
# the client interceptor that forwards the token to downstream services.
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("current_principal")
current_token: contextvars.ContextVar[str] = contextvars.ContextVar("current_token")
current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("current_deadline", default=None)


def principal() -> Principal:
    """The principal of the call being served."""
    return current_principal.get()
