"""Deferred mail: a recipient answered with a temporary failure is retried through JetStream, on a mail server's schedule.

A send answered with a 4xx reply (greylisting, throttling, a full mailbox) or that found no connection
to the relay does not hold its batch: the worker records the row as Deferred (with the reply, the
attempt count and `next_attempt_at`) and, in the same statement, writes a retry message into the
outbox. The deferred recipients of one window with the same attempt count share one message, due at the
earliest of their times (`together`). The outbox publishes it as a JetStream *message schedule*
(nats-server 2.12 and later, ADR-51):

- the stream `<NAMESPACE>_DELIVERY_RETRIES` (work-queue retention, message schedules allowed) holds one
  schedule per group, on `<namespace>.delivery.retries.at.<campaign_id>.<first recipient_id>`, with
  `Nats-Schedule: @at <next_attempt_at>` and `Nats-Schedule-Target: <namespace>.delivery.retries`;
- when it is due, the server itself publishes the message on the target subject, where the workers'
  durable consumer `delivery-retries` hands it to one worker, which sends to those recipients again.

Why schedules rather than a `nak` with a delay: a nak'd message counts against the consumer's
outstanding acks for the whole delay (max_ack_pending: 100,000 recipients greylisted for an hour would
be 100,000 outstanding messages) and is redelivered to a worker that must nak it again if it came back
early; a schedule is stored in the stream and costs nothing until it is due, and one stream replaces a
delay stream per backoff step. Herald refuses to start against a server that does not keep the stream's
`allow_msg_schedules` (older than 2.12) rather than let retries wait forever.

The schedule (`RetrySchedule`) is an MTA's: the configured delays in turn (1, 5, 15, 30 minutes by
default), then delays that double from 1 hour up to 4, each moved by up to ±20 %. A recipient still
deferred HERALD_DELIVERY_MAX_DEFER_HOURS (48) after it was first deferred is Failed, its last reply
classified as a soft bounce; the last attempt is scheduled at that deadline, not after it.

A message carries the attempt count it was scheduled for, and claims the row only if the row is still
Deferred with that count: a message that arrives twice, or a stale one, sends nothing. A retry message
that got lost (a stream purged by hand) is caught by the delivery service's sweeper, which schedules
again every Deferred recipient whose retry is overdue by HERALD_DELIVERY_RETRY_OVERDUE_SECONDS.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats.js.errors
import structlog
from herald.delivery.v1 import delivery_pb2
from nats.js import JetStreamContext

from services.common import events
from services.common.config import Settings
from services.common.natsutil import Subjects
from services.common.outbox import UnitOfWork, outbox_row

log = structlog.get_logger()

RETRIES_DURABLE = "delivery-retries"
# The oldest nats-server whose streams keep message schedules.
MIN_SERVER_FOR_SCHEDULES = "2.12"
# JetStream's error code for "stream not found".
STREAM_NOT_FOUND = 10059


# --- the schedule ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrySchedule:
    """When a deferred recipient's next attempt is due, and when it is given up."""

    delays: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0)
    later_min: float = 3600.0
    later_max: float = 14400.0
    jitter: float = 0.2
    max_defer: timedelta = timedelta(hours=48)

    @classmethod
    def of(cls, settings: Settings) -> RetrySchedule:
        return cls(
            delays=settings.delivery_retry_delays(),
            later_min=settings.delivery_retry_later_min_seconds,
            later_max=max(settings.delivery_retry_later_max_seconds, settings.delivery_retry_later_min_seconds),
            jitter=settings.delivery_retry_jitter,
            max_defer=timedelta(hours=settings.delivery_max_defer_hours),
        )

    def delay(self, deferrals: int, rng: random.Random | None = None) -> float:
        """Seconds until the next attempt after the `deferrals`-th deferral (from 1), with jitter."""
        if deferrals <= len(self.delays):
            base = self.delays[deferrals - 1]
        else:
            base = min(self.later_min * 2 ** (deferrals - len(self.delays) - 1), self.later_max)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(base * (1 + spread), 0.001)

    def next_attempt(
        self, deferrals: int, deferred_since: datetime, now: datetime, rng: random.Random | None = None
    ) -> datetime | None:
        """When to try again, at most at the deadline; None when the deadline has passed (give up)."""
        deadline = deferred_since + self.max_defer
        if now >= deadline:
            return None
        return min(now + timedelta(seconds=self.delay(deferrals, rng)), deadline)


# --- the stream -----------------------------------------------------------------------------------------------


def retries_stream(subjects: Subjects) -> str:
    return f"{subjects.namespace.upper()}_DELIVERY_RETRIES"


def due_subject(subjects: Subjects) -> str:
    """Where due retries are published (by the server), and what the workers' consumer takes."""
    return subjects.event(events.DELIVERY_RETRY)


def schedule_subject(subjects: Subjects, campaign_id: int, recipient_id: int) -> str:
    """The subject of the schedule of a group whose first recipient is `recipient_id` (a new schedule on it
    replaces the old)."""
    return f"{due_subject(subjects)}.at.{campaign_id}.{recipient_id}"


def schedules_prefix(subjects: Subjects) -> str:
    """The prefix of every schedule's subject: the outbox publishes these in no particular order (pipelined)."""
    return f"{due_subject(subjects)}.at."


class SchedulesUnsupported(RuntimeError):
    """The NATS server does not keep message schedules."""


async def ensure_retries_stream(js: JetStreamContext, subjects: Subjects) -> None:
    """Creates (or updates) the retries stream with message schedules allowed, and checks that the server kept them.

    nats-py's StreamConfig does not know `allow_msg_schedules` yet, so the stream is configured through the
    JetStream API directly. A server older than 2.12 would ignore the field and keep the schedules as
    plain messages that are never due: it is refused here instead.
    """
    name = retries_stream(subjects)
    config = {
        "name": name,
        "subjects": [due_subject(subjects), f"{due_subject(subjects)}.at.>"],
        "retention": "workqueue",
        "storage": "file",
        "discard": "old",
        "duplicate_window": 120 * 1_000_000_000,
        "num_replicas": subjects.replicas,
        "allow_msg_schedules": True,
    }
    nc = js._nc
    prefix = js._prefix
    info = json.loads((await nc.request(f"{prefix}.STREAM.INFO.{name}", b"", timeout=5)).data)
    if "error" in info and info["error"].get("err_code") != STREAM_NOT_FOUND:
        # JetStream cannot say now (a cluster electing a leader answers 503 or "cluster not available"): the
        # caller (natsutil.until_ready) tries again, as for the other streams.
        nats.js.errors.APIError.from_error(info["error"])
    verb = "UPDATE" if "error" not in info else "CREATE"
    reply = json.loads(
        (await nc.request(f"{prefix}.STREAM.{verb}.{name}", json.dumps(config).encode(), timeout=5)).data
    )
    if "error" in reply:
        # Not a missing feature (an older server ignores the field, see below): an answer to try again.
        nats.js.errors.APIError.from_error(reply["error"])
    if not reply.get("config", {}).get("allow_msg_schedules"):
        raise SchedulesUnsupported(
            f"the NATS server keeps no message schedules (stream {name}): deferred mail needs nats-server "
            f"{MIN_SERVER_FOR_SCHEDULES} or later"
        )


# --- scheduling ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueRetry:
    """One deferred recipient to schedule: its row, its attempt count and when it is due."""

    campaign_id: int
    recipient_id: int
    attempt: int
    due: datetime


# Recipients one retry message names at most.
GROUP_LIMIT = 100


def schedule(work: UnitOfWork, subjects: Subjects, retries: Sequence[DueRetry], *, again: str = "") -> None:
    """Writes the retries' message schedules into the unit of work's outbox (published once it commits).

    `again` tells a later scheduling of the same attempt apart (a resume, the sweeper): its Nats-Msg-Id
    must differ from the first one's, which JetStream may still remember.
    """
    for subject, message, key, headers in _messages(subjects, retries, again):
        work.publish(events.DELIVERY_RETRY, message, key=key, subject=subject, headers=headers)


def outbox_rows(subjects: Subjects, retries: Sequence[DueRetry]) -> list[dict[str, object]]:
    """The retries' message schedules as outbox rows, for a statement that writes them itself (see
    claim_store.recorded_and_claimed)."""
    return [
        outbox_row(subject, events.DELIVERY_RETRY, message, key=key, headers=headers)
        for subject, message, key, headers in _messages(subjects, retries, "")
    ]


def _messages(
    subjects: Subjects, retries: Sequence[DueRetry], again: str
) -> Iterator[tuple[str, delivery_pb2.DeliveryRetry, str, dict[str, str]]]:
    """(subject, message, key, headers) of each retry message: the recipients of one campaign and attempt count
    due at the same second travel together, at most GROUP_LIMIT to a message."""
    groups: dict[tuple[int, int, str], list[int]] = {}
    for retry in retries:
        groups.setdefault((retry.campaign_id, retry.attempt, _at(retry.due)), []).append(retry.recipient_id)
    for (campaign_id, attempt, at), recipient_ids in groups.items():
        for start in range(0, len(recipient_ids), GROUP_LIMIT):
            first, *also = recipient_ids[start : start + GROUP_LIMIT]
            key = f"{campaign_id}:{first}:{attempt}" + (f":{again}" if again else "")
            message = delivery_pb2.DeliveryRetry(
                campaign_id=campaign_id, recipient_id=first, attempt=attempt, also_recipient_ids=also
            )
            headers = {"Nats-Schedule": f"@at {at}", "Nats-Schedule-Target": due_subject(subjects)}
            yield schedule_subject(subjects, campaign_id, first), message, key, headers


def together(deferred: Sequence[DueRetry]) -> list[DueRetry]:
    """The deferrals of one window made due together: those of one campaign and attempt count take the earliest
    of their due times (never later than any of them, so never after a recipient's deadline), so that they
    travel in one retry message; the jitter still spreads one window from the next."""
    earliest: dict[tuple[int, int], datetime] = {}
    for retry in deferred:
        key = (retry.campaign_id, retry.attempt)
        earliest[key] = min(earliest.get(key, retry.due), retry.due)
    return [
        DueRetry(r.campaign_id, r.recipient_id, r.attempt, earliest[(r.campaign_id, r.attempt)]) for r in deferred
    ]


def recipients_of(retry: delivery_pb2.DeliveryRetry) -> list[int]:
    """Every recipient a retry message names (a message written before they were grouped names one)."""
    return [retry.recipient_id, *retry.also_recipient_ids]


def _at(instant: datetime) -> str:
    """RFC 3339 in UTC, rounded up to the second (never early), as the server reads `@at`; a time in the past
    is due at once."""
    instant = instant.astimezone(UTC)
    if instant.microsecond:
        instant = instant.replace(microsecond=0) + timedelta(seconds=1)
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- a domain that defers everything ----------------------------------------------------------------------------

_ENHANCED = re.compile(r"\b(4\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class DomainDeferral:
    """Why a domain's remaining recipients of a batch are deferred without being tried."""

    error: str


class DomainDeferrals:
    """What one handling of a batch (or of a group of due retries) learned about each recipient domain.

    When a domain answers a 421 (the server closes the session: every later recipient on it would get the
    same), or answers `threshold` of its recipients in a row with the same 4.7.x code (a policy or rate
    limit: 4.7.0 too many connections, 4.7.1 try later), the domain's other recipients in the batch are
    deferred at once with that reply instead of being tried one by one. Without any reply (no connection
    to the relay at all, `threshold` times in a row) the same holds for every domain. Per-address
    answers (greylisting is 450 4.2.0 behind Postfix with postgrey, a full mailbox 452 4.2.2) never mark
    a domain: they are about one recipient.
    """

    ANY = "*"

    def __init__(self, threshold: int) -> None:
        self._threshold = max(threshold, 1)
        self._marked: dict[str, DomainDeferral] = {}
        self._runs: dict[str, tuple[str, int]] = {}

    def deferral(self, address: str) -> DomainDeferral | None:
        return self._marked.get(self.ANY) or self._marked.get(domain_of(address))

    def temporary(self, address: str, reply_code: int | None, error: str) -> None:
        """A send to `address` was answered with a temporary failure (`reply_code` None: no reply at all)."""
        if reply_code is None:
            self._count(self.ANY, "connection", error)
        elif reply_code == 421:
            self._marked[domain_of(address)] = DomainDeferral(error)
        elif (found := _ENHANCED.search(error)) is not None and found.group(1).startswith("4.7."):
            self._count(domain_of(address), found.group(1), error)
        else:
            self._runs.pop(domain_of(address), None)

    def delivered(self, address: str) -> None:
        self._runs.pop(domain_of(address), None)
        self._runs.pop(self.ANY, None)

    def _count(self, domain: str, code: str, error: str) -> None:
        last, count = self._runs.get(domain, ("", 0))
        count = count + 1 if last == code else 1
        self._runs[domain] = (code, count)
        if count >= self._threshold:
            self._marked[domain] = DomainDeferral(error)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()
