"""The principal token: claims round-trip, and a claim of any other JSON type than Herald mints is refused."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from services.common import auth
from services.common.errors import DomainError

SECRET = "unit-test-secret-long-enough-for-hs256-keys"


def signed(**claims: Any) -> str:
    now = int(time.time())
    base: dict[str, Any] = {"iss": auth.ISSUER, "sub": "7", "iat": now, "exp": now + 60}
    return jwt.encode({**base, **claims}, SECRET, algorithm=auth.ALGORITHM)


def test_claims_round_trip() -> None:
    principal = auth.Principal(
        user_id=7, is_admin=False, permissions=frozenset({"Campaign.Get"}), untrusted=True, service="delivery"
    )
    assert auth.verify_token(auth.mint_token(principal, SECRET, 60), SECRET) == principal


def test_only_json_true_makes_an_admin() -> None:
    assert auth.verify_token(signed(adm=True), SECRET).is_admin is True
    assert auth.verify_token(signed(adm=False), SECRET).is_admin is False
    assert auth.verify_token(signed(), SECRET).is_admin is False


@pytest.mark.parametrize(
    "claims",
    [
        {"adm": "false"},
        {"adm": "true"},
        {"adm": 1},
        {"adm": None},
        {"perms": "Campaign.Get"},
        {"perms": ["Campaign.Get", 1]},
        {"perms": {"Campaign.Get": True}},
        {"untrusted": "no"},
        {"svc": ""},
        {"svc": True},
        {"sub": "+7"},
        {"sub": " 7"},
        {"sub": "07"},
        {"sub": "-1"},
        {"sub": "\u0667"},  # an Arabic-Indic seven: int() would take it
    ],
)
def test_a_claim_of_another_type_makes_the_token_unauthenticated(claims: dict[str, Any]) -> None:
    with pytest.raises(DomainError) as raised:
        auth.verify_token(signed(**claims), SECRET)
    assert raised.value.reason == "UNAUTHENTICATED"


def test_a_token_for_an_outside_caller_has_no_service_claim() -> None:
    token = auth.mint_token(auth.Principal(user_id=7, permissions=frozenset({"*"})), SECRET, 60)
    assert "svc" not in jwt.decode(token, SECRET, algorithms=[auth.ALGORITHM], issuer=auth.ISSUER)


def test_a_service_token_keeps_the_principal_and_names_the_service() -> None:
    caller = auth.Principal(user_id=7, is_admin=True, permissions=frozenset({"Campaign.Get"}))
    token = auth.service_token(caller, "campaign", SECRET)
    assert auth.service_token(caller, "campaign", SECRET) == token  # reused while fresh
    assert auth.verify_token(token, SECRET) == auth.Principal(
        user_id=7, is_admin=True, permissions=frozenset({"Campaign.Get"}), service="campaign"
    )
