"""A Ready, immediately scheduled campaign for the pure send-pipeline tests, with any field changed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from services.campaign import events as campaign_events
from services.campaign.domain import Campaign, CampaignStatus, Schedule, ScheduleType
from services.campaign.sending import SendStart
from services.common import events
from services.common.event_signing import EventSigner
from services.delivery import events as delivery_events
from services.delivery.sending import SendRequest

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SIGNER = EventSigner("unit-test-secret", events.CAMPAIGN_SEND_REQUESTED.subject, "herald")


def campaign(**changes: object) -> Campaign:
    base = Campaign(
        campaign_id=7,
        owner_user_id=3,
        name="News",
        status=CampaignStatus.READY,
        status_reason="",
        email_id=11,
        original_campaign_id=None,
        created_at=NOW,
        updated_at=NOW,
        send_started_at=None,
        schedule=Schedule(ScheduleType.IMMEDIATE),
        scheduled_at=NOW,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def as_delivery_reads_it(start: SendStart) -> SendRequest:
    """The send request the picker publishes for `start`, as delivery decodes it off the wire."""
    payload = events.CAMPAIGN_SEND_REQUESTED.encode(campaign_events.send_requested(start), SIGNER)
    return delivery_events.send_request(events.CAMPAIGN_SEND_REQUESTED.decode(payload, SIGNER))
