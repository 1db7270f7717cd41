"""The DKIM sending domains' SQL on a real PostgreSQL: one key per owner and domain, listings without the key, and the keys a run signs with."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery import dkim_store, queue_store
from services.delivery.sending import RunState
from tests.store.conftest import new_id

SERVICES = ("delivery",)


async def _add(
    conn: AsyncConnection, owner: int, domain: str, selector: str = "s1"
) -> dkim_store.SendingDomainRow | None:
    return await dkim_store.inserted_sending_domain(
        conn, owner, domain, selector, f"sealed {owner} {domain}".encode(), f"public-{owner}-{domain}"
    )


async def test_a_domain_is_one_per_owner_and_another_owner_may_add_it_too(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    created = await _add(conn, owner, "example.com")
    assert created is not None and (created.owner_user_id, created.domain, created.selector) == (
        owner,
        "example.com",
        "s1",
    )
    assert created.public_key == f"public-{owner}-example.com" and created.created_at is not None
    assert await _add(conn, owner, "example.com", "s2") is None
    assert await _add(conn, other, "example.com", "s2") is not None


async def test_a_listing_is_the_owners_by_domain_and_an_admins_is_everyones(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    for domain in ("b.example", "a.example"):
        await _add(conn, owner, domain)
    await _add(conn, other, "c.example")
    assert [row.domain for row in await dkim_store.sending_domains_of(conn, owner)] == ["a.example", "b.example"]
    everyone = [(row.owner_user_id, row.domain) for row in await dkim_store.sending_domains_of(conn, None)]
    assert [entry for entry in everyone if entry[0] in (owner, other)] == [
        (owner, "a.example"),
        (owner, "b.example"),
        (other, "c.example"),
    ]
    assert not hasattr(dkim_store.SendingDomainRow, "sealed_private_key")


async def test_a_delete_removes_only_the_owners_domain(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    await _add(conn, owner, "example.com")
    await _add(conn, other, "example.com")
    assert await dkim_store.deleted_sending_domain_count(conn, owner, "example.com") == 1
    assert await dkim_store.deleted_sending_domain_count(conn, owner, "example.com") == 0
    assert [row.domain for row in await dkim_store.sending_domains_of(conn, other)] == ["example.com"]


async def test_a_run_signs_with_the_sealed_keys_of_its_owner_only(conn: AsyncConnection) -> None:
    owner, other, campaign_id = new_id(), new_id(), new_id()
    await queue_store.ensured_run_for_update(conn, campaign_id, owner, RunState.SENDING)
    await _add(conn, owner, "example.com", "s7")
    await _add(conn, other, "example.org")
    keys = await dkim_store.run_signing_keys(conn, campaign_id)
    assert [(k.owner_user_id, k.domain, k.selector, k.sealed_private_key) for k in keys] == [
        (owner, "example.com", "s7", f"sealed {owner} example.com".encode())
    ]
    assert await dkim_store.run_signing_keys(conn, new_id()) == []


@pytest.mark.parametrize(
    ("domain", "selector"), [("Example.com", "s1"), ("example.com", "S1"), ("example.com", "")]
)
async def test_the_table_refuses_what_the_rules_would_not_store(
    conn: AsyncConnection, domain: str, selector: str
) -> None:
    with pytest.raises(IntegrityError):
        async with conn.begin_nested():
            await _add(conn, new_id(), domain, selector)
