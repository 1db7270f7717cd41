"""The campaign service's events as it builds them from its domain (services/campaign/events.py), and as delivery reads them."""

from __future__ import annotations

import dataclasses

import pytest
from herald.campaign.v1 import campaign_pb2

from services.campaign import domain, events
from services.campaign.domain import CampaignStatus
from services.common import events as herald_events
from services.delivery import events as delivery_events
from tests.unit.campaign_factory import campaign


def test_deleted_campaigns_give_one_event_per_owner_with_ids_ascending() -> None:
    deletions = events.deleted_events([(9, 2), (3, 1), (5, 2), (4, 1)])
    assert [(e.owner_user_id, list(e.campaign_ids)) for e in deletions] == [(1, [3, 4]), (2, [5, 9])]


def test_nothing_deleted_gives_no_event() -> None:
    assert events.deleted_events([]) == []


def test_a_status_change_is_announced_and_a_non_change_is_not() -> None:
    before = campaign(status=CampaignStatus.SENDING)
    event = events.status_changed(before, domain.paused(before))
    assert event == campaign_pb2.CampaignStatusChangedEvent(
        campaign_id=7,
        owner_user_id=3,
        status=campaign_pb2.CAMPAIGN_STATUS_PAUSED,
        previous_status=campaign_pb2.CAMPAIGN_STATUS_SENDING,
    )
    assert events.status_changed(before, before) is None


@pytest.mark.parametrize("status", list(CampaignStatus))
def test_delivery_mirrors_every_status_in_the_campaign_services_words(status: CampaignStatus) -> None:
    before = campaign(
        status=CampaignStatus.SENDING if status is not CampaignStatus.SENDING else CampaignStatus.READY
    )
    event = events.status_changed(before, dataclasses.replace(before, status=status))
    assert event is not None
    decoded = herald_events.CAMPAIGN_STATUS_CHANGED.decode(herald_events.CAMPAIGN_STATUS_CHANGED.encode(event))
    assert delivery_events.status_change(decoded).status == status.value
