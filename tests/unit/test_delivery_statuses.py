"""Delivery's two status sets: a queue row's RecipientStatus and the campaign status a run mirrors (RunState)."""

from __future__ import annotations

import json

import pytest
from herald.delivery.v1 import delivery_pb2

from services.campaign.domain import CampaignStatus
from services.delivery import api, sending
from services.delivery.domain import RecipientStatus
from services.delivery.sending import RunState


def test_a_run_mirrors_exactly_the_statuses_the_campaign_service_has() -> None:
    assert {state.value for state in RunState} == {status.value for status in CampaignStatus}


def test_a_status_change_carries_a_run_state() -> None:
    payload = json.dumps({"campaign_id": 5, "owner_user_id": 7, "status": "Paused"}).encode()
    change = sending.parse_status_change(payload)
    assert change.status is RunState.PAUSED


def test_a_status_change_with_a_status_the_campaign_service_has_not_is_malformed() -> None:
    payload = json.dumps({"campaign_id": 5, "owner_user_id": 7, "status": "Pending"}).encode()
    with pytest.raises(ValueError, match="malformed status change"):
        sending.parse_status_change(payload)


def test_every_recipient_status_has_its_state_in_the_api_and_back() -> None:
    states = {status: api._STATE_BY_STATUS[status] for status in RecipientStatus}
    assert delivery_pb2.RECIPIENT_STATE_UNSPECIFIED not in states.values()
    assert len(set(states.values())) == len(RecipientStatus)
    assert {api._STATUS_BY_STATE[state] for state in states.values()} == set(RecipientStatus)
