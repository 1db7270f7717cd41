"""The events delivery consumes and publishes, between their protos (protos/herald/*/v1/*.proto) and delivery's own terms."""

from __future__ import annotations

from google.protobuf import json_format
from herald.campaign.v1 import campaign_pb2

from services.delivery import sending
from services.delivery.sending import RunState, SendRequest, SplitTest, StatusChange, Targeting, Variation

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

# How the run records a split test's winner rule (RULINGS 9's spellings).
_WINNER_RULES: dict[campaign_pb2.Winner.ValueType, str] = {
    campaign_pb2.WINNER_HIGHEST_OPEN_RATE: sending.HIGHEST_OPEN_RATE,
    campaign_pb2.WINNER_MOST_UNIQUE_CLICKS: sending.MOST_UNIQUE_CLICKS,
}


def send_request(event: campaign_pb2.CampaignSendRequestedEvent) -> SendRequest:
    """campaign.send_requested in delivery's terms (decoded, so its signature and rules were checked)."""
    targeting = event.targeting
    split_test = event.split_test
    return SendRequest(
        campaign_id=event.campaign_id,
        owner_user_id=event.owner_user_id,
        name=event.name,
        email_id=event.email_id,
        variations=tuple(Variation(v.email_id, v.weight) for v in event.variations),
        targeting=Targeting(
            included=tuple((s.list_id, s.segment_id) for s in targeting.included),
            excluded=tuple((s.list_id, s.segment_id) for s in targeting.excluded),
            rules_bundle=(
                json_format.MessageToDict(targeting.rules_bundle) if targeting.HasField("rules_bundle") else None
            ),
        ),
        resume=event.resume,
        occurrence=event.occurrence,
        split_test=(
            SplitTest(
                split_test.test_size_percent, split_test.test_duration_hours, _WINNER_RULES[split_test.winner]
            )
            if event.HasField("split_test")
            else None
        ),
    )


def status_change(event: campaign_pb2.CampaignStatusChangedEvent) -> StatusChange:
    """campaign.status_changed as delivery needs it (the decoder has checked the status is one of the protos')."""
    return StatusChange(event.campaign_id, event.owner_user_id, _RUN_STATES[event.status])
