"""The campaign service's events as their protos (protos/herald/campaign/v1/campaign.proto), and delivery's report as the campaign side reads it."""

from __future__ import annotations

from collections.abc import Iterable

from herald.campaign.v1 import campaign_pb2


def deleted_events(deleted: Iterable[tuple[int, int]]) -> list[campaign_pb2.CampaignDeletedEvent]:
    """One campaign.deleted per owner of the deleted (campaign_id, owner_user_id) pairs, owners and ids ascending."""
    by_owner: dict[int, list[int]] = {}
    for campaign_id, owner_user_id in deleted:
        by_owner.setdefault(owner_user_id, []).append(campaign_id)
    return [
        campaign_pb2.CampaignDeletedEvent(owner_user_id=owner, campaign_ids=sorted(ids))
        for owner, ids in sorted(by_owner.items())
    ]
