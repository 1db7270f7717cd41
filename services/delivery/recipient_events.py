"""Per-recipient DeliveryEvents (queued, sent, failed, bounced, complained, opened, clicked, unsubscribed) as outbox rows.

One message carries the events of one campaign that happened together: a batch of queued rows, a worker's
window, a tracking report. Where the rows come from a statement (queueing, a window's outcomes), the message
is built in SQL from the rows that statement returns, in the same statement (`json_sql`), so nothing is read
back per recipient; elsewhere it is made in Python (`outbox_rows`). Either way it is the proto3 JSON form of
`herald.delivery.v1.DeliveryEvents`, published on `<namespace>.events.delivery.recipients.<owner>.<campaign>`.
Runs that are not campaigns (a list's opt-in confirmations, a user's previews) announce nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from google.protobuf import timestamp_pb2
from herald.delivery.v1 import delivery_pb2

from services.common import events
from services.common.outbox import UnitOfWork
from services.delivery import sending

# The most events in one message: a message stays far below NATS's 1 MB payload limit whatever the batch size.
MAX_EVENTS_PER_MESSAGE = 500

KIND_NAMES = {
    value: delivery_pb2.DeliveryEventKind.Name(value) for value in delivery_pb2.DeliveryEventKind.values()
}


def announces(campaign_id: int) -> bool:
    """Whether the run's recipients have events: a campaign's do, an opt-in or preview run's do not."""
    return not sending.is_opt_in_run(campaign_id)


def _rfc3339(column: str) -> str:
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def event_json(alias: str, kind: str, occur_time: str, detail: str = "NULL") -> str:
    """SQL: one DeliveryEvent as a JSON object from the row `alias` (owner_user_id, campaign_id, recipient_id,
    subscriber_id, email_address), with `kind` (SQL giving the enum's name), `occur_time` (a timestamptz)
    and `detail` (text) as SQL expressions; fields at their default are left out, as the Python encoder does."""
    return f"""json_strip_nulls(json_build_object(
        'kind', {kind},
        'owner_user_id', CAST({alias}.owner_user_id AS text),
        'campaign_id', CAST({alias}.campaign_id AS text),
        'recipient_id', CAST({alias}.recipient_id AS text),
        'subscriber_id', CAST(NULLIF({alias}.subscriber_id, 0) AS text),
        'email_address', NULLIF({alias}.email_address, ''),
        'occur_time', {_rfc3339(occur_time)},
        'detail', NULLIF({detail}, '')))"""


def messages_sql(source: str, event: str, group: str, subject: str, msg_id: str, where: str = "true") -> str:
    """SQL: an INSERT of DeliveryEvents outbox rows from the rows of `source` (a CTE or table, alias `a`) that
    match `where`, one message per value of `group` (an SQL expression; the rows of one campaign), events in
    recipient order. `subject` is the SQL of the subject's fixed part; `msg_id` the SQL of the Nats-Msg-Id,
    which may use `g` (the group's value)."""
    return f"""
        INSERT INTO delivery.outbox (subject, msg_id, payload)
        SELECT {subject} || '.' || owner_user_id || '.' || campaign_id, {msg_id},
               convert_to(json_build_object('events', payload)::text, 'UTF8')
        FROM (
            SELECT min(a.owner_user_id) AS owner_user_id, min(a.campaign_id) AS campaign_id, {group} AS g,
                   json_agg({event} ORDER BY a.recipient_id) AS payload
            FROM {source} AS a
            WHERE {where}
            GROUP BY {group}
        ) AS grouped
        ON CONFLICT (msg_id) DO NOTHING"""


def timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def publish(work: UnitOfWork, happened: Iterable[delivery_pb2.DeliveryEvent], *, key: str | None = None) -> None:
    """Publishes `happened` (any campaigns) with `work`: one message per campaign and up to
    MAX_EVENTS_PER_MESSAGE events; `key` (with the campaign and a part number) makes the Nats-Msg-Ids."""
    by_campaign: dict[tuple[int, int], list[delivery_pb2.DeliveryEvent]] = {}
    for event in happened:
        if announces(event.campaign_id):
            by_campaign.setdefault((event.owner_user_id, event.campaign_id), []).append(event)
    for (owner_user_id, campaign_id), of_campaign in by_campaign.items():
        for part, start in enumerate(range(0, len(of_campaign), MAX_EVENTS_PER_MESSAGE)):
            chunk: Sequence[delivery_pb2.DeliveryEvent] = of_campaign[start : start + MAX_EVENTS_PER_MESSAGE]
            work.publish(
                events.DELIVERY_EVENTS,
                delivery_pb2.DeliveryEvents(events=chunk),
                key=None if key is None else f"{key}:{campaign_id}:{part}",
                subject=f"{work.subject(events.DELIVERY_EVENTS)}.{owner_user_id}.{campaign_id}",
            )
