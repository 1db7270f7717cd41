"""DeliveryService.BatchGetCampaignStatistics over gRPC: figures, breakdowns, owner scoping and limits.

There is no sender yet, so these tests write queue rows and tracking events straight into the
`delivery` schema with SQL (through the system's DATABASE_URL) and read them back through the API.
Issue 5 replaces the SQL with a real send.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.grpcutil import decode_error
from tests.conftest import System, User, grpc_metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIRST_SEND = datetime(2025, 6, 1, 10, 0, 0, tzinfo=UTC)
LAST_SEND = datetime(2025, 6, 1, 10, 0, 40, tzinfo=UTC)


def new_campaign_id() -> int:
    # Delivery rows carry no foreign key to the campaign service, so ids far above anything the
    # campaign service hands out keep these tests apart from every other test's campaigns.
    return 10**12 + secrets.randbelow(10**12)


@pytest_asyncio.fixture(loop_scope="session")
async def sql(system: System) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        yield conn


async def queue(
    sql: psycopg.AsyncConnection[tuple[object, ...]],
    campaign_id: int,
    owner: int,
    rows: list[tuple[str, str, int | None, datetime | None]],
) -> dict[str, int]:
    """Writes queue rows (address, status, variation email id, sent_at); returns recipient ids by address."""
    ids: dict[str, int] = {}
    for number, (address, status, email_id, sent_at) in enumerate(rows, start=1):
        cursor = await sql.execute(
            "INSERT INTO delivery.recipients (campaign_id, owner_user_id, subscriber_id, email_address, domain, "
            "email_id, status, sent_at, failed_at, next_attempt_at, deferred_since) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING recipient_id",
            (
                campaign_id,
                owner,
                number,
                address,
                address.rpartition("@")[2].lower(),
                email_id,
                status,
                sent_at,
                sent_at if status == "Failed" else None,
                # A Deferred row is due again some time and was deferred some time.
                LAST_SEND if status == "Deferred" else None,
                FIRST_SEND if status == "Deferred" else None,
            ),
        )
        row = await cursor.fetchone()
        assert row is not None
        ids[address] = int(str(row[0]))
    return ids


async def track(
    sql: psycopg.AsyncConnection[tuple[object, ...]], campaign_id: int, owner: int, recipient_id: int, kind: str
) -> None:
    await sql.execute(
        "INSERT INTO delivery.events (campaign_id, recipient_id, owner_user_id, kind, url) VALUES (%s, %s, %s, %s, %s)",
        (campaign_id, recipient_id, owner, kind, "https://example.com/" if kind == "click" else ""),
    )


async def statistics(
    system: System,
    user_id: int,
    campaign_ids: list[int],
    *,
    is_admin: bool = False,
    view: delivery_pb2.StatisticsView.ValueType = delivery_pb2.STATISTICS_VIEW_UNSPECIFIED,
) -> list[delivery_pb2.CampaignStatistics]:
    async with grpc.aio.insecure_channel(system.grpc_target("delivery")) as channel:
        response = await delivery_pb2_grpc.DeliveryServiceStub(channel).BatchGetCampaignStatistics(
            delivery_pb2.BatchGetCampaignStatisticsRequest(campaign_ids=campaign_ids, view=view),
            # As the campaign service asks: BatchGetCampaignStatistics is internal.
            metadata=grpc_metadata(system, user_id, is_admin=is_admin, service="campaign"),
        )
    return list(response.statistics)


async def created_campaign(system: System, user_id: int) -> int:
    """A Draft campaign of the user's, made by the campaign service (so known there, never queued)."""
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        created = await campaign_pb2_grpc.CampaignServiceStub(channel).CreateCampaign(
            campaign_pb2.CreateCampaignRequest(name="never queued"), metadata=grpc_metadata(system, user_id)
        )
    return created.campaign_id


async def sent_campaign(sql: psycopg.AsyncConnection[tuple[object, ...]], owner: int) -> int:
    """A/B campaign: 4 recipients on two domains, 3 Sent and 1 Failed; 2 opened (one twice), 1 clicked."""
    campaign_id = new_campaign_id()
    ids = await queue(
        sql,
        campaign_id,
        owner,
        [
            ("ann@Example.com", "Sent", 501, FIRST_SEND),
            ("bob@example.com", "Sent", 502, LAST_SEND),
            ("cid@other.org", "Sent", 501, datetime(2025, 6, 1, 10, 0, 20, tzinfo=UTC)),
            ("dan@other.org", "Failed", 502, None),
        ],
    )
    await track(sql, campaign_id, owner, ids["ann@Example.com"], "open")
    await track(sql, campaign_id, owner, ids["ann@Example.com"], "open")
    await track(sql, campaign_id, owner, ids["ann@Example.com"], "click")
    await track(sql, campaign_id, owner, ids["ann@Example.com"], "click")
    await track(sql, campaign_id, owner, ids["bob@example.com"], "open")
    return campaign_id


async def test_statistics_add_up_queue_rows_and_tracking_events(
    system: System, user: User, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    campaign_id = await sent_campaign(sql, user.user_id)

    [entry] = await statistics(system, user.user_id, [campaign_id])

    assert entry.campaign_id == campaign_id
    assert (entry.total_recipients, entry.total_sent, entry.total_failed) == (4, 3, 1)
    assert (entry.total_opens, entry.unique_opens, entry.total_clicks, entry.unique_clicks) == (3, 2, 2, 1)
    assert entry.first_send_time.ToDatetime(tzinfo=UTC) == FIRST_SEND
    assert entry.last_send_time.ToDatetime(tzinfo=UTC) == LAST_SEND
    variations = {v.email_id: v for v in entry.variations}
    assert set(variations) == {501, 502}
    a, b = variations[501], variations[502]
    assert (a.total_recipients, a.total_sent, a.total_failed, a.unique_opens, a.unique_clicks) == (2, 2, 0, 1, 1)
    assert (b.total_recipients, b.total_sent, b.total_failed, b.unique_opens, b.unique_clicks) == (2, 1, 1, 1, 0)
    domains = {d.domain: (d.total_recipients, d.total_sent, d.total_failed) for d in entry.domains}
    assert domains == {"example.com": (2, 2, 0), "other.org": (2, 1, 1)}


async def test_deferred_recipients_are_counted_in_the_totals_and_each_breakdown(
    system: System, user: User, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    campaign_id = new_campaign_id()
    await queue(
        sql,
        campaign_id,
        user.user_id,
        [
            ("ann@example.com", "Sent", 501, FIRST_SEND),
            ("bob@example.com", "Deferred", 502, None),
            ("cid@other.org", "Deferred", 501, None),
            ("dan@other.org", "Failed", 502, None),
        ],
    )

    [entry] = await statistics(system, user.user_id, [campaign_id])
    [totals] = await statistics(system, user.user_id, [campaign_id], view=delivery_pb2.STATISTICS_VIEW_TOTALS)

    assert (entry.total_recipients, entry.total_sent, entry.total_failed, entry.total_deferred) == (4, 1, 1, 2)
    assert totals.total_deferred == 2
    assert {v.email_id: (v.total_sent, v.total_failed, v.total_deferred) for v in entry.variations} == {
        501: (1, 0, 1),
        502: (0, 1, 1),
    }
    assert {d.domain: (d.total_sent, d.total_failed, d.total_deferred) for d in entry.domains} == {
        "example.com": (1, 0, 1),
        "other.org": (0, 1, 1),
    }


async def test_the_totals_view_leaves_out_the_breakdowns_and_nothing_else(
    system: System, user: User, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    campaign_id = await sent_campaign(sql, user.user_id)

    [unspecified] = await statistics(system, user.user_id, [campaign_id])
    [full] = await statistics(system, user.user_id, [campaign_id], view=delivery_pb2.STATISTICS_VIEW_FULL)
    [totals] = await statistics(system, user.user_id, [campaign_id], view=delivery_pb2.STATISTICS_VIEW_TOTALS)

    assert unspecified == full
    assert len(full.variations) == 2 and len(full.domains) == 2
    without_breakdowns = delivery_pb2.CampaignStatistics()
    without_breakdowns.CopyFrom(full)
    del without_breakdowns.variations[:]
    del without_breakdowns.domains[:]
    assert totals == without_breakdowns


async def test_statistics_follow_queue_rows_changed_and_deleted_after_queueing(
    system: System, user: User, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    campaign_id = await sent_campaign(sql, user.user_id)
    later = datetime(2025, 6, 1, 10, 5, 0, tzinfo=UTC)
    await sql.execute(
        "UPDATE delivery.recipients SET status = 'Sent', sent_at = %s, failed_at = NULL "
        "WHERE campaign_id = %s AND email_address = 'dan@other.org'",
        (later, campaign_id),
    )
    await sql.execute(
        "DELETE FROM delivery.recipients WHERE campaign_id = %s AND email_address = 'ann@Example.com'",
        (campaign_id,),
    )

    [entry] = await statistics(system, user.user_id, [campaign_id], view=delivery_pb2.STATISTICS_VIEW_TOTALS)

    assert (entry.total_recipients, entry.total_sent, entry.total_failed) == (3, 3, 0)
    assert entry.first_send_time.ToDatetime(tzinfo=UTC) == datetime(2025, 6, 1, 10, 0, 20, tzinfo=UTC)
    assert entry.last_send_time.ToDatetime(tzinfo=UTC) == later


async def test_total_recipients_is_the_figure_fixed_when_the_campaign_was_queued(
    system: System, user: User, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    campaign_id = await sent_campaign(sql, user.user_id)
    await sql.execute(
        "INSERT INTO delivery.campaign_runs (campaign_id, owner_user_id, total_recipients) VALUES (%s, %s, 5)",
        (campaign_id, user.user_id),
    )

    [entry] = await statistics(system, user.user_id, [campaign_id])

    assert (entry.total_recipients, entry.total_sent) == (5, 3)


async def test_a_campaign_never_queued_answers_zeros_and_entries_follow_the_request(
    system: System, user: User, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    sent = await sent_campaign(sql, user.user_id)
    never = await created_campaign(system, user.user_id)

    entries = await statistics(system, user.user_id, [never, sent, never])

    assert [e.campaign_id for e in entries] == [never, sent]
    empty = entries[0]
    assert empty == delivery_pb2.CampaignStatistics(campaign_id=never)
    assert not empty.HasField("first_send_time") and not empty.HasField("last_send_time")


async def test_an_unknown_campaign_is_not_found(system: System, user: User) -> None:
    never = await created_campaign(system, user.user_id)
    unknown = new_campaign_id()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await statistics(system, user.user_id, [never, unknown])

    failure = decode_error(refused.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CAMPAIGN_NOT_FOUND")


async def test_another_users_campaign_is_not_found_and_an_admin_sees_its_figures(
    system: System, user: User, make_user: Any, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    other: User = await make_user()
    campaign_id = await sent_campaign(sql, user.user_id)
    created = await created_campaign(system, user.user_id)

    for theirs in (campaign_id, created):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await statistics(system, other.user_id, [theirs])
        assert decode_error(refused.value).code == grpc.StatusCode.NOT_FOUND
    [as_admin] = await statistics(system, 0, [campaign_id], is_admin=True)

    assert (as_admin.total_recipients, as_admin.total_sent, as_admin.unique_opens) == (4, 3, 2)
    assert len(as_admin.variations) == 2 and len(as_admin.domains) == 2


async def test_domains_are_the_hundred_with_most_recipients(
    system: System, user: User, sql: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    campaign_id = new_campaign_id()
    # 120 domains with one recipient each, and big.example with three.
    await sql.execute(
        "INSERT INTO delivery.recipients (campaign_id, owner_user_id, subscriber_id, email_address, domain) "
        "SELECT %s, %s, n, 'r' || n || '@d' || n || '.example', 'd' || n || '.example' "
        "FROM generate_series(1, 120) AS n",
        (campaign_id, user.user_id),
    )
    await queue(
        sql,
        campaign_id,
        user.user_id,
        [(f"{name}@big.example", "Pending", None, None) for name in ("x", "y", "z")],
    )

    [entry] = await statistics(system, user.user_id, [campaign_id])

    assert entry.total_recipients == 123
    assert len(entry.domains) == 100
    assert (entry.domains[0].domain, entry.domains[0].total_recipients) == ("big.example", 3)
    assert entry.variations == []


async def test_an_empty_request_answers_an_empty_response(system: System, user: User) -> None:
    assert await statistics(system, user.user_id, []) == []


async def test_more_than_ten_thousand_campaigns_is_invalid(system: System, user: User) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await statistics(system, user.user_id, list(range(1, 10_002)))

    failure = decode_error(raised.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "TOO_MANY_CAMPAIGNS"
    assert failure.field_reasons() == [("campaign_ids", "TOO_MANY_CAMPAIGNS")]
    # 10,000 ids are within the limit: the answer is then about the campaigns (these are not the user's).
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await statistics(system, user.user_id, list(range(1, 10_001)))
    failure = decode_error(raised.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CAMPAIGN_NOT_FOUND")
