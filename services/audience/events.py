"""The recipient_bounced and recipient_delivered consumers: bounce state, complaint unsubscriptions and suppression.

Delivery classifies every bounce and complaint once and publishes a RecipientBouncedEvent; a delivery
to an address that had bounced before publishes a RecipientDeliveredEvent. What each does here is in
docs/bounces.md ("Subscribers and suppression"). Events come at least once: every effect is an
idempotent statement, so a repeated event changes nothing more.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from herald.delivery.v1 import delivery_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.audience import domain, store
from services.audience.domain import BounceKind, BounceTarget
from services.common import events

log = structlog.get_logger()

BOUNCED_DURABLE = "audience-recipient-bounced"
DELIVERED_DURABLE = "audience-recipient-delivered"

KINDS = {
    delivery_pb2.BOUNCE_KIND_HARD: BounceKind.HARD,
    delivery_pb2.BOUNCE_KIND_SOFT: BounceKind.SOFT,
    delivery_pb2.BOUNCE_KIND_POLICY: BounceKind.POLICY,
    delivery_pb2.BOUNCE_KIND_COMPLAINT: BounceKind.COMPLAINT,
}

# What an effect did, for the log line: counts by name.
Outcome = dict[str, int]
Effect = Callable[[AsyncConnection, BounceTarget, int], Awaitable[Outcome]]


# Events applied in one transaction: what one fetch from JetStream brings, at most.
BATCH = 100


def bounce_consumers(engine: AsyncEngine, soft_bounce_limit: int) -> list[events.Consumer[Any]]:
    """The durable consumers every audience replica shares (NatsLink runs them). Redelivered until handled:
    a bounce that is lost leaves an address that no longer exists on the list, mailed by every campaign.

    Each applies what one fetch brings (up to BATCH events) in one transaction, in stream order; should
    that fail, each event is applied in a transaction of its own, and only the failing ones come back."""
    handler = BounceHandler(engine, domain.soft_bounce_limit(soft_bounce_limit))
    return [
        events.Consumer(
            BOUNCED_DURABLE,
            events.RECIPIENT_BOUNCED,
            handler.bounced,
            handle_batch=handler.bounced_batch,
            batch=BATCH,
        ),
        events.Consumer(
            DELIVERED_DURABLE,
            events.RECIPIENT_DELIVERED,
            handler.delivered,
            handle_batch=handler.delivered_batch,
            batch=BATCH,
        ),
    ]


class BounceHandler:
    """Applies bounces, complaints and deliveries to the owner's subscribers and suppression list."""

    def __init__(self, engine: AsyncEngine, soft_bounce_limit: int) -> None:
        self._engine = engine
        self._soft_bounce_limit = soft_bounce_limit
        self._effects: dict[BounceKind, Effect] = {
            BounceKind.HARD: self._hard,
            BounceKind.SOFT: self._soft,
            BounceKind.POLICY: self._policy,
            BounceKind.COMPLAINT: self._complaint,
        }

    async def bounced(self, event: delivery_pb2.RecipientBouncedEvent) -> None:
        await self.bounced_batch([event])

    async def bounced_batch(self, batch: Sequence[delivery_pb2.RecipientBouncedEvent]) -> None:
        """Applies the events in order, in one transaction; logs each once it has committed."""
        outcomes: list[Outcome] = []
        async with self._engine.begin() as conn:
            # The decoder refused any other kind.
            for kind, run in itertools.groupby(batch, key=lambda event: KINDS[event.kind]):
                events_of_run = list(run)
                targets = [BounceTarget.of(e.owner_user_id, e.email_address, e.list_id) for e in events_of_run]
                if kind is BounceKind.HARD and len(events_of_run) > 1:
                    outcomes += await self._hard_run(conn, targets, [e.campaign_id for e in events_of_run])
                    continue
                for event, target in zip(events_of_run, targets, strict=True):
                    outcomes.append(await self._effects[kind](conn, target, event.campaign_id))
        for event, outcome in zip(batch, outcomes, strict=True):
            log.info(
                "bounce applied",
                kind=KINDS[event.kind].value,
                owner_user_id=event.owner_user_id,
                campaign_id=event.campaign_id,
                list_id=event.list_id,
                subscriber_id=event.subscriber_id,
                recipient_id=event.recipient_id,
                status_code=event.status_code,
                **outcome,
            )

    async def delivered(self, event: delivery_pb2.RecipientDeliveredEvent) -> None:
        await self.delivered_batch([event])

    async def delivered_batch(self, batch: Sequence[delivery_pb2.RecipientDeliveredEvent]) -> None:
        """The mailbox works: every subscriber of the owner with the address is Not Bounced again, and the
        suppression a bounce caused is lifted (the user's own entries and complaints stay). In order, in
        one transaction."""
        outcomes: list[tuple[int, int]] = []
        async with self._engine.begin() as conn:
            for event in batch:
                target = BounceTarget.of(event.owner_user_id, event.email_address)
                cleared = await store.delivered_count(conn, target)
                unsuppressed = await store.removed_bounce_suppression_count(
                    conn, target.owner_user_id, target.email_key
                )
                outcomes.append((cleared, unsuppressed))
        for event, (cleared, unsuppressed) in zip(batch, outcomes, strict=True):
            log.info(
                "bounce state cleared by a delivery",
                owner_user_id=event.owner_user_id,
                campaign_id=event.campaign_id,
                recipient_id=event.recipient_id,
                cleared=cleared,
                unsuppressed=unsuppressed,
            )

    @staticmethod
    async def _suppressed(conn: AsyncConnection, target: BounceTarget, reason: str, campaign_id: int) -> int:
        return await store.added_suppression_count(
            conn, target.owner_user_id, [target.email_key], reason=reason, campaign_id=campaign_id
        )

    async def _hard(self, conn: AsyncConnection, target: BounceTarget, campaign_id: int) -> Outcome:
        changed = await store.hard_bounced_count(conn, target)
        added = await self._suppressed(conn, target, domain.SUPPRESSION_BOUNCE, campaign_id)
        return {"made_hard": changed, "suppressed": added}

    @staticmethod
    async def _hard_run(
        conn: AsyncConnection, targets: Sequence[BounceTarget], campaign_ids: Sequence[int]
    ) -> list[Outcome]:
        """Consecutive hard bounces, set-wise: two statements for all of them, the same as `_hard` on each in
        turn (a hard bounce leaves nothing for the next one to change; the first suppresses an address)."""
        changed = await store.hard_bounced_counts(conn, targets)
        added = await store.added_bounce_suppression_counts(
            conn, [(t.owner_user_id, t.email_key, c) for t, c in zip(targets, campaign_ids, strict=True)]
        )
        return [{"made_hard": c, "suppressed": a} for c, a in zip(changed, added, strict=True)]

    async def _soft(self, conn: AsyncConnection, target: BounceTarget, campaign_id: int) -> Outcome:
        types = await store.soft_bounced_types(conn, target, campaign_id, self._soft_bounce_limit)
        hardened = types.count("Hard")
        added = await self._suppressed(conn, target, domain.SUPPRESSION_BOUNCE, campaign_id) if hardened else 0
        return {"made_soft": len(types) - hardened, "made_hard": hardened, "suppressed": added}

    async def _policy(self, conn: AsyncConnection, target: BounceTarget, campaign_id: int) -> Outcome:
        return {}  # the sender's problem, not the address's: nothing changes for the subscriber

    async def _complaint(self, conn: AsyncConnection, target: BounceTarget, campaign_id: int) -> Outcome:
        unsubscribed = await store.complained_count(conn, target)
        added = await self._suppressed(conn, target, domain.SUPPRESSION_COMPLAINT, campaign_id)
        return {"unsubscribed": unsubscribed, "suppressed": added}
