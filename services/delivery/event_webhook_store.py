"""SQL of event webhooks (migration 0016): endpoints, the events waiting for each endpoint, and the delivery log; one function per statement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery.event_webhooks import OutgoingEvent


@dataclass(frozen=True)
class EndpointRow:
    """An endpoint as answers show it (never its secret)."""

    endpoint_id: int
    owner_user_id: int
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str
    disabled_at: datetime | None
    failing_since: datetime | None
    created_at: datetime
    pending_events: int


@dataclass(frozen=True)
class ClaimedEvent:
    """The head of one (endpoint, campaign) queue, claimed for one attempt."""

    endpoint_id: int
    owner_user_id: int
    url: str
    sealed_secret: bytes
    event_id: str
    event_type: str
    campaign_id: int
    body: bytes
    attempts: int
    # The previous secret while it still signs too (after a rotation), else None.
    sealed_previous_secret: bytes | None = None


@dataclass(frozen=True)
class AttemptRow:
    attempt_id: int
    event_id: str
    event_type: str
    campaign_id: int
    attempt_number: int
    attempted_at: datetime
    status_code: int
    error: str
    latency_ms: int
    delivered: bool


_ENDPOINT_COLUMNS = """
    e.endpoint_id, e.owner_user_id, e.url, e.event_kinds, e.description, e.enabled, e.disabled_reason,
    e.disabled_at, e.failing_since, e.created_at,
    (SELECT count(*) FROM delivery.webhook_events w WHERE w.endpoint_id = e.endpoint_id AND NOT w.delivered) AS pending
"""


def _endpoint(row: Any) -> EndpointRow:
    return EndpointRow(
        endpoint_id=row.endpoint_id,
        owner_user_id=row.owner_user_id,
        url=row.url,
        event_types=list(row.event_kinds),
        description=row.description,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        failing_since=row.failing_since,
        created_at=row.created_at,
        pending_events=row.pending,
    )


async def endpoint_count(conn: AsyncConnection, owner_user_id: int) -> int:
    result = await conn.execute(
        sa.text("SELECT count(*) FROM delivery.webhook_endpoints WHERE owner_user_id = :owner"),
        {"owner": owner_user_id},
    )
    return int(result.scalar_one())


async def inserted_endpoint(
    conn: AsyncConnection,
    owner_user_id: int,
    url: str,
    event_types: Sequence[str],
    description: str,
    sealed_secret: bytes,
) -> EndpointRow:
    result = await conn.execute(
        sa.text(
            "INSERT INTO delivery.webhook_endpoints (owner_user_id, url, event_kinds, description, sealed_secret) "
            "VALUES (:owner, :url, :kinds, :description, :secret) RETURNING endpoint_id"
        ),
        {
            "owner": owner_user_id,
            "url": url,
            "kinds": list(event_types),
            "description": description,
            "secret": sealed_secret,
        },
    )
    created = await endpoint_of(conn, owner_user_id, int(result.scalar_one()))
    assert created is not None
    return created


async def endpoint_of(conn: AsyncConnection, owner_user_id: int, endpoint_id: int) -> EndpointRow | None:
    result = await conn.execute(
        sa.text(
            f"SELECT {_ENDPOINT_COLUMNS} FROM delivery.webhook_endpoints e "
            "WHERE e.endpoint_id = :endpoint AND e.owner_user_id = :owner"
        ),
        {"endpoint": endpoint_id, "owner": owner_user_id},
    )
    row = result.first()
    return _endpoint(row) if row is not None else None


async def endpoints_of(conn: AsyncConnection, owner_user_id: int) -> list[EndpointRow]:
    result = await conn.execute(
        sa.text(
            f"SELECT {_ENDPOINT_COLUMNS} FROM delivery.webhook_endpoints e WHERE e.owner_user_id = :owner ORDER BY e.endpoint_id"
        ),
        {"owner": owner_user_id},
    )
    return [_endpoint(row) for row in result]


async def deleted_endpoint_count(conn: AsyncConnection, owner_user_id: int, endpoint_id: int) -> int:
    """Deletes the endpoint (its waiting events and its log go with it)."""
    result = await conn.execute(
        sa.text("DELETE FROM delivery.webhook_endpoints WHERE endpoint_id = :endpoint AND owner_user_id = :owner"),
        {"endpoint": endpoint_id, "owner": owner_user_id},
    )
    return result.rowcount


async def enabled_endpoint_count(conn: AsyncConnection, owner_user_id: int, endpoint_id: int) -> int:
    """Enables the endpoint again; its undelivered events become due now."""
    result = await conn.execute(
        sa.text(
            "UPDATE delivery.webhook_endpoints SET enabled = true, disabled_reason = '', disabled_at = NULL, "
            "failing_since = NULL WHERE endpoint_id = :endpoint AND owner_user_id = :owner"
        ),
        {"endpoint": endpoint_id, "owner": owner_user_id},
    )
    if result.rowcount:
        await conn.execute(
            sa.text(
                "UPDATE delivery.webhook_events SET next_attempt_at = now() WHERE endpoint_id = :endpoint AND NOT delivered"
            ),
            {"endpoint": endpoint_id},
        )
    return result.rowcount


async def rotated_secret(
    conn: AsyncConnection, owner_user_id: int, endpoint_id: int, sealed_secret: bytes, grace_seconds: float
) -> tuple[bool, datetime | None]:
    """Makes `sealed_secret` the endpoint's secret, the current one signing too for `grace_seconds` (none for 0):
    (whether the owner has the endpoint, until when the previous one signs)."""
    result = await conn.execute(
        sa.text(
            "UPDATE delivery.webhook_endpoints SET "
            "sealed_previous_secret = CASE WHEN :grace > 0 THEN sealed_secret END, "
            "previous_secret_expires_at = CASE WHEN :grace > 0 THEN now() + make_interval(secs => :grace) END, "
            "sealed_secret = :secret "
            "WHERE endpoint_id = :endpoint AND owner_user_id = :owner RETURNING previous_secret_expires_at"
        ),
        {"grace": grace_seconds, "secret": sealed_secret, "endpoint": endpoint_id, "owner": owner_user_id},
    )
    row = result.first()
    return (False, None) if row is None else (True, row.previous_secret_expires_at)


async def attempts_of(
    conn: AsyncConnection, owner_user_id: int, endpoint_id: int, limit: int, before: int | None
) -> list[AttemptRow]:
    """The endpoint's attempts newest first, below the attempt id `before` (the owner's endpoint only)."""
    result = await conn.execute(
        sa.text(
            "SELECT a.attempt_id, a.event_id, a.event_type, a.campaign_id, a.attempt_number, a.attempted_at, "
            "a.status_code, a.error, a.latency_ms, a.delivered "
            "FROM delivery.webhook_attempts a JOIN delivery.webhook_endpoints e USING (endpoint_id) "
            "WHERE a.endpoint_id = :endpoint AND e.owner_user_id = :owner "
            "AND (CAST(:before AS bigint) IS NULL OR a.attempt_id < :before) "
            "ORDER BY a.attempt_id DESC LIMIT :limit"
        ),
        {"endpoint": endpoint_id, "owner": owner_user_id, "before": before, "limit": limit},
    )
    return [AttemptRow(*row) for row in result]


# --- the ingest (events from JetStream) --------------------------------------------------------------------------


async def wanted_event_types(conn: AsyncConnection, owner_user_id: int, published_at: datetime) -> frozenset[str]:
    """The event types the owner's enabled endpoints that existed at `published_at` ask for: those an event of the
    owner published then would be added for (`inserted_events_count` joins with the same endpoints)."""
    result = await conn.execute(
        sa.text(
            "SELECT DISTINCT unnest(event_kinds) FROM delivery.webhook_endpoints "
            "WHERE owner_user_id = :owner AND enabled AND created_at <= :published"
        ),
        {"owner": owner_user_id, "published": published_at},
    )
    return frozenset(str(row[0]) for row in result)


async def inserted_events_count(
    conn: AsyncConnection, events: Sequence[OutgoingEvent], published_at: datetime
) -> int:
    """Adds each event for every enabled endpoint of its owner that asked for its type and existed when it was
    published; an event already there (a redelivered message) is not added twice."""
    if not events:
        return 0
    result = await conn.execute(
        sa.text(
            "INSERT INTO delivery.webhook_events "
            "(endpoint_id, event_id, stream_sequence, position, campaign_id, event_type, body) "
            "SELECT e.endpoint_id, x.event_id, x.stream_sequence, x.position, x.campaign_id, x.event_type, x.body "
            "FROM unnest(CAST(:owners AS bigint[]), CAST(:ids AS text[]), CAST(:sequences AS bigint[]), "
            "CAST(:positions AS integer[]), CAST(:campaigns AS bigint[]), CAST(:types AS text[]), "
            "CAST(:bodies AS bytea[])) "
            "AS x(owner_user_id, event_id, stream_sequence, position, campaign_id, event_type, body) "
            "JOIN delivery.webhook_endpoints e ON e.owner_user_id = x.owner_user_id AND e.enabled "
            "AND x.event_type = ANY(e.event_kinds) AND e.created_at <= :published "
            "ON CONFLICT (endpoint_id, event_id) DO NOTHING"
        ),
        {
            "owners": [event.owner_user_id for event in events],
            "ids": [event.event_id for event in events],
            "sequences": [event.stream_sequence for event in events],
            "positions": [event.position for event in events],
            "campaigns": [event.campaign_id for event in events],
            "types": [event.event_type for event in events],
            "bodies": [event.body for event in events],
            "published": published_at,
        },
    )
    return result.rowcount


# --- the dispatcher --------------------------------------------------------------------------------------------


# The head of each (endpoint, campaign) queue, found by skipping through the partial index from one queue to
# the next (a loose index scan): as many index probes as there are queues, however long each queue is.
HEADS = """
WITH RECURSIVE heads AS (
    (SELECT endpoint_id, campaign_id, event_id, next_attempt_at FROM delivery.webhook_events
     WHERE NOT delivered ORDER BY endpoint_id, campaign_id, stream_sequence, position LIMIT 1)
    UNION ALL
    SELECT next.* FROM heads h CROSS JOIN LATERAL (
        SELECT w.endpoint_id, w.campaign_id, w.event_id, w.next_attempt_at FROM delivery.webhook_events w
        WHERE NOT w.delivered AND (w.endpoint_id, w.campaign_id) > (h.endpoint_id, h.campaign_id)
        ORDER BY w.endpoint_id, w.campaign_id, w.stream_sequence, w.position LIMIT 1
    ) next
)
"""


async def claimed_due_events(conn: AsyncConnection, limit: int, lease_seconds: float) -> list[ClaimedEvent]:
    """Claims up to `limit` due heads of (endpoint, campaign) queues of enabled endpoints for one attempt each:
    their next attempt is pushed `lease_seconds` ahead, so no other dispatcher takes them meanwhile. An event
    behind an undelivered one of its campaign waits, whatever its own time: delivery is in order."""
    result = await conn.execute(
        sa.text(
            HEADS + ", due AS ("
            "  SELECT h.endpoint_id, h.event_id FROM heads h JOIN delivery.webhook_endpoints e USING (endpoint_id) "
            "  WHERE e.enabled AND h.next_attempt_at <= now() ORDER BY h.next_attempt_at LIMIT :limit"
            ") "
            "UPDATE delivery.webhook_events w SET next_attempt_at = now() + make_interval(secs => :lease) "
            "FROM due, delivery.webhook_endpoints e "
            "WHERE w.endpoint_id = due.endpoint_id AND w.event_id = due.event_id AND e.endpoint_id = w.endpoint_id "
            "AND w.next_attempt_at <= now() AND NOT w.delivered "
            "RETURNING w.endpoint_id, e.owner_user_id, e.url, e.sealed_secret, w.event_id, w.event_type, "
            "w.campaign_id, w.body, w.attempts, "
            "CASE WHEN e.previous_secret_expires_at > now() THEN e.sealed_previous_secret END"
        ),
        {"limit": limit, "lease": lease_seconds},
    )
    return [ClaimedEvent(*row) for row in result]


async def record_attempt(
    conn: AsyncConnection,
    event: ClaimedEvent,
    *,
    delivered: bool,
    status_code: int,
    error: str,
    latency_ms: int,
    retry_in_seconds: float,
) -> None:
    """Logs the attempt and settles the event: delivered, or due again in `retry_in_seconds`; the endpoint's
    failing_since is cleared by a success and set by the first failure after one."""
    attempt_number = event.attempts + 1
    await conn.execute(
        sa.text(
            "INSERT INTO delivery.webhook_attempts (endpoint_id, event_id, event_type, campaign_id, attempt_number, "
            "status_code, error, latency_ms, delivered) "
            "VALUES (:endpoint, :event, :type, :campaign, :number, :status, :error, :latency, :delivered)"
        ),
        {
            "endpoint": event.endpoint_id,
            "event": event.event_id,
            "type": event.event_type,
            "campaign": event.campaign_id,
            "number": attempt_number,
            "status": status_code,
            "error": error,
            "latency": latency_ms,
            "delivered": delivered,
        },
    )
    await conn.execute(
        sa.text(
            "UPDATE delivery.webhook_events SET attempts = :number, delivered = :delivered, "
            "next_attempt_at = now() + make_interval(secs => :retry) "
            "WHERE endpoint_id = :endpoint AND event_id = :event"
        ),
        {
            "number": attempt_number,
            "delivered": delivered,
            "retry": retry_in_seconds,
            "endpoint": event.endpoint_id,
            "event": event.event_id,
        },
    )
    await conn.execute(
        sa.text(
            "UPDATE delivery.webhook_endpoints SET failing_since = "
            "CASE WHEN :delivered THEN NULL ELSE coalesce(failing_since, now()) END WHERE endpoint_id = :endpoint"
        ),
        {"delivered": delivered, "endpoint": event.endpoint_id},
    )


async def failing_since_of(conn: AsyncConnection, endpoint_id: int) -> datetime | None:
    result = await conn.execute(
        sa.text("SELECT failing_since FROM delivery.webhook_endpoints WHERE endpoint_id = :endpoint AND enabled"),
        {"endpoint": endpoint_id},
    )
    value: datetime | None = result.scalar_one_or_none()
    return value


async def disabled_endpoint_count(conn: AsyncConnection, endpoint_id: int, reason: str) -> int:
    result = await conn.execute(
        sa.text(
            "UPDATE delivery.webhook_endpoints SET enabled = false, disabled_reason = :reason, disabled_at = now() "
            "WHERE endpoint_id = :endpoint AND enabled"
        ),
        {"endpoint": endpoint_id, "reason": reason},
    )
    return result.rowcount


async def pruned_count(conn: AsyncConnection, keep_delivered_days: float, keep_attempts_days: float) -> int:
    """Forgets delivered events (kept meanwhile so a redelivered JetStream message adds nothing) and old log lines."""
    events = await conn.execute(
        sa.text(
            "DELETE FROM delivery.webhook_events WHERE delivered "
            "AND created_at < now() - make_interval(secs => :days * 86400)"
        ),
        {"days": keep_delivered_days},
    )
    attempts = await conn.execute(
        sa.text(
            "DELETE FROM delivery.webhook_attempts WHERE attempted_at < now() - make_interval(secs => :days * 86400)"
        ),
        {"days": keep_attempts_days},
    )
    return events.rowcount + attempts.rowcount
