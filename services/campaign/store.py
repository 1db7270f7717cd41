"""SQL for the campaign schema: one function per query, each limited to the owner it is given (None: every owner)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Row,
    Select,
    SmallInteger,
    Table,
    Text,
    and_,
    any_,
    asc,
    bindparam,
    column,
    delete,
    desc,
    func,
    insert,
    literal,
    or_,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.campaign.domain import (
    AutoResend,
    Campaign,
    CampaignFilter,
    CampaignStatus,
    FutureSchedule,
    ListQuery,
    OrderField,
    RecipientSource,
    RecursiveSchedule,
    Schedule,
    ScheduleType,
    SplitTest,
    SplitTestSettings,
    Targeting,
    Variation,
    Winner,
)
from services.campaign.sending import AutoResendPlan, SendProgress
from services.common import db
from services.common.sql import LIKE_ESCAPE, contains_pattern, id_array

SCHEMA = "campaign"
metadata = MetaData(schema=SCHEMA)

campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", BigInteger, primary_key=True),
    Column("owner_user_id", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("status_reason", Text, nullable=False),
    Column("email_id", BigInteger),
    Column("schedule_type", Text, nullable=False),
    Column("original_campaign_id", BigInteger, ForeignKey("campaigns.campaign_id", ondelete="CASCADE")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("send_started_at", DateTime(timezone=True)),
    Column("scheduled_at", DateTime(timezone=True)),
    Column("schedule_time_zone", Text, nullable=False),
    Column("recurrence", JSONB(none_as_null=True)),
    Column("recipients_included", JSONB, nullable=False),
    Column("recipients_excluded", JSONB, nullable=False),
    Column("rules_bundle", JSONB(none_as_null=True)),
    Column("auto_resend_enabled", Boolean, nullable=False),
    Column("auto_resend_wait_days", Integer, nullable=False),
    Column("auto_resend_subject", Text, nullable=False),
    Column("auto_resend_preheader", Text, nullable=False),
    Column("approval_user_explanation", Text, nullable=False),
    Column("google_analytics_domains", Text, nullable=False),
    Column("publish_on_rss", Boolean, nullable=False),
    Column("s2s_enabled", Boolean, nullable=False),
    Column("relay", Text, nullable=False, server_default=""),
    Column("send_finished_at", DateTime(timezone=True)),
    # Sending progress, kept by the picker and the campaign_finished consumer (sending.SendProgress).
    Column("send_requests", Integer, nullable=False, server_default="0"),
    Column("occurrences_started", Integer, nullable=False, server_default="0"),
    Column("occurrence_open", Boolean, nullable=False, server_default="false"),
    # Set only on the auto-resend created for that campaign (at most one: UNIQUE); never written by a client.
    Column("auto_resend_of", BigInteger, ForeignKey("campaigns.campaign_id", ondelete="CASCADE"), unique=True),
)

variations = Table(
    "campaign_variations",
    metadata,
    Column("campaign_id", BigInteger, ForeignKey("campaigns.campaign_id", ondelete="CASCADE"), primary_key=True),
    Column("position", SmallInteger, primary_key=True),
    Column("email_id", BigInteger, nullable=False),
    Column("weight", Integer, nullable=False),
)

split_tests = Table(
    "campaign_split_tests",
    metadata,
    Column("split_test_id", BigInteger, primary_key=True),
    Column("campaign_id", BigInteger, ForeignKey("campaigns.campaign_id", ondelete="CASCADE"), nullable=False),
    Column("test_size_percent", Integer, nullable=False),
    Column("test_duration_hours", Integer, nullable=False),
    Column("winner", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The email content table belongs to the EmailService code; campaigns only ask which emails are live. A
# lightweight table clause keeps it out of this module's MetaData.
emails = table(
    "emails",
    column("email_id", BigInteger),
    column("owner_user_id", BigInteger),
    column("deleted_at"),
    schema=SCHEMA,
)

# What a copy takes from its source row: content, targeting, schedule and tracking settings. Status,
# statistics, send times and the auto-resend link are never copied; variations and the split test settings
# are copied by their own statements. Every later content or targeting column belongs in this list.
COPIED_COLUMNS: tuple[str, ...] = (
    "email_id",
    "schedule_type",
    "scheduled_at",
    "schedule_time_zone",
    "recurrence",
    "recipients_included",
    "recipients_excluded",
    "rules_bundle",
    "auto_resend_enabled",
    "auto_resend_wait_days",
    "auto_resend_subject",
    "auto_resend_preheader",
    "approval_user_explanation",
    "google_analytics_domains",
    "publish_on_rss",
    "s2s_enabled",
    "relay",
)

_c = campaigns.c
# When a campaign was sent, or else when it is due: what date filters and SendDate ordering look at.
_send_date = func.coalesce(_c.send_started_at, _c.scheduled_at)


def _variation_list() -> Any:
    v = variations.c
    entry = func.jsonb_build_object("email_id", v.email_id, "weight", v.weight)
    return (
        select(func.jsonb_agg(aggregate_order_by(entry, v.position)))
        .where(v.campaign_id == _c.campaign_id)
        .scalar_subquery()
        .label("variation_list")
    )


def _full_campaigns() -> Select[Any]:
    """Campaign rows with their variations (as a jsonb list) and split test (NULL columns when none)."""
    s = split_tests.c
    return select(
        campaigns,
        _variation_list(),
        s.split_test_id.label("split_test_id"),
        s.test_size_percent,
        s.test_duration_hours,
        s.winner,
    ).select_from(campaigns.outerjoin(split_tests, s.campaign_id == _c.campaign_id))


def _schedule(row: Row[Any]) -> Schedule:
    schedule_type = ScheduleType(row.schedule_type)
    if schedule_type is ScheduleType.FUTURE:
        return Schedule(schedule_type, future=FutureSchedule(row.scheduled_at, row.schedule_time_zone))
    if schedule_type is ScheduleType.RECURSIVE:
        rule = row.recurrence
        return Schedule(
            schedule_type,
            recursive=RecursiveSchedule(
                days_of_week=tuple(rule["days_of_week"]),
                days_of_month=tuple(rule["days_of_month"]),
                months=tuple(rule["months"]),
                hours=tuple(rule["hours"]),
                minutes=tuple(rule["minutes"]),
                max_instances=rule["max_instances"],
                time_zone=row.schedule_time_zone,
            ),
        )
    return Schedule(schedule_type)


def _sources(items: list[dict[str, int]]) -> tuple[RecipientSource, ...]:
    return tuple(RecipientSource(item["list_id"], item["segment_id"]) for item in items)


def _campaign(row: Row[Any], variation_list: Sequence[Variation], split_test: SplitTest | None) -> Campaign:
    return Campaign(
        campaign_id=row.campaign_id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        status=CampaignStatus(row.status),
        status_reason=row.status_reason,
        email_id=row.email_id,
        original_campaign_id=row.original_campaign_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        send_started_at=row.send_started_at,
        schedule=_schedule(row),
        scheduled_at=row.scheduled_at,
        targeting=Targeting(
            included=_sources(row.recipients_included),
            excluded=_sources(row.recipients_excluded),
            rules_bundle=row.rules_bundle,
        ),
        auto_resend=AutoResend(
            enabled=row.auto_resend_enabled,
            wait_days=row.auto_resend_wait_days,
            subject=row.auto_resend_subject,
            preheader_text=row.auto_resend_preheader,
        ),
        variations=tuple(variation_list),
        split_test=split_test,
        approval_user_explanation=row.approval_user_explanation,
        google_analytics_domains=row.google_analytics_domains,
        publish_on_rss=row.publish_on_rss,
        s2s_enabled=row.s2s_enabled,
        send_finished_at=row.send_finished_at,
        auto_resend_of=row.auto_resend_of,
        relay=row.relay,
    )


def _split_test(row: Row[Any]) -> SplitTest:
    return SplitTest(
        split_test_id=row.split_test_id,
        campaign_id=row.campaign_id,
        test_size_percent=row.test_size_percent,
        test_duration_hours=row.test_duration_hours,
        winner=Winner(row.winner),
    )


def _full_campaign(row: Row[Any]) -> Campaign:
    variation_list = [Variation(item["email_id"], item["weight"]) for item in row.variation_list or ()]
    split_test = _split_test(row) if row.split_test_id is not None else None
    return _campaign(row, variation_list, split_test)


def _settings_values(campaign: Campaign) -> dict[str, Any]:
    """The columns a client's change (update, pause, resume, cancel, approve) may write."""
    schedule = campaign.schedule
    rule = schedule.recursive
    time_zone = schedule.future.time_zone if schedule.future else rule.time_zone if rule else ""
    targeting = campaign.targeting
    return {
        "name": campaign.name,
        "status": campaign.status.value,
        "status_reason": campaign.status_reason,
        "email_id": campaign.email_id,
        "original_campaign_id": campaign.original_campaign_id,
        "schedule_type": schedule.type.value,
        "scheduled_at": campaign.scheduled_at,
        "schedule_time_zone": time_zone,
        "recurrence": None
        if rule is None
        else {
            "days_of_week": list(rule.days_of_week),
            "days_of_month": list(rule.days_of_month),
            "months": list(rule.months),
            "hours": list(rule.hours),
            "minutes": list(rule.minutes),
            "max_instances": rule.max_instances,
        },
        "recipients_included": [{"list_id": s.list_id, "segment_id": s.segment_id} for s in targeting.included],
        "recipients_excluded": [{"list_id": s.list_id, "segment_id": s.segment_id} for s in targeting.excluded],
        "rules_bundle": dict(targeting.rules_bundle) if targeting.rules_bundle is not None else None,
        "auto_resend_enabled": campaign.auto_resend.enabled,
        "auto_resend_wait_days": campaign.auto_resend.wait_days,
        "auto_resend_subject": campaign.auto_resend.subject,
        "auto_resend_preheader": campaign.auto_resend.preheader_text,
        "approval_user_explanation": campaign.approval_user_explanation,
        "google_analytics_domains": campaign.google_analytics_domains,
        "publish_on_rss": campaign.publish_on_rss,
        "s2s_enabled": campaign.s2s_enabled,
        "relay": campaign.relay,
        "updated_at": func.now(),
    }


def _owned_by(owner_user_id: int | None) -> list[ColumnElement[bool]]:
    return [] if owner_user_id is None else [_c.owner_user_id == owner_user_id]


async def insert_campaign(conn: AsyncConnection, *, owner_user_id: int, name: str) -> Campaign:
    """The new Draft, not yet scheduled campaign."""
    stmt = (
        insert(campaigns)
        .values(
            owner_user_id=owner_user_id,
            name=name,
            status=CampaignStatus.DRAFT.value,
            schedule_type=ScheduleType.NOT_SCHEDULED.value,
        )
        .returning(*campaigns.c)
    )
    return _campaign((await conn.execute(stmt)).one(), (), None)


# Built once: GetCampaign is the hottest read, and building the statement cost more than running it.
_BY_ID = _full_campaigns().where(_c.campaign_id == bindparam("campaign_id"))
_BY_ID_AND_OWNER = _BY_ID.where(_c.owner_user_id == bindparam("owner_user_id"))


_READ_BY_ID = db.CompiledRead.of(_BY_ID)
_READ_BY_ID_AND_OWNER = db.CompiledRead.of(_BY_ID_AND_OWNER)


async def read_campaign(reads: db.ReadPool, campaign_id: int, owner_user_id: int | None) -> Campaign | None:
    """campaign_by_id outside any transaction, on the read pool: what GetCampaign answers."""
    if owner_user_id is None:
        row = await reads.one_or_none(_READ_BY_ID, campaign_id=campaign_id)
    else:
        row = await reads.one_or_none(_READ_BY_ID_AND_OWNER, campaign_id=campaign_id, owner_user_id=owner_user_id)
    return _full_campaign(row) if row is not None else None


async def campaign_by_id(conn: AsyncConnection, campaign_id: int, owner_user_id: int | None) -> Campaign | None:
    if owner_user_id is None:
        result = await conn.execute(_BY_ID, {"campaign_id": campaign_id})
    else:
        result = await conn.execute(_BY_ID_AND_OWNER, {"campaign_id": campaign_id, "owner_user_id": owner_user_id})
    row = result.one_or_none()
    return _full_campaign(row) if row is not None else None


async def campaign_for_update(
    conn: AsyncConnection, campaign_id: int, owner_user_id: int | None
) -> Campaign | None:
    """The campaign, its row locked until the transaction ends, so that concurrent status changes serialize."""
    stmt = (
        _full_campaigns()
        .where(_c.campaign_id == campaign_id, *_owned_by(owner_user_id))
        .with_for_update(of=campaigns)
    )
    row = (await conn.execute(stmt)).one_or_none()
    return _full_campaign(row) if row is not None else None


async def campaigns_by_ids(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner_user_id: int | None
) -> list[Campaign]:
    """Those of the campaigns that exist and are in scope, by campaign id."""
    stmt = (
        _full_campaigns()
        .where(_c.campaign_id == any_(id_array(campaign_ids)), *_owned_by(owner_user_id))
        .order_by(_c.campaign_id)
    )
    return [_full_campaign(row) for row in await conn.execute(stmt)]


async def campaign_exists(conn: AsyncConnection, campaign_id: int, owner_user_id: int | None) -> bool:
    stmt = select(_c.campaign_id).where(_c.campaign_id == campaign_id, *_owned_by(owner_user_id))
    return (await conn.execute(stmt)).one_or_none() is not None


async def save_campaign(conn: AsyncConnection, campaign: Campaign, *, replace_variations: bool) -> Campaign:
    """The campaign as stored after writing its settings (and, when asked, its variations) over the row."""
    stmt = (
        update(campaigns)
        .where(_c.campaign_id == campaign.campaign_id)
        .values(**_settings_values(campaign))
        .returning(*campaigns.c)
    )
    row = (await conn.execute(stmt)).one()
    if replace_variations:
        await conn.execute(delete(variations).where(variations.c.campaign_id == campaign.campaign_id))
        if campaign.variations:
            await conn.execute(
                insert(variations),
                [
                    {
                        "campaign_id": campaign.campaign_id,
                        "position": position,
                        "email_id": variation.email_id,
                        "weight": variation.weight,
                    }
                    for position, variation in enumerate(campaign.variations)
                ],
            )
    return _campaign(row, campaign.variations, campaign.split_test)


async def live_email_ids(conn: AsyncConnection, owner_user_id: int, email_ids: Sequence[int]) -> frozenset[int]:
    """Those of the emails that belong to the owner and are not deleted."""
    if not email_ids:
        return frozenset()
    stmt = select(emails.c.email_id).where(
        emails.c.email_id == any_(id_array(email_ids)),
        emails.c.owner_user_id == owner_user_id,
        emails.c.deleted_at.is_(None),
    )
    return frozenset(row.email_id for row in await conn.execute(stmt))


async def original_campaign_found(
    conn: AsyncConnection, campaign_id: int, original_campaign_id: int, owner_user_id: int
) -> bool:
    """Whether the original is the owner's campaign and neither it nor its own originals is `campaign_id`."""
    chain = (
        select(_c.campaign_id, _c.original_campaign_id)
        .where(_c.campaign_id == original_campaign_id, _c.owner_user_id == owner_user_id)
        .cte("chain", recursive=True)
    )
    parent = campaigns.alias("parent")
    # UNION (not UNION ALL) ends the walk should the data ever hold a cycle.
    chain = chain.union(
        select(parent.c.campaign_id, parent.c.original_campaign_id).join_from(
            parent, chain, parent.c.campaign_id == chain.c.original_campaign_id
        )
    )
    stmt = select(func.count(), func.bool_or(chain.c.campaign_id == campaign_id)).select_from(chain)
    found, loops = (await conn.execute(stmt)).one()
    return bool(found) and not loops


def _matching(campaign_filter: CampaignFilter) -> list[ColumnElement[bool]]:
    conditions = _owned_by(campaign_filter.owner_user_id)
    alternatives: list[ColumnElement[bool]] = []
    if campaign_filter.statuses:
        alternatives.append(_c.status.in_([status.value for status in campaign_filter.statuses]))
    if campaign_filter.scheduled:
        alternatives.append(
            and_(
                _c.status == CampaignStatus.READY.value,
                _c.schedule_type.in_([ScheduleType.FUTURE.value, ScheduleType.RECURSIVE.value]),
            )
        )
    if alternatives:
        conditions.append(or_(*alternatives))
    if campaign_filter.schedule_types:
        conditions.append(_c.schedule_type.in_([t.value for t in campaign_filter.schedule_types]))
    if campaign_filter.search:
        conditions.append(_c.name.ilike(contains_pattern(campaign_filter.search), escape=LIKE_ESCAPE))
    if campaign_filter.campaign_ids:
        conditions.append(_c.campaign_id == any_(id_array(campaign_filter.campaign_ids)))
    if campaign_filter.publish_on_rss is not None:
        conditions.append(_c.publish_on_rss == campaign_filter.publish_on_rss)
    if campaign_filter.tagged_campaign_ids is not None:
        conditions.append(_c.campaign_id == any_(id_array(campaign_filter.tagged_campaign_ids)))
    # A campaign neither sent nor scheduled has no send date and so never lies in a date range.
    if campaign_filter.send_time_from is not None:
        conditions.append(_send_date >= campaign_filter.send_time_from)
    if campaign_filter.send_time_to is not None:
        conditions.append(_send_date < campaign_filter.send_time_to)
    if not campaign_filter.include_auto_resend:
        conditions.append(_c.original_campaign_id.is_(None))
    return conditions


def _ordering(campaign_filter: CampaignFilter) -> list[Any]:
    direction = desc if campaign_filter.descending else asc
    tiebreak = direction(_c.campaign_id)
    if campaign_filter.order_by is OrderField.CAMPAIGN_ID:
        return [tiebreak]
    if campaign_filter.order_by is OrderField.SEND_TIME:
        # Campaigns neither sent nor scheduled have no send date; they come last whichever the direction.
        return [direction(_send_date).nulls_last(), tiebreak]
    order_column: Any = {
        # Names sort the way people read them, not capitals first.
        OrderField.NAME: func.lower(_c.name),
        OrderField.STATUS: _c.status,
        OrderField.CREATE_TIME: _c.created_at,
        OrderField.UPDATE_TIME: _c.updated_at,
    }[campaign_filter.order_by]
    return [direction(order_column), tiebreak]


async def count_matching_campaigns(conn: AsyncConnection, campaign_filter: CampaignFilter) -> int:
    stmt = select(func.count()).select_from(campaigns).where(*_matching(campaign_filter))
    return int((await conn.execute(stmt)).scalar_one())


async def campaign_page(conn: AsyncConnection, query: ListQuery) -> tuple[list[Campaign], int]:
    """One page of the matching campaigns in the filter's order, and how many match in all.

    The page is chosen over bare campaign rows first and only its rows are then completed with
    variations and split tests: completing every match before LIMIT would cost a subquery per match.
    """
    ordering = _ordering(query.filter)
    page_ids = (
        select(
            _c.campaign_id.label("page_campaign_id"),
            func.count().over().label("total_matches"),
            func.row_number().over(order_by=ordering).label("position"),
        )
        .where(*_matching(query.filter))
        .order_by(*ordering)
        .offset(query.offset)
    )
    if query.limit is not None:
        page_ids = page_ids.limit(query.limit)
    page = page_ids.subquery("page")
    stmt = (
        _full_campaigns()
        .add_columns(page.c.total_matches)
        .join(page, page.c.page_campaign_id == _c.campaign_id)
        .order_by(page.c.position)
    )
    rows = (await conn.execute(stmt)).all()
    if rows:
        return [_full_campaign(row) for row in rows], int(rows[0].total_matches)
    # A page past the end has no row to carry the window count, so count separately.
    total = 0 if query.offset == 0 else await count_matching_campaigns(conn, query.filter)
    return [], total


async def matching_campaign_ids(conn: AsyncConnection, campaign_filter: CampaignFilter, limit: int) -> list[int]:
    """The ids of the first `limit` matching campaigns in the filter's order."""
    stmt = (
        select(_c.campaign_id)
        .where(*_matching(campaign_filter))
        .order_by(*_ordering(campaign_filter))
        .limit(limit)
    )
    return [row.campaign_id for row in await conn.execute(stmt)]


async def upsert_split_test(
    conn: AsyncConnection, campaign_id: int, owner_user_id: int | None, settings: SplitTestSettings
) -> SplitTest | None:
    """The campaign's split test with these settings (created, or replaced keeping its id); None when the
    campaign is not in scope."""
    source = select(
        _c.campaign_id,
        literal(settings.test_size_percent, Integer),
        literal(settings.test_duration_hours, Integer),
        literal(settings.winner.value, Text),
    ).where(_c.campaign_id == campaign_id, *_owned_by(owner_user_id))
    upsert = pg_insert(split_tests).from_select(
        ["campaign_id", "test_size_percent", "test_duration_hours", "winner"], source
    )
    stmt = upsert.on_conflict_do_update(
        index_elements=[split_tests.c.campaign_id],
        set_={
            "test_size_percent": upsert.excluded.test_size_percent,
            "test_duration_hours": upsert.excluded.test_duration_hours,
            "winner": upsert.excluded.winner,
            "updated_at": func.now(),
        },
    ).returning(*split_tests.c)
    row = (await conn.execute(stmt)).one_or_none()
    return _split_test(row) if row is not None else None


# Duplicates the variation emails of the source for the copy and points the copy's variations at them. The
# new ids are drawn first so that old and new ids pair up; the email row is copied whole through jsonb so that
# every content column (including ones added later) travels with it.
_COPY_VARIATIONS = text(
    """
    WITH new_ids AS (
        SELECT old_id, nextval(pg_get_serial_sequence('campaign.emails', 'email_id')) AS new_id
        FROM (SELECT DISTINCT email_id AS old_id FROM campaign.campaign_variations WHERE campaign_id = :source)
             AS source_emails
    ), copied AS (
        INSERT INTO campaign.emails
        SELECT (jsonb_populate_record(
                    NULL::campaign.emails,
                    to_jsonb(e) || jsonb_build_object(
                        'email_id', n.new_id, 'created_at', now(), 'updated_at', now(), 'deleted_at', NULL)
               )).*
        FROM new_ids n JOIN campaign.emails e ON e.email_id = n.old_id
    )
    INSERT INTO campaign.campaign_variations (campaign_id, position, email_id, weight)
    SELECT :copy, v.position, n.new_id, v.weight
    FROM campaign.campaign_variations v JOIN new_ids n ON n.old_id = v.email_id
    WHERE v.campaign_id = :source
    """
)


async def insert_copy_of_campaign(
    conn: AsyncConnection, source_id: int, owner_user_id: int | None, *, name: str
) -> Campaign | None:
    """The new Draft copied from the source (same owner), with its own copies of the variation emails and the
    split test settings; None when the source is not in scope."""
    source = select(
        _c.owner_user_id,
        literal(name, Text),
        literal(CampaignStatus.DRAFT.value, Text),
        *(_c[column_name] for column_name in COPIED_COLUMNS),
    ).where(_c.campaign_id == source_id, *_owned_by(owner_user_id))
    stmt = (
        insert(campaigns)
        .from_select(["owner_user_id", "name", "status", *COPIED_COLUMNS], source)
        .returning(_c.campaign_id)
    )
    copy_id = (await conn.execute(stmt)).scalar_one_or_none()
    if copy_id is None:
        return None
    await conn.execute(_COPY_VARIATIONS, {"source": source_id, "copy": copy_id})
    s = split_tests.c
    await conn.execute(
        insert(split_tests).from_select(
            ["campaign_id", "test_size_percent", "test_duration_hours", "winner"],
            select(literal(copy_id, BigInteger), s.test_size_percent, s.test_duration_hours, s.winner).where(
                s.campaign_id == source_id
            ),
        )
    )
    return await campaign_by_id(conn, copy_id, None)


async def delete_campaigns_with_auto_resends(
    conn: AsyncConnection, campaign_ids: Sequence[int], owner_user_id: int | None
) -> list[tuple[int, int]]:
    """(campaign_id, owner_user_id) of every campaign deleted: those in scope and, recursively, their auto-resends."""
    doomed = (
        select(_c.campaign_id)
        .where(_c.campaign_id == any_(id_array(campaign_ids)), *_owned_by(owner_user_id))
        .cte("doomed", recursive=True)
    )
    child = campaigns.alias("child")
    # A resend Herald made stays the original's even when a client pointed its OriginalCampaignID elsewhere.
    doomed = doomed.union(
        select(child.c.campaign_id).join_from(
            child,
            doomed,
            or_(
                child.c.original_campaign_id == doomed.c.campaign_id,
                child.c.auto_resend_of == doomed.c.campaign_id,
            ),
        )
    )
    stmt = (
        delete(campaigns)
        .where(_c.campaign_id.in_(select(doomed.c.campaign_id)))
        .returning(_c.campaign_id, _c.owner_user_id)
    )
    return [(row.campaign_id, row.owner_user_id) for row in await conn.execute(stmt)]


# --- sending: the picker, delivery's reports and the admin retry --------------------------------------------


def _send_progress(row: Row[Any]) -> SendProgress:
    return SendProgress(
        send_requests=row.send_requests,
        occurrences_started=row.occurrences_started,
        occurrence_open=row.occurrence_open,
    )


async def due_campaigns_for_update(
    conn: AsyncConnection, limit: int, now: datetime
) -> list[tuple[Campaign, SendProgress]]:
    """Up to `limit` Ready campaigns due at `now` (the service's clock), oldest first, locked until the transaction ends.

    SKIP LOCKED: a campaign another picker (another replica) holds is left to it, never started twice.
    """
    stmt = (
        _full_campaigns()
        .where(
            _c.status == CampaignStatus.READY.value,
            _c.schedule_type.in_(
                [ScheduleType.IMMEDIATE.value, ScheduleType.FUTURE.value, ScheduleType.RECURSIVE.value]
            ),
            _c.scheduled_at.is_not(None),
            _c.scheduled_at <= now,
        )
        .order_by(_c.scheduled_at, _c.campaign_id)
        .limit(limit)
        .with_for_update(of=campaigns, skip_locked=True)
    )
    return [(_full_campaign(row), _send_progress(row)) for row in await conn.execute(stmt)]


async def sending_campaign_for_update(
    conn: AsyncConnection, campaign_id: int, owner_user_id: int | None
) -> tuple[Campaign, SendProgress] | None:
    """The campaign and its sending progress, its row locked until the transaction ends."""
    stmt = (
        _full_campaigns()
        .where(_c.campaign_id == campaign_id, *_owned_by(owner_user_id))
        .with_for_update(of=campaigns)
    )
    row = (await conn.execute(stmt)).one_or_none()
    return (_full_campaign(row), _send_progress(row)) if row is not None else None


async def save_sending(conn: AsyncConnection, campaign: Campaign, progress: SendProgress) -> None:
    """Writes what sending changes: status and its reason, send times, the next due instant and the progress."""
    await conn.execute(
        update(campaigns)
        .where(_c.campaign_id == campaign.campaign_id)
        .values(
            status=campaign.status.value,
            status_reason=campaign.status_reason,
            send_started_at=campaign.send_started_at,
            send_finished_at=campaign.send_finished_at,
            scheduled_at=campaign.scheduled_at,
            send_requests=progress.send_requests,
            occurrences_started=progress.occurrences_started,
            occurrence_open=progress.occurrence_open,
            updated_at=func.now(),
        )
    )


# --- auto-resends ------------------------------------------------------------------------------------------------

# Copies the original's email and variation emails for its resend, under the resend's subject and preheader,
# and points the resend (and its variations, same positions and weights) at the copies. The original's emails
# stay as they were. New ids are drawn first so that old and new ids pair up; rows are copied whole through
# jsonb, as for _COPY_VARIATIONS.
_COPY_RESEND_CONTENT = text(
    """
    WITH original AS (
        SELECT email_id FROM campaign.campaigns WHERE campaign_id = :original
    ), new_ids AS (
        SELECT old_id, nextval(pg_get_serial_sequence('campaign.emails', 'email_id')) AS new_id
        FROM (
            SELECT email_id AS old_id FROM original WHERE email_id IS NOT NULL
            UNION
            SELECT email_id FROM campaign.campaign_variations WHERE campaign_id = :original
        ) AS source_emails
    ), copied AS (
        INSERT INTO campaign.emails
        SELECT (jsonb_populate_record(
                    NULL::campaign.emails,
                    to_jsonb(e) || jsonb_build_object(
                        'email_id', n.new_id, 'subject', CAST(:subject AS text),
                        'preheader_text', CAST(:preheader AS text),
                        'created_at', now(), 'updated_at', now(), 'deleted_at', NULL)
               )).*
        FROM new_ids n JOIN campaign.emails e ON e.email_id = n.old_id
    ), content AS (
        UPDATE campaign.campaigns AS resend SET email_id = n.new_id
        FROM original JOIN new_ids n ON n.old_id = original.email_id
        WHERE resend.campaign_id = :resend
    )
    INSERT INTO campaign.campaign_variations (campaign_id, position, email_id, weight)
    SELECT :resend, v.position, n.new_id, v.weight
    FROM campaign.campaign_variations v JOIN new_ids n ON n.old_id = v.email_id
    WHERE v.campaign_id = :original
    """
)


async def inserted_auto_resend_id(conn: AsyncConnection, plan: AutoResendPlan) -> int | None:
    """Creates the original's auto-resend (Ready, due at the plan's instant, the original's targeting and a copy
    of its content under the resend's subject and preheader) and returns its id; None when it has one already.

    The UNIQUE auto_resend_of makes the insert a no-op the second time, in this transaction or another.
    """
    source = select(
        _c.owner_user_id,
        literal(plan.name, Text),
        literal(CampaignStatus.READY.value, Text),
        literal(ScheduleType.FUTURE.value, Text),
        literal(plan.due_at, DateTime(timezone=True)),
        _c.schedule_time_zone,
        _c.campaign_id,
        _c.campaign_id,
        _c.recipients_included,
        _c.recipients_excluded,
        _c.rules_bundle,
        _c.google_analytics_domains,
        _c.s2s_enabled,
        _c.relay,
    ).where(_c.campaign_id == plan.original_campaign_id)
    stmt = (
        pg_insert(campaigns)
        .from_select(
            [
                "owner_user_id",
                "name",
                "status",
                "schedule_type",
                "scheduled_at",
                "schedule_time_zone",
                "original_campaign_id",
                "auto_resend_of",
                "recipients_included",
                "recipients_excluded",
                "rules_bundle",
                "google_analytics_domains",
                "s2s_enabled",
                "relay",
            ],
            source,
        )
        .on_conflict_do_nothing(index_elements=[_c.auto_resend_of])
        .returning(_c.campaign_id)
    )
    resend_id: int | None = (await conn.execute(stmt)).scalar_one_or_none()
    if resend_id is None:
        return None
    await conn.execute(
        _COPY_RESEND_CONTENT,
        {
            "original": plan.original_campaign_id,
            "resend": resend_id,
            "subject": plan.subject,
            "preheader": plan.preheader_text,
        },
    )
    return resend_id


async def auto_resend_for_update(
    conn: AsyncConnection, original_campaign_id: int
) -> tuple[Campaign, SendProgress] | None:
    """The auto-resend Herald created for the campaign, with its sending progress, locked; None when it has none."""
    stmt = _full_campaigns().where(_c.auto_resend_of == original_campaign_id).with_for_update(of=campaigns)
    row = (await conn.execute(stmt)).one_or_none()
    return (_full_campaign(row), _send_progress(row)) if row is not None else None


# --- trace context (services/common/tracing.py) ----------------------------------------------------------------


async def keep_trace_context(conn: AsyncConnection, campaign_id: int, traceparent: str) -> None:
    """Keeps the traceparent of the request that made the campaign Ready, for the picker that starts it later."""
    await conn.execute(
        text("UPDATE campaign.campaigns SET traceparent = :t WHERE campaign_id = :c"),
        {"t": traceparent, "c": campaign_id},
    )


async def taken_trace_contexts(conn: AsyncConnection, campaign_ids: Sequence[int]) -> dict[int, str]:
    """The kept traceparents of the campaigns, by id, cleared as they are read: a later occurrence (a recurring
    campaign's) starts a trace of its own."""
    rows = await conn.execute(
        text(
            "UPDATE campaign.campaigns AS c SET traceparent = NULL FROM campaign.campaigns AS kept "
            "WHERE c.campaign_id = kept.campaign_id AND c.campaign_id = ANY(:ids) AND kept.traceparent IS NOT NULL "
            "RETURNING c.campaign_id, kept.traceparent"
        ),
        {"ids": list(campaign_ids)},
    )
    return {campaign_id: traceparent for campaign_id, traceparent in rows}
