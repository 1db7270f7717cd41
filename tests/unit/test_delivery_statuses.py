"""Delivery's two status sets: a queue row's RecipientStatus and the campaign status a run mirrors (RunState)."""

from __future__ import annotations

import json

import pytest
from herald.campaign.v1 import campaign_pb2
from herald.delivery.v1 import delivery_pb2

from services.campaign.domain import CampaignStatus
from services.common import events
from services.delivery import api
from services.delivery import events as delivery_events
from services.delivery.domain import RecipientStatus
from services.delivery.sending import RunState


def test_a_run_mirrors_exactly_the_statuses_the_campaign_service_has() -> None:
    assert {state.value for state in RunState} == {status.value for status in CampaignStatus}


def test_a_status_change_carries_a_run_state() -> None:
    payload = json.dumps(
        {
            "campaign_id": "5",
            "owner_user_id": "7",
            "status": "CAMPAIGN_STATUS_PAUSED",
            "previous_status": "CAMPAIGN_STATUS_SENDING",
        }
    ).encode()
    change = delivery_events.status_change(events.CAMPAIGN_STATUS_CHANGED.decode(payload))
    assert change.status is RunState.PAUSED


def test_every_status_of_the_protos_is_a_run_state() -> None:
    for status in campaign_pb2.CampaignStatus.values():
        if status != campaign_pb2.CAMPAIGN_STATUS_UNSPECIFIED:
            event = campaign_pb2.CampaignStatusChangedEvent(campaign_id=5, owner_user_id=7, status=status)
            assert isinstance(delivery_events.status_change(event).status, RunState)


def test_a_status_change_with_a_status_the_campaign_service_has_not_is_malformed() -> None:
    payload = json.dumps(
        {
            "campaign_id": "5",
            "owner_user_id": "7",
            "status": "Pending",
            "previous_status": "CAMPAIGN_STATUS_SENDING",
        }
    ).encode()
    with pytest.raises(events.UndecodableEvent):
        events.CAMPAIGN_STATUS_CHANGED.decode(payload)


def test_every_recipient_status_has_its_state_in_the_api_and_back() -> None:
    states = {status: api._STATE_BY_STATUS[status] for status in RecipientStatus}
    assert delivery_pb2.RECIPIENT_STATE_UNSPECIFIED not in states.values()
    assert len(set(states.values())) == len(RecipientStatus)
    assert {api._STATUS_BY_STATE[state] for state in states.values()} == set(RecipientStatus)
