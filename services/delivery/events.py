"""The events delivery consumes and publishes, between their protos (protos/herald/*/v1/*.proto) and delivery's own terms."""

from __future__ import annotations

from herald.campaign.v1 import campaign_pb2

from services.delivery.sending import RunState, StatusChange

# The campaign statuses as a run mirrors them (campaign_runs.state holds the campaign service's words).
_RUN_STATES: dict[campaign_pb2.CampaignStatus.ValueType, RunState] = {
    campaign_pb2.CAMPAIGN_STATUS_DRAFT: RunState.DRAFT,
    campaign_pb2.CAMPAIGN_STATUS_READY: RunState.READY,
    campaign_pb2.CAMPAIGN_STATUS_SENDING: RunState.SENDING,
    campaign_pb2.CAMPAIGN_STATUS_PAUSED: RunState.PAUSED,
    campaign_pb2.CAMPAIGN_STATUS_PENDING_APPROVAL: RunState.PENDING_APPROVAL,
    campaign_pb2.CAMPAIGN_STATUS_SENT: RunState.SENT,
    campaign_pb2.CAMPAIGN_STATUS_FAILED: RunState.FAILED,
    campaign_pb2.CAMPAIGN_STATUS_CANCELLED: RunState.CANCELLED,
}


def status_change(event: campaign_pb2.CampaignStatusChangedEvent) -> StatusChange:
    """campaign.status_changed as delivery needs it (the decoder has checked the status is one of the protos')."""
    return StatusChange(event.campaign_id, event.owner_user_id, _RUN_STATES[event.status])
