"""SQL of DKIM sending domains (migration 0010): one function per statement; the sealed private key is read by the worker's query only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery.dkim import SealedKey
from services.delivery.store import campaign_runs, metadata

sending_domains = sa.Table(
    "sending_domains",
    metadata,
    sa.Column("owner_user_id", sa.BigInteger, primary_key=True),
    sa.Column("domain", sa.Text, primary_key=True),
    sa.Column("selector", sa.Text, nullable=False),
    sa.Column("sealed_private_key", sa.LargeBinary, nullable=False),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# Every column an answer may show: never the private key.
_SHOWN = (
    sending_domains.c.owner_user_id,
    sending_domains.c.domain,
    sending_domains.c.selector,
    sending_domains.c.public_key,
    sending_domains.c.created_at,
)


@dataclass(frozen=True)
class SendingDomainRow:
    """A sending domain as answers show it (no private key)."""

    owner_user_id: int
    domain: str
    selector: str
    public_key: str
    created_at: datetime


def _row(row: sa.Row[*tuple[Any, ...]]) -> SendingDomainRow:
    return SendingDomainRow(row.owner_user_id, row.domain, row.selector, row.public_key, row.created_at)


async def inserted_sending_domain(
    conn: AsyncConnection,
    owner_user_id: int,
    domain: str,
    selector: str,
    sealed_private_key: bytes,
    public_key: str,
) -> SendingDomainRow | None:
    """The new sending domain, or None when the owner already has that domain."""
    statement = (
        insert(sending_domains)
        .values(
            owner_user_id=owner_user_id,
            domain=domain,
            selector=selector,
            sealed_private_key=sealed_private_key,
            public_key=public_key,
        )
        .on_conflict_do_nothing(index_elements=["owner_user_id", "domain"])
        .returning(*_SHOWN)
    )
    row = (await conn.execute(statement)).one_or_none()
    return None if row is None else _row(row)


async def sending_domains_of(conn: AsyncConnection, owner_user_id: int | None) -> list[SendingDomainRow]:
    """The owner's sending domains by domain (every user's, by owner, for None)."""
    query = sa.select(*_SHOWN).order_by(sending_domains.c.owner_user_id, sending_domains.c.domain)
    if owner_user_id is not None:
        query = query.where(sending_domains.c.owner_user_id == owner_user_id)
    return [_row(row) for row in await conn.execute(query)]


async def deleted_sending_domain_count(conn: AsyncConnection, owner_user_id: int, domain: str) -> int:
    result = await conn.execute(
        sa.delete(sending_domains).where(
            sending_domains.c.owner_user_id == owner_user_id, sending_domains.c.domain == domain
        )
    )
    return int(result.rowcount)


async def run_signing_keys(conn: AsyncConnection, campaign_id: int) -> list[SealedKey]:
    """The sealed keys of the sending domains of the campaign's owner (the delivery worker, once per run)."""
    query = sa.select(
        sending_domains.c.owner_user_id,
        sending_domains.c.domain,
        sending_domains.c.selector,
        sending_domains.c.sealed_private_key,
    ).where(
        sending_domains.c.owner_user_id == campaign_runs.c.owner_user_id,
        campaign_runs.c.campaign_id == campaign_id,
    )
    return [
        SealedKey(row.owner_user_id, row.domain, row.selector, bytes(row.sealed_private_key))
        for row in await conn.execute(query)
    ]
