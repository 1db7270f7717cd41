"""The translator's identity store on a real PostgreSQL: unique usernames, keys, sessions, key reissue.

IdentityStore opens its own engine and migrates the `identity` schema itself, so this module runs it
on the module's database instead of the `engine` fixture; each test uses usernames of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.common.config import Settings
from translator.identity import IdentityError, IdentityStore

SERVICES = ()


def _settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, token_secret="store-test-secret")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def identity(database_url: str) -> AsyncIterator[IdentityStore]:
    opened = await IdentityStore.open(_settings(database_url))
    yield opened
    await opened.close()


def _name() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


async def test_a_username_is_taken_whatever_its_case(identity: IdentityStore) -> None:
    name = _name()
    await identity.create_user(name, "secret", permissions=["*"])

    with pytest.raises(IdentityError, match="taken"):
        await identity.create_user(name.upper(), "other", permissions=[])


async def test_an_api_key_authenticates_its_user_or_admin_and_nothing_else(identity: IdentityStore) -> None:
    user = await identity.create_user(_name(), "secret", permissions=["Campaign.Get"], untrusted=True)
    admin = await identity.create_admin(_name(), "secret")

    caller = await identity.authenticate(api_key=user["APIKey"])
    assert caller is not None and (caller.user_id, caller.is_admin, caller.untrusted) == (
        user["UserID"],
        False,
        True,
    )
    assert caller.permissions == frozenset({"Campaign.Get"})
    caller = await identity.authenticate(api_key=admin["AdminAPIKey"])
    assert caller is not None and (caller.admin_id, caller.is_admin) == (admin["AdminID"], True)
    assert await identity.authenticate(api_key="AAAA-BBBB-CCCC-DDDD") is None


async def test_a_password_login_opens_a_session_that_authenticates_the_user(identity: IdentityStore) -> None:
    name = _name()
    user = await identity.create_user(name, "secret", permissions=["*"])

    assert await identity.login_user(username=name, password="wrong") is None
    login = await identity.login_user(username=name.upper(), password="secret")
    assert login is not None and login["UserInfo"]["UserID"] == user["UserID"]
    caller = await identity.authenticate(session_id=login["SessionID"])
    assert caller is not None and caller.user_id == user["UserID"]
    assert await identity.authenticate(session_id="0" * 48) is None


async def test_a_reissued_key_replaces_the_old_one(identity: IdentityStore, database_url: str) -> None:
    name = _name()
    user = await identity.create_user(name, "secret", permissions=["*"])
    reissued = await identity.reissue_key(username=name.upper())
    assert reissued["UserID"] == user["UserID"] and reissued["APIKey"] != user["APIKey"]

    # Another translator: this one's look-up cache may still know the old key for a few seconds.
    fresh = await IdentityStore.open(_settings(database_url))
    try:
        assert await fresh.authenticate(api_key=user["APIKey"]) is None
        caller = await fresh.authenticate(api_key=reissued["APIKey"])
        assert caller is not None and caller.user_id == user["UserID"]
    finally:
        await fresh.close()
    with pytest.raises(IdentityError):
        await identity.reissue_key(user_id=10**12)
