"""user.login and admin.login at the edge: the same work for unknown usernames, and throttled failures.

These run against a translator of their own (tests/e2e/edge_helpers.py) with a short window and small
allowances, so that its counts and metrics are theirs alone; each test calls from its own address.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import Api, System, User, eventually
from tests.e2e.edge_helpers import api_from, own_translator
from translator.identity import IdentityStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

PER_USERNAME = 3
PER_ADDRESS = 8
# Long enough that a test's failures all fall inside one window on a slow machine.
WINDOW_SECONDS = 10
PASSWORD = "secret-password"
INVALID = {"Success": False, "ErrorCode": [3], "ErrorText": ["Invalid login information"]}
THROTTLED_TEXT = re.compile(r"Rate limit exceeded: retry after [0-9]+ seconds")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def guarded(system: System) -> AsyncIterator[str]:
    settings = {
        "HERALD_LOGIN_FAILURES_PER_USERNAME": str(PER_USERNAME),
        "HERALD_LOGIN_FAILURES_PER_ADDRESS": str(PER_ADDRESS),
        "HERALD_LOGIN_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "HERALD_TRUSTED_PROXIES": "127.0.0.1",
    }
    async with own_translator(system, settings) as base_url:
        yield base_url


async def login(
    api: Api, command: str = "user.login", headers: dict[str, str] | None = None, **params: Any
) -> tuple[int, Any, str | None]:
    """(HTTP status, body, Retry-After) of a login."""
    async with api.session.post(
        api.base_url + "/api.php", json={"Command": command, **params}, headers=headers or {}
    ) as response:
        return response.status, await response.json(content_type=None), response.headers.get("Retry-After")


def throttled(answer: tuple[int, Any, str | None]) -> bool:
    """The legacy rate-limit answer, and nothing else."""
    status, body, retry_after = answer
    return (
        status == 429
        and retry_after is not None
        and 1 <= int(retry_after) <= WINDOW_SECONDS
        and set(body) == {"Success", "ErrorCode", "ErrorText"}
        and body["Success"] is False
        and body["ErrorCode"] == 429
        and THROTTLED_TEXT.fullmatch(body["ErrorText"]) is not None
    )


async def password_checks(api: Api) -> float:
    _, _, text = await api.raw("GET", "/metrics")
    found = re.search(r"^herald_translator_password_checks_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, "the password check counter is missing from /metrics"
    return float(found.group(1))


async def new_admin(identity: IdentityStore) -> str:
    username = f"admin-{uuid.uuid4().hex[:12]}"
    await identity.create_admin(username, PASSWORD)
    return username


async def test_an_unknown_username_costs_the_same_password_check_as_a_known_one(
    guarded: str, user: User, identity: IdentityStore
) -> None:
    admin = await new_admin(identity)
    async with api_from(guarded, "127.0.0.21") as api:
        for command, known, answer in (
            ("user.login", user.username, INVALID),
            ("admin.login", admin, {"Success": False, "ErrorCode": 3, "ErrorText": "Invalid login information"}),
        ):
            before = await password_checks(api)
            assert (await login(api, command, Username=known, Password="wrong"))[:2] == (200, answer)
            after_known = await password_checks(api)
            unknown = f"nobody-{uuid.uuid4().hex[:12]}"
            assert (await login(api, command, Username=unknown, Password="wrong"))[:2] == (200, answer)
            after_unknown = await password_checks(api)
            # One scrypt run each: the unknown name is checked against a stand-in hash.
            assert after_known - before == 1 and after_unknown - after_known == 1, command


async def test_failed_logins_are_throttled_per_username_whatever_the_password(
    guarded: str, make_user: Any, identity: IdentityStore
) -> None:
    user, other = await make_user(), await make_user()
    unknown = f"nobody-{uuid.uuid4().hex[:12]}"
    admin = await new_admin(identity)
    async with api_from(guarded, "127.0.0.22") as api, api_from(guarded, "127.0.0.23") as elsewhere:
        for _ in range(PER_USERNAME):
            assert (await login(api, Username=user.username, Password="wrong"))[1] == INVALID
            assert (await login(api, Username=unknown, Password="wrong"))[1] == INVALID
        # The right password is refused too, from any address and however the name is spelled, and an
        # unknown username is refused the same way: the refusal tells nothing about either.
        assert throttled(await login(api, Username=user.username, Password=PASSWORD))
        assert throttled(await login(elsewhere, Username=f"  {user.username.upper()} ", Password=PASSWORD))
        assert throttled(await login(api, Username=unknown, Password="wrong"))
        # The address has failures to spare: another user gets in from it.
        assert (await login(api, Username=other.username, Password=PASSWORD))[1]["Success"] is True
        # Admins are throttled the same way, apart from users.
        for _ in range(PER_USERNAME):
            assert (await login(elsewhere, "admin.login", Username=admin, Password="wrong"))[1]["ErrorCode"] == 3
        assert throttled(await login(elsewhere, "admin.login", Username=admin, Password=PASSWORD))


async def test_failed_logins_are_throttled_per_client_address(
    guarded: str, user: User, identity: IdentityStore
) -> None:
    admin = await new_admin(identity)
    async with api_from(guarded, "127.0.0.24") as guesser, api_from(guarded, "127.0.0.25") as bystander:
        # Never twice the same name, so only the address's count fills up.
        for _ in range(PER_ADDRESS):
            answer = await login(guesser, Username=f"guess-{uuid.uuid4().hex[:12]}", Password="wrong")
            assert answer[1] == INVALID
        assert throttled(await login(guesser, Username=user.username, Password=PASSWORD))
        assert throttled(await login(guesser, "admin.login", Username=admin, Password=PASSWORD))
        assert throttled(await login(guesser, APIKey=user.api_key))
        # Another address is not affected.
        assert (await login(bystander, Username=user.username, Password=PASSWORD))[1]["Success"] is True


async def test_waiting_out_the_window_lets_the_user_log_in(guarded: str, user: User) -> None:
    async with api_from(guarded, "127.0.0.26") as api:
        for _ in range(PER_USERNAME):
            await login(api, Username=user.username, Password="wrong")
        refused = await login(api, Username=user.username, Password=PASSWORD)
        assert throttled(refused)
        assert refused[2] is not None
        await asyncio.sleep(int(refused[2]))

        async def logged_in() -> bool:
            return bool((await login(api, Username=user.username, Password=PASSWORD))[1]["Success"])

        assert await eventually(logged_in, within=WINDOW_SECONDS, interval=0.5)


async def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(guarded: str, user: User) -> None:
    async with api_from(guarded, "127.0.0.1") as proxy, api_from(guarded, "127.0.0.27") as stranger:
        # A trusted proxy appends the address it saw: the rightmost one it did not add itself.
        seen = {"X-Forwarded-For": "192.0.2.1, 203.0.113.50"}
        for _ in range(PER_ADDRESS):
            name = f"guess-{uuid.uuid4().hex[:12]}"
            assert (await login(proxy, headers=seen, Username=name, Password="wrong"))[1] == INVALID
        assert throttled(await login(proxy, headers=seen, Username=user.username, Password=PASSWORD))
        # Another client behind the proxy, and a client that is no proxy and claims that address, are
        # each counted by their own address.
        other = {"X-Forwarded-For": "203.0.113.51"}
        assert (await login(proxy, headers=other, Username=user.username, Password=PASSWORD))[1]["Success"] is True
        claimed = {"X-Forwarded-For": "203.0.113.50"}
        answer = await login(stranger, headers=claimed, Username=user.username, Password=PASSWORD)
        assert answer[1]["Success"] is True


async def test_two_factor_codes_have_no_counterpart(guarded: str, user: User, identity: IdentityStore) -> None:
    """Issue 14: no Herald account has two-factor authentication, so TFACode and TFARecoveryCode are neither
    asked for nor checked: the credentials alone decide, with or without a code."""
    admin = await new_admin(identity)
    async with api_from(guarded, "127.0.0.31") as api:
        status, body, _ = await login(api, Username=user.username, Password=PASSWORD, TFACode="123456")
        assert status == 200 and body["Success"] is True and body["SessionID"], body
        status, body, _ = await login(api, Username=user.username, Password=PASSWORD, TFARecoveryCode="ABCD-EFGH")
        assert status == 200 and body["Success"] is True, body
        # A code does not stand in for the password.
        assert (await login(api, Username=user.username, Password="wrong", TFACode="123456"))[:2] == (200, INVALID)
        status, body, _ = await login(api, "admin.login", Username=admin, Password=PASSWORD, TFACode="000000")
        assert status == 200 and body["Success"] is True and body["AdminInfo"]["2FA_Enabled"] is False, body
        status, body, _ = await login(api, "admin.login", Username=admin, Password="wrong", TFACode="000000")
        assert (status, body["ErrorCode"]) == (200, 3), body
