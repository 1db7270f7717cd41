"""Per-command rate limits count the user or admin behind the credentials, not the credential string."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.conftest import Api, User
from translator.identity import IdentityStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIMIT = 100


async def status_of(api: Api, body: dict[str, Any]) -> int:
    async with api.session.post(api.base_url + "/api.php", json=body) as response:
        await response.read()
        return response.status


async def test_a_padded_key_or_a_fresh_session_does_not_open_a_new_window_for_a_user(
    api: Api, make_user: Any
) -> None:
    user: User = await make_user()
    call = {"Command": "subscriber.get"}
    statuses = await asyncio.gather(*(status_of(api, {**call, "APIKey": user.api_key}) for _ in range(LIMIT)))
    assert set(statuses) == {200}
    assert await status_of(api, {**call, "APIKey": user.api_key}) == 429
    # The same user, spelled differently: a key with a trailing space, or sessions opened after the 429.
    assert await status_of(api, {**call, "APIKey": user.api_key + " "}) == 429
    _, by_password = await api.post(
        {"Command": "user.login", "Username": user.username, "Password": "secret-password"}
    )
    _, by_key = await api.post({"Command": "user.login", "APIKey": user.api_key})
    for session in (by_password["SessionID"], by_key["SessionID"]):
        assert await status_of(api, {**call, "SessionID": session}) == 429
    # Another user has a window of their own.
    other: User = await make_user()
    assert await status_of(api, {**call, "APIKey": other.api_key}) == 200


async def test_an_admins_window_is_the_same_with_the_key_under_any_name_or_a_session(
    api: Api, identity: IdentityStore
) -> None:
    username = f"admin-{uuid.uuid4().hex[:12]}"
    key = (await identity.create_admin(username, "admin-password"))["AdminAPIKey"]
    call = {"Command": "admin.campaign.retryfailed"}
    statuses = await asyncio.gather(*(status_of(api, {**call, "AdminAPIKey": key}) for _ in range(LIMIT)))
    assert set(statuses) == {200}
    assert await status_of(api, {**call, "AdminAPIKey": key}) == 429
    assert await status_of(api, {**call, "APIKey": f" {key}"}) == 429
    _, login = await api.post({"Command": "admin.login", "Username": username, "Password": "admin-password"})
    assert await status_of(api, {**call, "SessionID": login["SessionID"]}) == 429
