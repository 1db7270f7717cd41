"""Herald's messages on NATS: each is a protobuf message of protos/ with its subject, sent as proto3 JSON and read by one strict decoder.

Every message type Herald publishes or consumes is an `EventType` below: the generated message class
(whose `(herald.events.v1.subject)` option names the subject, once, for every language), and the
rules a decoded message must meet beyond its types. Producers encode with `EventType.encode`; every
consumer of an event decodes with the same `EventType.decode`, so no two services read one event
differently; a `Consumer` decodes first and terminates (JetStream `term()`) what does not decode,
because no redelivery can repair it.

Why JSON on the wire rather than binary protobuf: a message stays readable where operators meet it
(`nats stream view`, the outbox tables), delivery's batch messages are built in SQL set-wise (one
INSERT … SELECT for a whole publication), and the send request's signature is over the JSON object.
Every protobuf runtime reads the proto3 JSON form with its generated classes.

Decoding ignores fields it does not know: an older consumer keeps reading the events of a newer
producer that added a field. Everything else is strict: a value of the wrong JSON type (true for an
id, 3.5 for a count, a string for an object) and an enum name the protos do not have are refused by
the JSON mapping, and each event's rules then refuse unspecified enums and ids that are not positive.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats.errors
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import campaign_pb2, email_pb2
from herald.delivery.v1 import delivery_pb2
from herald.events.v1 import options_pb2
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from services.common import natsutil, tracing
from services.common.config import Settings
from services.common.event_signing import EventSigner, UnsignedEvent
from services.common.logging import RepeatingFailure, is_outage
from services.common.natsutil import Subjects

log = structlog.get_logger()

M = TypeVar("M", bound=Message)


class UndecodableEvent(ValueError):
    """The payload is not the message its subject carries (or a signed one without a valid signature)."""


@dataclass(frozen=True)
class EventType(Generic[M]):
    """One kind of message on NATS: its protobuf class, its rules, and whether it must be signed."""

    message: type[M]
    problems: Callable[[M], Iterable[str]]
    signed: bool = False

    @property
    def subject(self) -> str:
        """The subject below the install's namespace, from the message's option (e.g. "events.campaign.deleted")."""
        subject: str = self.message.DESCRIPTOR.GetOptions().Extensions[options_pb2.subject]
        return subject

    def msg_id(self, key: str | None = None) -> str:
        """A Nats-Msg-Id for one message: `key` when the message is one that may be written twice and must be
        published once (JetStream drops a repeat within its duplicate window), else a new random id."""
        return f"{self.subject}:{key or uuid.uuid4()}"

    def encode(self, message: M, signer: EventSigner | None = None) -> bytes:
        """The message as it goes on the wire: proto3 JSON, signed when the event type is."""
        payload = json.dumps(
            json_format.MessageToDict(message, preserving_proto_field_name=True),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        if not self.signed:
            return payload
        if signer is None:
            raise ValueError(f"{self.subject} is a signed event: it is encoded with its signer")
        return signer.signed(payload)

    def decode(self, payload: bytes, signer: EventSigner | None = None) -> M:
        """The message, or UndecodableEvent saying what is wrong with the payload."""
        if self.signed:
            if signer is None:
                raise ValueError(f"{self.subject} is a signed event: it is decoded with its signer")
            try:
                signer.verify(payload)
            except UnsignedEvent as exc:
                raise UndecodableEvent(f"not signed by this install's campaign service: {exc}") from exc
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise UndecodableEvent(f"not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise UndecodableEvent("not a JSON object")
        message = self.message()
        try:
            json_format.ParseDict(_known_fields(document, self.message.DESCRIPTOR), message)
        except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            # json_format wraps most of what it refuses in ParseError; whatever else an odd document makes
            # it raise is no less undecodable, and must not be retried as if handling had failed.
            raise UndecodableEvent(f"{type(exc).__name__}: {exc}") from exc
        problems = list(self.problems(message))
        if problems:
            raise UndecodableEvent("; ".join(problems))
        return message


def _known_fields(document: dict[str, Any], descriptor: Any) -> dict[str, Any]:  # a message Descriptor
    """`document` without the keys its message type does not have, at any depth: a newer producer's fields.

    json_format's own ignore_unknown_fields is not used: it also passes a string where a message is
    expected (reading its characters as unknown field names) and an enum name the protos do not have.
    """
    known: dict[str, Any] = {}
    for key, value in document.items():
        field = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if field is None:
            continue
        inner = field.message_type
        if inner is not None and not inner.GetOptions().map_entry and not inner.full_name.startswith("google."):
            if isinstance(value, dict):
                value = _known_fields(value, inner)
            elif isinstance(value, list):
                value = [_known_fields(item, inner) if isinstance(item, dict) else item for item in value]
        known[key] = value
    return known


# --- the rules of each event ------------------------------------------------------------------------------------

_CAMPAIGN_STATUSES = frozenset(campaign_pb2.CampaignStatus.values()) - {campaign_pb2.CAMPAIGN_STATUS_UNSPECIFIED}
_WINNERS = frozenset(campaign_pb2.Winner.values()) - {campaign_pb2.WINNER_UNSPECIFIED}
_OUTCOMES = frozenset(delivery_pb2.SendOutcome.values()) - {delivery_pb2.SEND_OUTCOME_UNSPECIFIED}


def _positive(message: Message, *fields: str) -> list[str]:
    return [f"{name} must be positive" for name in fields if getattr(message, name) <= 0]


def _status_changed_problems(event: campaign_pb2.CampaignStatusChangedEvent) -> list[str]:
    problems = _positive(event, "campaign_id", "owner_user_id")
    if event.status not in _CAMPAIGN_STATUSES:
        problems.append("status must be a campaign status")
    if event.previous_status not in _CAMPAIGN_STATUSES:
        problems.append("previous_status must be a campaign status")
    return problems


def _deleted_problems(event: campaign_pb2.CampaignDeletedEvent) -> list[str]:
    problems = _positive(event, "owner_user_id")
    if not event.campaign_ids or any(campaign_id <= 0 for campaign_id in event.campaign_ids):
        problems.append("campaign_ids must be one or more positive ids")
    return problems


def _send_requested_problems(event: campaign_pb2.CampaignSendRequestedEvent) -> list[str]:
    problems = _positive(event, "campaign_id", "owner_user_id", "occurrence")
    if event.email_id < 0:
        problems.append("email_id must not be negative")
    if any(v.email_id <= 0 or v.weight <= 0 for v in event.variations):
        problems.append("every variation needs a positive email_id and weight")
    if event.non_openers_of_campaign_id < 0 or event.non_openers_of_campaign_id == event.campaign_id:
        problems.append("non_openers_of_campaign_id must be 0 or another campaign's id")
    # The targeting's list and segment ids are the audience service's to judge: it refuses unknown
    # ones, and the occurrence then fails with its reason.
    if event.HasField("split_test"):
        split_test = event.split_test
        if not 1 <= split_test.test_size_percent <= 100:
            problems.append("split_test.test_size_percent must be 1 to 100")
        if split_test.test_duration_hours < 0:
            problems.append("split_test.test_duration_hours must not be negative")
        if split_test.winner not in _WINNERS:
            problems.append("split_test.winner must be a winner rule")
    return problems


def _finished_problems(event: delivery_pb2.CampaignFinishedEvent) -> list[str]:
    problems = _positive(event, "campaign_id", "owner_user_id", "occurrence")
    if event.outcome not in _OUTCOMES:
        problems.append("outcome must be Sent or Failed")
    if not event.HasField("finish_time"):
        problems.append("finish_time is required")
    return problems


def _batch_problems(batch: delivery_pb2.DeliveryBatch) -> list[str]:
    return _positive(batch, "campaign_id", "batch_id", "generation")


def _retry_problems(retry: delivery_pb2.DeliveryRetry) -> list[str]:
    problems = _positive(retry, "campaign_id", "recipient_id", "attempt")
    if any(recipient_id <= 0 for recipient_id in retry.also_recipient_ids):
        problems.append("also_recipient_ids must be positive")
    return problems


_BOUNCE_KINDS = frozenset(delivery_pb2.BounceKind.values()) - {delivery_pb2.BOUNCE_KIND_UNSPECIFIED}
_BOUNCE_SOURCES = frozenset(delivery_pb2.BounceSource.values()) - {delivery_pb2.BOUNCE_SOURCE_UNSPECIFIED}


def _recipient_problems(
    event: delivery_pb2.RecipientBouncedEvent | delivery_pb2.RecipientDeliveredEvent,
) -> list[str]:
    problems = _positive(event, "owner_user_id", "campaign_id", "recipient_id")
    # A recipient that came from no list has neither (0).
    problems += [
        f"{name} must not be negative" for name in ("list_id", "subscriber_id") if getattr(event, name) < 0
    ]
    if not event.email_address.strip():
        problems.append("email_address is required")
    return problems


def _bounced_problems(event: delivery_pb2.RecipientBouncedEvent) -> list[str]:
    problems = _recipient_problems(event)
    if event.kind not in _BOUNCE_KINDS:
        problems.append("kind must be a bounce kind")
    if event.source not in _BOUNCE_SOURCES:
        problems.append("source must be a bounce source")
    if not 0 <= event.reply_code <= 599:
        problems.append("reply_code must be an SMTP reply code or 0")
    if not event.HasField("occur_time"):
        problems.append("occur_time is required")
    return problems


def _delivered_problems(event: delivery_pb2.RecipientDeliveredEvent) -> list[str]:
    problems = _recipient_problems(event)
    if not event.HasField("deliver_time"):
        problems.append("deliver_time is required")
    return problems


def _opt_in_requested_problems(event: audience_pb2.OptInConfirmationRequestedEvent) -> list[str]:
    problems = _positive(event, "owner_user_id", "list_id", "subscriber_id", "email_id")
    if not event.email_address.strip():
        problems.append("email_address is required")
    if not event.HasField("request_time"):
        problems.append("request_time is required")
    return problems


def _opt_ins_requested_problems(event: audience_pb2.OptInConfirmationsRequestedEvent) -> list[str]:
    problems = _positive(event, "owner_user_id", "list_id", "email_id", "import_id")
    if not event.HasField("request_time"):
        problems.append("request_time is required")
    if not event.recipients:
        problems.append("recipients is required")
    if any(r.subscriber_id <= 0 or not r.email_address.strip() for r in event.recipients):
        problems.append("every recipient needs a subscriber_id and an email_address")
    return problems


def _preview_requested_problems(event: email_pb2.EmailPreviewRequestedEvent) -> list[str]:
    problems = _positive(event, "owner_user_id", "email_id")
    if not event.email_address.strip():
        problems.append("email_address is required")
    if not event.request_id:
        problems.append("request_id is required")
    if not event.HasField("request_time"):
        problems.append("request_time is required")
    return problems


_DELIVERY_EVENT_KINDS = frozenset(delivery_pb2.DeliveryEventKind.values()) - {
    delivery_pb2.DELIVERY_EVENT_KIND_UNSPECIFIED
}


def _delivery_events_problems(message: delivery_pb2.DeliveryEvents) -> list[str]:
    if not message.events:
        return ["events is required"]
    problems: list[str] = []
    campaigns = {(event.owner_user_id, event.campaign_id) for event in message.events}
    if len(campaigns) != 1:
        problems.append("every event of a message is of one campaign of one owner")
    for event in message.events:
        problems += _positive(event, "owner_user_id", "campaign_id", "recipient_id")
        if event.kind not in _DELIVERY_EVENT_KINDS:
            problems.append("kind must be a delivery event kind")
        if event.subscriber_id < 0:
            problems.append("subscriber_id must not be negative")
        if not event.HasField("occur_time"):
            problems.append("occur_time is required")
    return sorted(set(problems))


CAMPAIGN_STATUS_CHANGED = EventType(campaign_pb2.CampaignStatusChangedEvent, _status_changed_problems)
CAMPAIGN_DELETED = EventType(campaign_pb2.CampaignDeletedEvent, _deleted_problems)
CAMPAIGN_SEND_REQUESTED = EventType(campaign_pb2.CampaignSendRequestedEvent, _send_requested_problems, signed=True)
CAMPAIGN_FINISHED = EventType(delivery_pb2.CampaignFinishedEvent, _finished_problems)
DELIVERY_BATCH = EventType(delivery_pb2.DeliveryBatch, _batch_problems)
DELIVERY_RETRY = EventType(delivery_pb2.DeliveryRetry, _retry_problems)
RECIPIENT_BOUNCED = EventType(delivery_pb2.RecipientBouncedEvent, _bounced_problems)
RECIPIENT_DELIVERED = EventType(delivery_pb2.RecipientDeliveredEvent, _delivered_problems)
OPT_IN_CONFIRMATION_REQUESTED = EventType(
    audience_pb2.OptInConfirmationRequestedEvent, _opt_in_requested_problems, signed=True
)
OPT_IN_CONFIRMATIONS_REQUESTED = EventType(
    audience_pb2.OptInConfirmationsRequestedEvent, _opt_ins_requested_problems, signed=True
)
EMAIL_PREVIEW_REQUESTED = EventType(email_pb2.EmailPreviewRequestedEvent, _preview_requested_problems, signed=True)
DELIVERY_EVENTS = EventType(delivery_pb2.DeliveryEvents, _delivery_events_problems)


def delivery_events_subject(subjects: Subjects, owner_user_id: int | str, campaign_id: int | str) -> str:
    """Where a campaign's DeliveryEvents go: `<namespace>.events.delivery.recipients.<owner>.<campaign>`; either
    part may be a wildcard (`*`) for a subscription."""
    return f"{subjects.event(DELIVERY_EVENTS)}.{owner_user_id}.{campaign_id}"


def signer_of(event: EventType[M], settings: Settings) -> EventSigner:
    """The signer of a signed event type in this install, the same for its producer and its consumers."""
    return EventSigner(settings.effective_token_secret(), event.subject, settings.nats_namespace)


# --- consuming -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consumer(Generic[M]):
    """A durable pull consumer of one event type (services/common/nats_link.py runs it).

    A message that does not decode is logged and terminated. A decoded one is kept alive while `handle`
    runs and acked after it returned; when `handle` raises, the message comes back after a growing
    delay, up to `max_deliver` deliveries (-1: forever, for events whose loss would leave a campaign
    stuck).

    With `handle_batch`, the messages of one fetch (up to `batch`) that decode are handed to it together,
    in stream order, and all acked once it returned: one transaction for many events. When it raises,
    each of them is handled by `handle` on its own as above, so one event that cannot be handled holds
    back no other and comes back by itself.

    With `concurrency` above 1 (not with `handle_batch`), up to that many messages are handled at once, each
    acked when its own handling ended: for handlers that may run for minutes (queueing a large campaign) and
    must not hold back the next events. Handlers then see events out of order. Stopping cancels the handlings
    still running; their messages come back.
    """

    durable: str
    event: EventType[M]
    handle: Callable[[M], Awaitable[None]]
    signer: EventSigner | None = None
    max_deliver: int = -1
    ack_wait: float = 30.0
    handle_batch: Callable[[Sequence[M]], Awaitable[None]] | None = None
    batch: int = 20
    concurrency: int = 1

    def __post_init__(self) -> None:
        if self.event.signed and self.signer is None:
            raise ValueError(f"a consumer of {self.event.subject} verifies its signature: give it the signer")
        if self.batch < 1:
            raise ValueError("a consumer fetches at least one message at a time")
        if self.concurrency < 1 or (self.concurrency > 1 and self.handle_batch is not None):
            raise ValueError("a consumer handles at least one message at a time, and batches one at a time")

    async def run(self, js: JetStreamContext, subjects: Subjects, stop: asyncio.Event) -> None:
        """Consumes until `stop`; the events stream must exist (NatsLink sets it up first)."""
        subscription: JetStreamContext.PullSubscription | None = None

        async def setup() -> None:
            nonlocal subscription
            subscription = await js.pull_subscribe(
                subjects.event(self.event),
                durable=subjects.durable(self.durable),
                stream=subjects.events_stream,
                config=ConsumerConfig(
                    ack_wait=self.ack_wait, max_deliver=self.max_deliver, ack_policy=AckPolicy.EXPLICIT
                ),
            )

        if not await natsutil.until_ready(setup, stop, f"{self.durable} consumer"):
            return
        assert subscription is not None
        natsutil.REDELIVERIES_TOTAL.labels(self.durable)  # the series exists (at 0) from the start
        running: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                free = self.concurrency - len(running)
                if free <= 0:
                    # Every slot is busy: the next fetch waits until a handling ended.
                    await asyncio.wait(running, timeout=1, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await subscription.fetch(batch=min(self.batch, free), timeout=1)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except natsutil.NATS_FAILURES as exc:
                    _away("event fetch failed; retrying", self.durable).failed(exc)
                    await natsutil.sleep_unless_stopped(stop, 0.5)
                    continue
                _away("event fetch failed; retrying", self.durable).recovered()
                natsutil.count_redeliveries(self.durable, messages)
                if self.concurrency == 1:
                    await self.handle_fetched(messages)
                    continue
                for message in messages:
                    task = asyncio.create_task(self._handle_decoded(message))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _handle_decoded(self, message: Msg) -> None:
        decoded = await self._decoded(message)
        if decoded is not None:
            await self._handle(message, decoded)

    async def handle_fetched(self, messages: Sequence[Msg]) -> None:
        """Handles and settles the messages of one fetch, in order."""
        if self.handle_batch is None:
            for message in messages:
                decoded = await self._decoded(message)
                if decoded is not None:
                    await self._handle(message, decoded)
            return
        batch = [
            (message, decoded) for message in messages if (decoded := await self._decoded(message)) is not None
        ]
        if len(batch) <= 1:
            for message, decoded in batch:
                await self._handle(message, decoded)
            return
        try:
            async with natsutil.kept_alive([message for message, _ in batch], self.ack_wait / 3):
                with tracing.consuming(
                    batch[0][0].subject, [message.headers for message, _ in batch], self.durable
                ):
                    await self.handle_batch([decoded for _, decoded in batch])
        except Exception as exc:
            if _dependency_away(exc):  # handled one by one, each fails the same way: logged there, once
                for message, decoded in batch:
                    await self._handle(message, decoded)
                return
            log.warning(
                "event batch failed; handling its events one by one",
                durable=self.durable,
                events=len(batch),
                exc_info=True,
            )
            for message, decoded in batch:
                await self._handle(message, decoded)
            return
        for message, _ in batch:
            await natsutil.settle(message.ack(), "ack")

    async def _decoded(self, message: Msg) -> M | None:
        """The message's event, or None once a message that does not decode has been terminated."""
        try:
            return self.event.decode(message.data, self.signer)
        except UndecodableEvent as exc:
            log.error(
                "undecodable event terminated",
                subject=message.subject,
                durable=self.durable,
                error=str(exc),
                payload=message.data[:200].decode(errors="replace"),
            )
            await natsutil.settle(message.term(), "term")
            return None

    async def _handle(self, message: Msg, decoded: M) -> None:
        try:
            async with natsutil.kept_alive(message, self.ack_wait / 3):
                with tracing.consuming(message.subject, [message.headers], self.durable):
                    await self.handle(decoded)
        except Exception as exc:
            if _dependency_away(exc):
                # PostgreSQL or NATS away: every event fails alike; one line per interval, not a traceback each.
                _away("event handling failed; it will come back", self.durable).failed(exc)
            else:
                log.exception(
                    "event handling failed; it will come back", subject=message.subject, durable=self.durable
                )
            await natsutil.settle(message.nak(delay=natsutil.redelivery_delay(message)), "nak")
            return
        _away("event handling failed; it will come back", self.durable).recovered()
        # Should the ack be lost, the event comes back and is handled again, which every handler is safe against.
        await natsutil.settle(message.ack(), "ack")


# The repeating failures of each consumer (by what failed and the durable), logged once per interval.
_FAILURES: dict[tuple[str, str], RepeatingFailure] = {}


def _away(what: str, durable: str) -> RepeatingFailure:
    failure = _FAILURES.get((what, durable))
    if failure is None:
        failure = _FAILURES[(what, durable)] = RepeatingFailure(what, durable=durable)
    return failure


def _dependency_away(exc: BaseException) -> bool:
    """Whether a handler failed because PostgreSQL or NATS cannot be reached (not because of the event)."""
    return is_outage(exc)
