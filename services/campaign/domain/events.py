"""The events the campaign service publishes, as the domain builds them (the outbox writes them)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from services.campaign.domain.model import Campaign, CampaignStatus

STATUS_CHANGED = "campaign.status_changed"


@dataclass(frozen=True)
class StatusChanged:
    """The campaign.status_changed event: delivery stops or starts workers on it."""

    owner_user_id: int
    campaign_id: int
    status: CampaignStatus
    previous_status: CampaignStatus

    def payload(self) -> bytes:
        return json.dumps(
            {
                "owner_user_id": self.owner_user_id,
                "campaign_id": self.campaign_id,
                "status": self.status.value,
                "previous_status": self.previous_status.value,
            }
        ).encode()


def status_change(before: Campaign, after: Campaign) -> StatusChanged | None:
    """The event to publish for a change, or None when the status stayed the same."""
    if before.status is after.status:
        return None
    return StatusChanged(after.owner_user_id, after.campaign_id, after.status, before.status)


def new_event_id(event: str) -> str:
    """A Nats-Msg-Id for one occurrence of an event."""
    return f"{event}:{uuid.uuid4()}"
