"""The translator's credential cache (translator/identity.py) against the real identity tables."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import User
from translator.identity import IdentityStore

pytestmark = pytest.mark.asyncio(loop_scope="session")


def count_lookups(store: IdentityStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every database lookup of an API key the store makes (the lookup itself still runs)."""
    seen: list[str] = []
    real = store._caller_by_key

    async def counted(hashed: str) -> Any:
        seen.append(hashed)
        return await real(hashed)

    monkeypatch.setattr(store, "_caller_by_key", counted)
    return seen


async def test_concurrent_requests_with_an_uncached_key_share_one_lookup(
    identity: IdentityStore, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = count_lookups(identity, monkeypatch)
    callers = await asyncio.gather(*(identity.authenticate(api_key=user.api_key) for _ in range(50)))
    assert len(lookups) == 1
    assert {caller.user_id for caller in callers if caller is not None} == {user.user_id}
    assert all(caller is not None for caller in callers)
    # Cached now: no further lookup until the entry expires.
    await identity.authenticate(api_key=user.api_key)
    assert len(lookups) == 1


async def test_a_waiter_that_goes_away_does_not_cancel_the_others_lookup(
    identity: IdentityStore, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await make_user()
    lookups = count_lookups(identity, monkeypatch)
    first = asyncio.ensure_future(identity.authenticate(api_key=other.api_key))
    second = asyncio.ensure_future(identity.authenticate(api_key=other.api_key))
    await asyncio.sleep(0)
    first.cancel()
    caller = await second
    assert caller is not None and caller.user_id == other.user_id
    assert first.cancelled() and len(lookups) == 1


async def test_an_unknown_key_is_looked_up_once_and_answers_none(
    identity: IdentityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = count_lookups(identity, monkeypatch)
    answers = await asyncio.gather(*(identity.authenticate(api_key="ZZZZ-ZZZZ-ZZZZ-ZZZ0") for _ in range(5)))
    assert answers == [None] * 5 and len(lookups) == 1
