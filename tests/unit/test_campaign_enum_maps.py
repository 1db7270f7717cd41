"""The api layer's enum maps (services/campaign/convert.py, email_api.py): every domain enum member has its
proto value and back, and a value a request names that the domain does not know reaches the domain as
Unrecognized (or as None where the enum's UNSPECIFIED means "not given")."""

from __future__ import annotations

import pytest
from herald.campaign.v1 import campaign_pb2, email_pb2

from services.campaign import convert, domain, email_api
from services.campaign.domain import CampaignStatus, OrderField, ScheduleType, Unrecognized, Winner
from services.campaign.email_domain import ContentType, EmailMode, ValidateScope


@pytest.mark.parametrize("status", list(CampaignStatus))
def test_every_status_round_trips_through_the_proto_enum(status: CampaignStatus) -> None:
    value = convert.STATUS_TO_PROTO[status]
    assert campaign_pb2.CampaignStatus.Name(value) == f"CAMPAIGN_STATUS_{status.name}"
    assert convert.status_from_proto(value) is status


@pytest.mark.parametrize("value", [campaign_pb2.CAMPAIGN_STATUS_UNSPECIFIED, 99, -1])
def test_an_unspecified_or_unknown_status_is_unrecognized(value: int) -> None:
    assert convert.status_from_proto(value) == Unrecognized(value)


@pytest.mark.parametrize("schedule_type", list(ScheduleType))
def test_every_schedule_type_round_trips_through_the_proto_enum(schedule_type: ScheduleType) -> None:
    value = convert.SCHEDULE_TYPE_TO_PROTO[schedule_type]
    assert campaign_pb2.ScheduleType.Name(value) == f"SCHEDULE_TYPE_{schedule_type.name}"
    assert convert.schedule_type_from_proto(value) is schedule_type


def test_an_unspecified_schedule_type_is_unrecognized_in_a_filter_and_absent_in_a_schedule() -> None:
    assert convert.schedule_type_from_proto(campaign_pb2.SCHEDULE_TYPE_UNSPECIFIED) == Unrecognized(0)
    request = campaign_pb2.UpdateCampaignRequest(campaign=campaign_pb2.Campaign(schedule=campaign_pb2.Schedule()))
    assert convert.patch_from_proto(request).schedule == domain.ScheduleRequest(None)


def test_an_unspecified_order_field_orders_by_campaign_id_and_an_unknown_one_is_unrecognized() -> None:
    assert convert.order_field_from_proto(campaign_pb2.CAMPAIGN_ORDER_FIELD_UNSPECIFIED) is OrderField.CAMPAIGN_ID
    for value in campaign_pb2.CampaignOrderField.values():
        assert isinstance(convert.order_field_from_proto(value), OrderField)
    assert convert.order_field_from_proto(42) == Unrecognized(42)


@pytest.mark.parametrize("winner", list(Winner))
def test_every_winner_round_trips_through_the_proto_enum(winner: Winner) -> None:
    value = convert.WINNER_TO_PROTO[winner]
    assert campaign_pb2.Winner.Name(value) == f"WINNER_{winner.name}"
    assert convert.winner_from_proto(value) is winner


def test_an_unspecified_winner_is_none_and_an_unknown_one_unrecognized() -> None:
    assert convert.winner_from_proto(campaign_pb2.WINNER_UNSPECIFIED) is None
    assert convert.winner_from_proto(9) == Unrecognized(9)


def test_every_updatable_path_is_a_campaign_field() -> None:
    for path in domain.UPDATABLE_PATHS:
        assert path in campaign_pb2.Campaign.DESCRIPTOR.fields_by_name


def test_the_patch_carries_the_status_a_request_names() -> None:
    def patch(status: int) -> domain.CampaignPatch:
        campaign = campaign_pb2.Campaign(campaign_id=3, status=status)  # type: ignore[arg-type]
        return convert.patch_from_proto(campaign_pb2.UpdateCampaignRequest(campaign=campaign))

    assert patch(campaign_pb2.CAMPAIGN_STATUS_READY).status is CampaignStatus.READY
    assert patch(campaign_pb2.CAMPAIGN_STATUS_UNSPECIFIED).status == Unrecognized(0)


# --- emails ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", list(ContentType))
def test_every_content_type_round_trips_through_the_proto_enum(content_type: ContentType) -> None:
    value = email_api.CONTENT_TYPE_TO_PROTO[content_type]
    assert email_pb2.ContentType.Name(value) == f"CONTENT_TYPE_{content_type.name}"
    assert email_api.CONTENT_TYPE_FROM_PROTO[value] is content_type


@pytest.mark.parametrize("mode", list(EmailMode))
def test_every_mode_round_trips_through_the_proto_enum(mode: EmailMode) -> None:
    value = email_api.MODE_TO_PROTO[mode]
    assert email_pb2.EmailMode.Name(value) == f"EMAIL_MODE_{mode.name}"
    assert email_api.MODE_FROM_PROTO[value] is mode


def test_every_validate_scope_is_known_and_unspecified_is_not_given() -> None:
    for value in email_pb2.ValidateScope.values():
        scope = email_api.validate_scope_from_proto(value)
        if value == email_pb2.VALIDATE_SCOPE_UNSPECIFIED:
            assert scope is None
        else:
            assert isinstance(scope, ValidateScope)
    assert email_api.validate_scope_from_proto(42) == Unrecognized(42)
