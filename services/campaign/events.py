"""The campaign service's events as their protos (protos/herald/campaign/v1/campaign.proto), and delivery's report as the campaign side reads it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC

from herald.campaign.v1 import campaign_pb2
from herald.delivery.v1 import delivery_pb2

from services.campaign import convert
from services.campaign.domain import Campaign
from services.campaign.sending import CampaignFinished, SendStart
from services.common import events
from services.common.outbox import UnitOfWork


def status_changed(before: Campaign, after: Campaign) -> campaign_pb2.CampaignStatusChangedEvent | None:
    """The campaign.status_changed of a change, or None when the status stayed the same."""
    if before.status is after.status:
        return None
    return campaign_pb2.CampaignStatusChangedEvent(
        campaign_id=after.campaign_id,
        owner_user_id=after.owner_user_id,
        status=convert.STATUS_TO_PROTO[after.status],
        previous_status=convert.STATUS_TO_PROTO[before.status],
    )


def record_status_change(work: UnitOfWork, before: Campaign, after: Campaign) -> None:
    """Publishes campaign.status_changed with the unit of work when the status changed."""
    event = status_changed(before, after)
    if event is not None:
        work.publish(events.CAMPAIGN_STATUS_CHANGED, event)


def deleted_events(deleted: Iterable[tuple[int, int]]) -> list[campaign_pb2.CampaignDeletedEvent]:
    """One campaign.deleted per owner of the deleted (campaign_id, owner_user_id) pairs, owners and ids ascending."""
    by_owner: dict[int, list[int]] = {}
    for campaign_id, owner_user_id in deleted:
        by_owner.setdefault(owner_user_id, []).append(campaign_id)
    return [
        campaign_pb2.CampaignDeletedEvent(owner_user_id=owner, campaign_ids=sorted(ids))
        for owner, ids in sorted(by_owner.items())
    ]


def send_requested(start: SendStart) -> campaign_pb2.CampaignSendRequestedEvent:
    """The request to send the occurrence the picker started (or continued, after a pause); unsigned."""
    campaign = start.campaign
    event = campaign_pb2.CampaignSendRequestedEvent(
        campaign_id=campaign.campaign_id,
        owner_user_id=campaign.owner_user_id,
        name=campaign.name,
        email_id=campaign.email_id or 0,
        variations=[campaign_pb2.Variation(email_id=v.email_id, weight=v.weight) for v in campaign.variations],
        targeting=convert.targeting_to_proto(campaign.targeting),
        resume=start.resume,
        occurrence=start.progress.occurrences_started,
        non_openers_of_campaign_id=campaign.auto_resend_of or 0,
        relay=campaign.relay,
    )
    if campaign.split_test is not None:
        event.split_test.CopyFrom(convert.split_test_to_proto(campaign.split_test))
    return event


def send_request_key(start: SendStart) -> str:
    """What makes a send request's Nats-Msg-Id: the campaign and how many requests it has been sent."""
    return f"{start.campaign.campaign_id}:{start.progress.send_requests}"


def campaign_finished(event: delivery_pb2.CampaignFinishedEvent) -> CampaignFinished:
    """Delivery's report that an occurrence finished, in the campaign service's terms (decoded, so checked)."""
    return CampaignFinished(
        campaign_id=event.campaign_id,
        owner_user_id=event.owner_user_id,
        failed=event.outcome == delivery_pb2.SEND_OUTCOME_FAILED,
        reason=event.reason,
        finished_at=event.finish_time.ToDatetime(tzinfo=UTC),
        occurrence=event.occurrence,
    )
