"""The events delivery consumes and publishes, between their protos (protos/herald/*/v1/*.proto) and delivery's own terms."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import json_format
from herald.campaign.v1 import campaign_pb2
from herald.delivery.v1 import delivery_pb2

from services.common import grpcutil
from services.common.bounces import BounceKind, BounceSource
from services.delivery import sending
from services.delivery.bounce_store import QueuedAddress, Recording
from services.delivery.sending import (
    BatchMessage,
    Finished,
    RunState,
    SendRequest,
    SplitTest,
    StatusChange,
    Targeting,
    Variation,
)

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
        non_openers_of=event.non_openers_of_campaign_id,
        relay=event.relay,
    )


def status_change(event: campaign_pb2.CampaignStatusChangedEvent) -> StatusChange:
    """campaign.status_changed as delivery needs it (the decoder has checked the status is one of the protos')."""
    return StatusChange(event.campaign_id, event.owner_user_id, _RUN_STATES[event.status])


def finished_event(finished: Finished) -> delivery_pb2.CampaignFinishedEvent:
    """delivery.campaign_finished of an occurrence that has nobody left to send to."""
    event = delivery_pb2.CampaignFinishedEvent(
        campaign_id=finished.campaign_id,
        owner_user_id=finished.owner_user_id,
        outcome=delivery_pb2.SEND_OUTCOME_FAILED if finished.failed else delivery_pb2.SEND_OUTCOME_SENT,
        reason=finished.reason,
        finish_time=grpcutil.to_timestamp(finished.finished_at),
        occurrence=finished.occurrence,
    )
    if finished.started_at is not None:
        event.start_time.CopyFrom(grpcutil.to_timestamp(finished.started_at))
    return event


def finished_key(finished: Finished) -> str:
    """What makes the event's Nats-Msg-Id: the occurrence and when it finished (finishing again is another event)."""
    return f"{finished.campaign_id}:{finished.occurrence}:{finished.finished_at.timestamp():.6f}"


def batch_message(batch: delivery_pb2.DeliveryBatch) -> BatchMessage:
    return BatchMessage(batch.campaign_id, batch.batch_id, batch.generation)


# --- bounces, complaints and deliveries after a bounce ---------------------------------------------------------

BOUNCE_KINDS: dict[BounceKind, delivery_pb2.BounceKind.ValueType] = {
    BounceKind.HARD: delivery_pb2.BOUNCE_KIND_HARD,
    BounceKind.SOFT: delivery_pb2.BOUNCE_KIND_SOFT,
    BounceKind.POLICY: delivery_pb2.BOUNCE_KIND_POLICY,
    BounceKind.COMPLAINT: delivery_pb2.BOUNCE_KIND_COMPLAINT,
}
BOUNCE_SOURCES: dict[BounceSource, delivery_pb2.BounceSource.ValueType] = {
    BounceSource.SMTP_REPLY: delivery_pb2.BOUNCE_SOURCE_SMTP_REPLY,
    BounceSource.DSN: delivery_pb2.BOUNCE_SOURCE_DSN,
    BounceSource.PLAIN_TEXT: delivery_pb2.BOUNCE_SOURCE_PLAIN_TEXT,
    BounceSource.ARF: delivery_pb2.BOUNCE_SOURCE_ARF,
    BounceSource.SES: delivery_pb2.BOUNCE_SOURCE_SES,
    BounceSource.SENDGRID: delivery_pb2.BOUNCE_SOURCE_SENDGRID,
    BounceSource.POSTMARK: delivery_pb2.BOUNCE_SOURCE_POSTMARK,
    BounceSource.REPORT_ABUSE_LINK: delivery_pb2.BOUNCE_SOURCE_REPORT_ABUSE_LINK,
}


def bounced_event(recording: Recording) -> delivery_pb2.RecipientBouncedEvent:
    """delivery.recipient_bounced of a bounce or complaint recorded now."""
    bounce, recipient = recording.bounce, recording.recipient
    return delivery_pb2.RecipientBouncedEvent(
        owner_user_id=recipient.owner_user_id,
        campaign_id=recipient.campaign_id,
        recipient_id=recipient.recipient_id,
        list_id=recipient.list_id,
        subscriber_id=recipient.subscriber_id,
        email_address=recipient.email_address,
        kind=BOUNCE_KINDS[bounce.kind],
        source=BOUNCE_SOURCES[bounce.source],
        status_code=bounce.status_code,
        reply_code=bounce.reply_code,
        diagnostic=bounce.diagnostic,
        occur_time=grpcutil.to_timestamp(bounce.occurred_at),
    )


def bounced_key(recording: Recording) -> str:
    """What makes the event's Nats-Msg-Id: the bounce row (one event per recorded report)."""
    return f"{recording.recipient.campaign_id}:{recording.recipient.recipient_id}:{recording.bounce_id}"


def delivered_event(recipient: QueuedAddress, delivered_at: datetime) -> delivery_pb2.RecipientDeliveredEvent:
    """delivery.recipient_delivered of a row Sent whose address had bounced before."""
    return delivery_pb2.RecipientDeliveredEvent(
        owner_user_id=recipient.owner_user_id,
        campaign_id=recipient.campaign_id,
        recipient_id=recipient.recipient_id,
        list_id=recipient.list_id,
        subscriber_id=recipient.subscriber_id,
        email_address=recipient.email_address,
        deliver_time=grpcutil.to_timestamp(delivered_at),
    )


def delivered_key(recipient: QueuedAddress, generation: int) -> str:
    """What makes the event's Nats-Msg-Id: the row and the generation that sent it (a row is Sent once)."""
    return f"{recipient.campaign_id}:{recipient.recipient_id}:{generation}"
