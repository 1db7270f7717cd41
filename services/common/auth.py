"""The signed principal token: who is calling (user id, admin flag, permissions), minted by the translator."""

from __future__ import annotations

import contextvars
import dataclasses
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
    # The Herald process that minted the token for its own work on the user's behalf (the `svc` claim):
    # a service calling a neighbour while serving a call, delivery sending a campaign, the translator's
    # own lookups. Empty for a token handed to an outside caller. See services/common/permissions.py.
    service: str = ""


def mint_token(principal: Principal, secret: str, ttl_seconds: int) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": str(principal.user_id),
        "adm": principal.is_admin,
        "perms": sorted(principal.permissions),
        "untrusted": principal.untrusted,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if principal.service:
        claims["svc"] = principal.service
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# A service's token for its neighbours lives this long and is reused for most of it: one signature per
# caller every few minutes, not one per downstream call. Never handed out, so its lifetime is no grant.
SERVICE_TOKEN_TTL_SECONDS = 300
_service_tokens: dict[tuple[Principal, str], tuple[float, str]] = {}


def service_token(principal: Principal, service: str, secret: str) -> str:
    """A token of `principal` marked as minted by the Herald process `service`, for calls it makes on
    the principal's behalf; the same user id and admin flag, so the callee scopes data exactly as before."""
    on_behalf = dataclasses.replace(principal, service=service)
    now = time.monotonic()
    cached = _service_tokens.get((on_behalf, secret))
    if cached is not None and cached[0] > now:
        return cached[1]
    token = mint_token(on_behalf, secret, SERVICE_TOKEN_TTL_SECONDS)
    if len(_service_tokens) > 10_000:
        _service_tokens.clear()
    _service_tokens[(on_behalf, secret)] = (now + SERVICE_TOKEN_TTL_SECONDS * 0.8, token)
    return token


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
    service = claims.get("svc", "")
    if not isinstance(service, str) or ("svc" in claims and not service):
        raise ValueError("the svc claim must be a non-empty string")
    return Principal(
        user_id=int(subject),
        is_admin=is_admin,
        permissions=frozenset(permissions),
        untrusted=untrusted,
        service=service,
    )


@dataclass(frozen=True)
class Downstream:
    """How the service serving a call speaks to its neighbours: as the caller, marked as this service."""

    principal: Principal
    service: str
    secret: str

    def token(self) -> str:
        return service_token(self.principal, self.service, self.secret)


# Set by the server interceptor for the duration of one call; read by domain code and by
# the client interceptor that passes the caller on to downstream services.
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("current_principal")
current_downstream: contextvars.ContextVar[Downstream] = contextvars.ContextVar("current_downstream")
current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("current_deadline", default=None)


def principal() -> Principal:
    """The principal of the call being served."""
    return current_principal.get()
