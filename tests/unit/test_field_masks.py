"""The update-mask rule every Update RPC follows (services/common/field_masks.py)."""

from __future__ import annotations

from google.protobuf import field_mask_pb2
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import campaign_pb2, email_pb2

from services.audience.custom_fields import UPDATABLE_PATHS as CUSTOM_FIELD_PATHS
from services.campaign import domain
from services.campaign.email_domain import UPDATABLE_PATHS as EMAIL_PATHS
from services.common import field_masks


def test_camel_case_paths_name_the_snake_case_fields() -> None:
    assert field_masks.snake_case("emailId") == "email_id"
    assert field_masks.snake_case("email_id") == "email_id"
    assert field_masks.snake_case("utm.mergeTags") == "utm.merge_tags"
    assert field_masks.snake_case("extraContent1") == "extra_content1"


def test_a_mask_with_paths_is_taken_as_given_once_each() -> None:
    mask = field_mask_pb2.FieldMask(paths=["emailId", "email_id", "name"])
    campaign = campaign_pb2.Campaign(campaign_id=1, status=campaign_pb2.CAMPAIGN_STATUS_READY)
    assert field_masks.update_paths(mask, campaign, domain.UPDATABLE_PATHS) == ("email_id", "name")


def test_an_omitted_mask_names_the_populated_updatable_fields() -> None:
    campaign = campaign_pb2.Campaign(
        campaign_id=1,
        name="x",
        schedule_type=campaign_pb2.SCHEDULE_TYPE_IMMEDIATE,
        schedule=campaign_pb2.Schedule(type=campaign_pb2.SCHEDULE_TYPE_IMMEDIATE),
        publish_on_rss=False,
    )
    paths = field_masks.update_paths(field_mask_pb2.FieldMask(), campaign, domain.UPDATABLE_PATHS)
    assert paths == ("name", "schedule")


def test_every_updatable_path_is_a_field_of_its_resource() -> None:
    for message, paths in (
        (campaign_pb2.Campaign, domain.UPDATABLE_PATHS),
        (email_pb2.Email, EMAIL_PATHS),
        (audience_pb2.CustomField, CUSTOM_FIELD_PATHS),
    ):
        assert set(paths) <= set(message.DESCRIPTOR.fields_by_name), message


def test_a_refused_path_names_the_path_to_use() -> None:
    updatable = domain.UPDATABLE_PATHS
    assert "name 'schedule' instead" in field_masks.misnamed("schedule_type", updatable, domain.RENAMED_PATHS)
    assert "the whole field 'schedule'" in field_masks.misnamed("schedule.type", updatable)
    assert "not a field an update may change" in field_masks.misnamed("bogus", updatable)
