"""The RPC permission table: it names exactly the services' RPCs, agrees with the legacy command rows, and grants
what it says to whom it says; docs/legacy-mapping.md shows it as it is."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import campaign_pb2, email_pb2, template_pb2
from herald.delivery.v1 import delivery_pb2, event_webhooks_pb2
from herald.tag.v1 import tag_pb2

from services.common import auth, permissions
from services.common.config import Settings
from services.common.errors import DomainError, ErrorKind
from services.common.grpcutil import RpcFailure
from services.common.permissions import RPC_PERMISSIONS, Access, authorize
from services.delivery.queue import owner_metadata
from translator.app import _mapped
from translator.commands import Problems
from translator.commands.registry import all_commands
from translator.envelope import NOT_PERMITTED, AuthError

ROOT = Path(__file__).resolve().parent.parent.parent
CAMPAIGN = "/herald.campaign.v1.CampaignService/"
AUDIENCE = "/herald.audience.v1.AudienceService/"
DELIVERY = "/herald.delivery.v1.DeliveryService/"
TAG = "/herald.tag.v1.TagService/"


def served_rpcs() -> set[str]:
    """Every RPC of every service Herald serves, by full name, from the generated descriptors."""
    names = set()
    for module in (campaign_pb2, email_pb2, template_pb2, tag_pb2, audience_pb2, delivery_pb2, event_webhooks_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names |= {f"/{service.full_name}/{method.name}" for method in service.methods}
    return names


def test_the_table_names_exactly_the_rpcs_of_every_service() -> None:
    served = served_rpcs()
    assert {method.split("/")[1] for method in served} == {
        "herald.campaign.v1.CampaignService",
        "herald.campaign.v1.EmailService",
        "herald.campaign.v1.TemplateService",
        "herald.tag.v1.TagService",
        "herald.audience.v1.AudienceService",
        "herald.delivery.v1.DeliveryService",
        "herald.delivery.v1.EventWebhookService",
    }
    assert sorted(served - RPC_PERMISSIONS.keys()) == [], "RPCs nobody may call: add them to the table"
    assert sorted(RPC_PERMISSIONS.keys() - served) == [], "the table names RPCs no service serves"


def test_each_rpc_needs_what_its_legacy_commands_need() -> None:
    commands = all_commands()
    for method, requirement in RPC_PERMISSIONS.items():
        for name in requirement.commands:
            row = commands[name]
            if requirement.access is Access.ADMIN:
                assert row.scope == "admin", (method, name)
            elif requirement.access is Access.PERMISSION:
                assert (row.scope, row.permission) != ("admin", None), (method, name)
                assert row.permission == requirement.permission, (method, name)
            else:
                assert requirement.access is Access.ANY and row.permission is None, (method, name)
                assert row.scope != "admin", (method, name)


def test_every_legacy_command_that_calls_a_service_is_behind_some_rpc() -> None:
    named = {name for requirement in RPC_PERMISSIONS.values() for name in requirement.commands}
    # The login commands are the translator's own (identity lives at the edge).
    assert set(all_commands()) - named == {"user.login", "admin.login"}


def test_the_mapping_doc_shows_the_table_as_it_is() -> None:
    doc = (ROOT / "docs" / "legacy-mapping.md").read_text()
    assert permissions.with_table(doc) == doc, (
        "docs/legacy-mapping.md is stale: run python tools/permissions_doc.py"
    )
    for method, requirement in RPC_PERMISSIONS.items():
        service, name = method.lstrip("/").split("/")
        assert f"| `{service.rsplit('.', 1)[-1]}/{name}` | {requirement.describe()} |" in doc


def denial(method: str, principal: auth.Principal) -> DomainError:
    with pytest.raises(DomainError) as raised:
        authorize(method, principal)
    assert (raised.value.kind, raised.value.reason) == (ErrorKind.PERMISSION, "PERMISSION_DENIED")
    assert raised.value.metadata["rpc"] == method
    return raised.value


NARROW = auth.Principal(user_id=7, permissions=frozenset({"Campaign.Get", "Tag.Get"}))


def test_a_narrow_token_calls_only_what_its_permissions_cover() -> None:
    authorize(CAMPAIGN + "GetCampaign", NARROW)
    authorize(TAG + "ListTags", NARROW)  # tags.get names no permission
    for method, permission in (
        (CAMPAIGN + "CreateCampaign", "Campaign.Create"),
        (CAMPAIGN + "DeleteCampaigns", "Campaign.Delete"),
        (CAMPAIGN + "ListCampaigns", "Campaigns.Get"),
        (AUDIENCE + "CreateList", "List.Create"),
        (AUDIENCE + "AddSuppressions", "Subscribers.Import"),
    ):
        error = denial(method, NARROW)
        assert error.metadata == {"rpc": method, "requires": "permission", "permission": permission}
        assert permission in error.message


def test_all_permissions_grant_every_permission_but_not_internal_or_admin_rpcs() -> None:
    everything = auth.Principal(user_id=7, permissions=frozenset({"*"}))
    for method, requirement in RPC_PERMISSIONS.items():
        if requirement.access in (Access.PERMISSION, Access.ANY):
            authorize(method, everything)
        else:
            assert denial(method, everything).metadata["requires"] == requirement.access.value


def test_an_admin_may_call_everything() -> None:
    for method in RPC_PERMISSIONS:
        authorize(method, auth.Principal(user_id=0, is_admin=True))


def test_a_herald_service_acting_for_a_user_passes_all_but_admin_rpcs() -> None:
    on_behalf = auth.Principal(user_id=7, service="campaign")
    for method, requirement in RPC_PERMISSIONS.items():
        if requirement.access is Access.ADMIN:
            assert denial(method, on_behalf).metadata["requires"] == "admin"
        else:
            authorize(method, on_behalf)


def test_the_campaign_service_may_look_up_lists_for_a_user_who_may_only_update_campaigns() -> None:
    updater = auth.Principal(user_id=7, permissions=frozenset({"Campaign.Update"}))
    authorize(CAMPAIGN + "UpdateCampaign", updater)
    denial(AUDIENCE + "GetList", updater)
    secret = "s" * 32
    downstream = auth.verify_token(auth.Downstream(updater, "campaign", secret).token(), secret)
    assert (downstream.user_id, downstream.service) == (7, "campaign")
    for rpc in ("GetList", "ListSegments"):
        authorize(AUDIENCE + rpc, downstream)


def test_delivery_sends_with_an_owner_token_that_reaches_what_sending_needs(tmp_path: Path) -> None:
    settings = Settings(token_secret="t" * 32, data_dir=tmp_path)
    ((key, value),) = owner_metadata(settings, 42)
    owner = auth.verify_token(value.removeprefix("Bearer "), settings.effective_token_secret())
    assert key == "authorization" and (owner.user_id, owner.is_admin, owner.service) == (42, False, "delivery")
    for method in (
        CAMPAIGN + "GetCampaign",
        "/herald.campaign.v1.EmailService/GetEmail",
        AUDIENCE + "StreamRecipients",
        AUDIENCE + "CountRecipients",
    ):
        authorize(method, owner)
    denial(DELIVERY + "RetryFailedRecipients", owner)


def test_an_rpc_missing_from_the_table_is_refused_even_to_an_admin() -> None:
    error = denial("/herald.campaign.v1.CampaignService/LaunchEverything", auth.Principal(0, is_admin=True))
    assert error.metadata["requires"] == "unlisted"


def test_a_service_refusal_behind_a_legacy_command_answers_99999() -> None:
    failure = RpcFailure(
        grpc.StatusCode.PERMISSION_DENIED, "CreateList requires the permission List.Create", "PERMISSION_DENIED"
    )
    with pytest.raises(AuthError) as raised:
        _mapped(all_commands()["list.create"], Problems([], failure))
    assert raised.value.code == NOT_PERMITTED
