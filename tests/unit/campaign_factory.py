"""A Ready, immediately scheduled campaign for the pure send-pipeline tests, with any field changed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from services.campaign.domain import Campaign, CampaignStatus, Schedule, ScheduleType

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


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
