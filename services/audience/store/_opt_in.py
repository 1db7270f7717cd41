"""SQL of double opt-in: the hourly allowance of confirmation emails, and what the confirm and reject links change."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.audience.store._tables import subscribers

PENDING = "Opt-In Pending"


async def claimed_confirmation_time(
    conn: AsyncConnection, subscriber_id: int, now: datetime, every: timedelta
) -> datetime | None:
    """Takes the pending subscriber's confirmation allowance: `now` when none was asked for within `every`
    (the time is stored), else None. The row lock makes two concurrent subscribes send one email."""
    statement = (
        sa.update(subscribers)
        .where(
            subscribers.c.subscriber_id == subscriber_id,
            subscribers.c.status == PENDING,
            sa.or_(
                subscribers.c.opt_in_requested_at.is_(None),
                subscribers.c.opt_in_requested_at <= now - every,
            ),
        )
        .values(opt_in_requested_at=now)
        .returning(subscribers.c.opt_in_requested_at)
    )
    found: datetime | None = (await conn.execute(statement)).scalar_one_or_none()
    return found


async def confirmed_subscriber_id(
    conn: AsyncConnection, list_id: int, subscriber_id: int, ip_address: str, now: datetime
) -> int | None:
    """Makes a pending subscriber Subscribed with its opt-in date and address; None when it is not pending."""
    statement = (
        sa.update(subscribers)
        .where(
            subscribers.c.list_id == list_id,
            subscribers.c.subscriber_id == subscriber_id,
            subscribers.c.status == PENDING,
        )
        .values(status="Subscribed", optin_date=now, optin_ip=ip_address, updated_at=now)
        .returning(subscribers.c.subscriber_id)
    )
    found: int | None = (await conn.execute(statement)).scalar_one_or_none()
    return found


async def rejected_count(conn: AsyncConnection, list_id: int, subscriber_id: int) -> int:
    """Removes a pending subscriber from the list; how many (0 or 1)."""
    statement = sa.delete(subscribers).where(
        subscribers.c.list_id == list_id,
        subscribers.c.subscriber_id == subscriber_id,
        subscribers.c.status == PENDING,
    )
    return (await conn.execute(statement)).rowcount
