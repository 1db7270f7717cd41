"""Issue 14: a field that is accepted is acted on, or it is refused with a clear error.

The field audit in docs/legacy-mapping.md ("Field audit: accepted means acted on") must name every parameter
of every served legacy command (the Param rows, which the OpenAPI document is generated from) and every
field of every gRPC *Request message and of the resources they carry; and no field may be marked ignored
unless it is in IGNORED below, with the issue that tracks it. A new parameter or field fails this test
until someone decides what it does; a fixed defect fails it until IGNORED loses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import campaign_pb2, email_pb2, template_pb2
from herald.delivery.v1 import delivery_pb2, event_webhooks_pb2
from herald.tag.v1 import tag_pb2

from services.campaign.domain import update
from services.campaign.email_domain import UNSUPPORTED
from translator.commands import Param
from translator.commands import email as email_commands
from translator.commands.campaign.update import UPDATE_CODES
from translator.commands.imports import POST_CODES
from translator.commands.registry import all_commands

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "legacy-mapping.md"
OUTCOMES = ("acted on", "data", "refused", "output only", "no counterpart", "**ignored: defect**")

# Fields stored (or checked) and never acted on although they promise behaviour. Each is a known defect of
# issue 14 that was not small enough to fix or refuse without breaking clients that send it today. Remove
# an entry when its field is acted on or refused (and change its row in the doc).
IGNORED: dict[tuple[str, str], str] = {}

# Fields that name a kind of thing Herald does not have, so that no value can name one: checked for form, and
# the rest of the call is carried out because refusing it would be worse. Each needs its reason here and in
# the doc's row; a new one fails test_nothing_lacks_a_counterpart_but_the_known_ones until someone adds it.
NO_COUNTERPART: dict[tuple[str, str], str] = {
    ("subscriber.unsubscribe", "AutoResponderID"): (
        "Herald has no autoresponders; refusing the unsubscription would keep mailing someone who asked to stop"
    ),
    ("subscriber.unsubscribe", "Channel"): (
        "Herald sends by email only and keeps no subscription per channel; refusing the unsubscription would "
        "keep mailing someone who asked to stop"
    ),
    ("subscriber.unsubscribe", "BypassListSuppressionSettings"): (
        "Herald lists have no suppression settings to apply or bypass; refusing the unsubscription would keep "
        "mailing someone who asked to stop"
    ),
    ("subscriber.create", "ApplyBehaviors"): "Herald lists have no behaviours; refusing the subscription is worse",
    ("subscriber.create", "UpdateStatistics"): (
        "Herald keeps no stored subscription statistics (list counts are counted from the subscribers); "
        "refusing the subscription is worse"
    ),
    ("subscriber.create", "TriggerWebServices"): (
        "Herald has no web service integrations; refusing the subscription is worse"
    ),
    (
        "subscriber.create",
        "TriggerAutoResponders",
    ): "Herald has no autoresponders; refusing the subscription is worse",
    ("user.login", "TFACode"): (
        "Herald accounts have no two-factor authentication, so no code is asked for or checked, as for a legacy "
        "account without 2FA; refusing it would lock clients out without protecting anyone"
    ),
    ("admin.login", "TFACode"): "as user.login's TFACode",
    (
        "user.login",
        "TFARecoveryCode",
    ): "there is no 2FA to recover or disable; the login is decided by the credentials",
}


def audit_rows() -> Iterator[tuple[list[str], list[str], str]]:
    """(owners, fields, outcome) of every table row between the field-audit markers: the commands or
    messages of the first cell, the parameters or fields of the second (`*`: every field), the outcome."""
    text = DOC.read_text()
    begin, end = text.index("<!-- field-audit:begin -->"), text.index("<!-- field-audit:end -->")
    for line in text[begin:end].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or cells[0] in ("command", "message") or cells[0][0] == "-":
            continue
        yield re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", cells[1]), cells[2]


def audited() -> dict[tuple[str, str], str]:
    outcomes: dict[tuple[str, str], str] = {}
    for owners, fields, outcome in audit_rows():
        assert owners and fields, f"a row without commands/messages or fields: {owners} {fields}"
        for owner in owners:
            for name in fields:
                assert (owner, name) not in outcomes, f"{owner} {name} is in the audit twice"
                outcomes[owner, name] = outcome
    return outcomes


def _param_names(params: tuple[Param, ...], prefix: str = "") -> Iterator[str]:
    for param in params:
        yield prefix + param.name
        yield from _param_names(param.fields, f"{prefix}{param.name}.")


def legacy_parameters() -> set[tuple[str, str]]:
    """(command, parameter) of every served command; nested parameters as dotted paths."""
    return {(name, param) for name, row in all_commands().items() for param in _param_names(row.params)}


def _herald_messages() -> dict[str, Descriptor]:
    """Every *Request message of every served RPC, and every Herald message they carry (not map entries)."""
    found: dict[str, Descriptor] = {}

    def visit(message: Descriptor) -> None:
        if message.GetOptions().map_entry:
            value = message.fields_by_name["value"]
            if value.type == FieldDescriptor.TYPE_MESSAGE:
                visit(value.message_type)
            return
        if not message.full_name.startswith("herald."):
            return
        if message.name in found:
            # Two packages may share a name (RetryFailedRecipientsRequest): one row then covers both.
            same = [f.name for f in found[message.name].fields] == [f.name for f in message.fields]
            assert same, f"two {message.name} messages with different fields: name them apart in the audit"
            return
        found[message.name] = message
        for field in message.fields:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                visit(field.message_type)

    for module in (campaign_pb2, email_pb2, template_pb2, tag_pb2, audience_pb2, delivery_pb2, event_webhooks_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                visit(method.input_type)
    return found


def grpc_fields() -> set[tuple[str, str]]:
    return {(name, field.name) for name, message in _herald_messages().items() for field in message.fields}


def _expanded() -> dict[tuple[str, str], str]:
    """The audit with `*` rows expanded to every field of their message."""
    messages = _herald_messages()
    outcomes = {}
    for (owner, name), outcome in audited().items():
        if name == "*":
            assert owner in messages, f"`*` on {owner}, which is no audited message"
            outcomes |= {(owner, field.name): outcome for field in messages[owner].fields}
        else:
            outcomes[owner, name] = outcome
    return outcomes


def test_every_legacy_parameter_is_in_the_audit() -> None:
    missing = sorted(legacy_parameters() - _expanded().keys())
    assert missing == [], f"legacy parameters docs/legacy-mapping.md's field audit does not name: {missing}"


def test_every_field_of_every_request_and_resource_is_in_the_audit() -> None:
    missing = sorted(grpc_fields() - _expanded().keys())
    assert missing == [], f"gRPC fields docs/legacy-mapping.md's field audit does not name: {missing}"


def test_the_audit_names_nothing_the_code_does_not_declare() -> None:
    stale = sorted(_expanded().keys() - legacy_parameters() - grpc_fields())
    assert stale == [], f"the field audit names parameters or fields that no longer exist: {stale}"


def test_every_outcome_is_one_of_the_legend() -> None:
    for (owner, name), outcome in _expanded().items():
        assert outcome.startswith(OUTCOMES), f"{owner} {name}: {outcome!r} is not one of {OUTCOMES}"


def test_nothing_is_ignored_but_the_known_defects() -> None:
    ignored = {key for key, outcome in _expanded().items() if "ignored" in outcome.lower()}
    assert sorted(ignored - IGNORED.keys()) == [], "a new ignored field: act on it or refuse it"
    assert sorted(IGNORED.keys() - ignored) == [], "a fixed defect is still in IGNORED: remove it"


def test_nothing_lacks_a_counterpart_but_the_known_ones() -> None:
    lacking = {key for key, outcome in _expanded().items() if outcome.startswith("no counterpart")}
    assert sorted(lacking - NO_COUNTERPART.keys()) == [], "a new field without counterpart: say why, or act on it"
    assert sorted(NO_COUNTERPART.keys() - lacking) == [], "a field in NO_COUNTERPART has another outcome now"


def test_the_refused_settings_are_refused_by_the_code() -> None:
    """The rows that say refused name reasons and codes the code has."""
    outcomes = _expanded()
    assert outcomes["campaign.update", "GoogleAnalyticsDomains"].startswith(
        "refused: anything but empty answers 26"
    )
    assert outcomes["campaign.update", "S2SEnabled"].startswith("refused: true answers 26")
    assert UPDATE_CODES["SETTING_UNSUPPORTED"] == 26
    assert outcomes["subscribers.import.post", "TriggerActions"].startswith("refused: true answers 12")
    assert outcomes["subscribers.import.post", "Tags"].startswith("refused: a tag name answers 21")
    assert (POST_CODES["SETTING_UNSUPPORTED@trigger_actions"], POST_CODES["SETTING_UNSUPPORTED@tags"]) == (12, 21)
    for name in ("FetchURL", "FetchPlainURL", "ImageEmbedding", "IsEmailTemplate", "UTMMergeTags"):
        assert " answers 21 " in outcomes["email.update", name], name
    assert email_commands.UPDATE_CODES["SETTING_UNSUPPORTED"] == 21
    assert set(UNSUPPORTED) == {
        "fetch_url",
        "fetch_plain_url",
        "image_embedding",
        "is_email_template",
        "utm.merge_tags",
    }
    assert "SETTING_UNSUPPORTED" in update._REASON_ORDER
    assert email_commands.UPDATE_CODES["senderdomain"] == 21
    assert " answers 22" in outcomes["subscribers.import.post", "ImportStatusUpdateWebhookURL"]
    assert POST_CODES["IMPORT_WEBHOOK_URL_INVALID"] == POST_CODES["importstatusupdatewebhookurl"] == 22
