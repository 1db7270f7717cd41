"""Proto to domain and back for the audience servicer: the enum maps, records as messages, Struct values as plain JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from herald.audience.v1 import audience_pb2
from herald.campaign.v1 import email_pb2

from services.audience import domain, store
from services.audience.domain import (
    CustomFieldRecord,
    FieldOption,
    FieldSpec,
    MailingList,
    SegmentRecord,
    SubscriberRecord,
)
from services.common import grpcutil
from services.common.protojson import plain_json

OPT_IN_NAMES = {audience_pb2.OPT_IN_MODE_SINGLE: "Single", audience_pb2.OPT_IN_MODE_DOUBLE: "Double"}
OPT_IN_VALUES = {name: value for value, name in OPT_IN_NAMES.items()}
STATUS_NAMES = {
    audience_pb2.SUBSCRIBER_STATUS_SUBSCRIBED: "Subscribed",
    audience_pb2.SUBSCRIBER_STATUS_UNSUBSCRIBED: "Unsubscribed",
    audience_pb2.SUBSCRIBER_STATUS_OPT_IN_PENDING: "Opt-In Pending",
    audience_pb2.SUBSCRIBER_STATUS_OPT_OUT_PENDING: "Opt-Out Pending",
}
STATUS_VALUES = {name: value for value, name in STATUS_NAMES.items()}
BOUNCE_NAMES = {
    audience_pb2.BOUNCE_TYPE_NOT_BOUNCED: "Not Bounced",
    audience_pb2.BOUNCE_TYPE_SOFT: "Soft",
    audience_pb2.BOUNCE_TYPE_HARD: "Hard",
}
BOUNCE_VALUES = {name: value for value, name in BOUNCE_NAMES.items()}
SUPPRESSION_REASON_VALUES = {
    "": audience_pb2.SUPPRESSION_REASON_UNSPECIFIED,
    domain.SUPPRESSION_MANUAL: audience_pb2.SUPPRESSION_REASON_MANUAL,
    domain.SUPPRESSION_BOUNCE: audience_pb2.SUPPRESSION_REASON_BOUNCE,
    domain.SUPPRESSION_COMPLAINT: audience_pb2.SUPPRESSION_REASON_COMPLAINT,
}
LIST_ORDER = {
    audience_pb2.LIST_ORDER_FIELD_UNSPECIFIED: "list_id",
    audience_pb2.LIST_ORDER_FIELD_LIST_ID: "list_id",
    audience_pb2.LIST_ORDER_FIELD_NAME: "name",
    audience_pb2.LIST_ORDER_FIELD_CREATE_TIME: "create_time",
    audience_pb2.LIST_ORDER_FIELD_ACTIVE_SUBSCRIBER_COUNT: "active_subscriber_count",
    audience_pb2.LIST_ORDER_FIELD_SEGMENT_COUNT: "segment_count",
    audience_pb2.LIST_ORDER_FIELD_ARCHIVE_TIME: "archive_time",
    audience_pb2.LIST_ORDER_FIELD_LAST_ACTIVITY_TIME: "last_activity_time",
}
ARCHIVED = {
    audience_pb2.LIST_ARCHIVED_FILTER_UNSPECIFIED: False,
    audience_pb2.LIST_ARCHIVED_FILTER_UNARCHIVED: False,
    audience_pb2.LIST_ARCHIVED_FILTER_ARCHIVED: True,
    audience_pb2.LIST_ARCHIVED_FILTER_ALL: None,
}
# The confirmation email's enums by their legacy names; "" is not given, an unknown value is "?".
CONTENT_TYPE_NAMES = {
    email_pb2.CONTENT_TYPE_UNSPECIFIED: "",
    email_pb2.CONTENT_TYPE_HTML: "HTML",
    email_pb2.CONTENT_TYPE_PLAIN: "Plain",
    email_pb2.CONTENT_TYPE_BOTH: "Both",
}
MODE_NAMES = {
    email_pb2.EMAIL_MODE_UNSPECIFIED: "",
    email_pb2.EMAIL_MODE_EMPTY: "Empty",
    email_pb2.EMAIL_MODE_EDITOR: "Editor",
    email_pb2.EMAIL_MODE_TEMPLATE: "Template",
    email_pb2.EMAIL_MODE_IMPORT: "Import",
    email_pb2.EMAIL_MODE_UNLAYER: "Unlayer",
    email_pb2.EMAIL_MODE_STRIPO: "Stripo",
}


# The custom field enums by their legacy names: value n is the (n-1)th name of the domain's tuple.
FIELD_TYPE_NAMES = dict(enumerate(domain.FIELD_TYPES, start=1))
VALIDATION_METHOD_NAMES = dict(enumerate(domain.VALIDATION_METHODS, start=1))
VISIBILITY_NAMES = dict(enumerate(domain.VISIBILITIES, start=1))
FIELD_ORDER = {
    audience_pb2.CUSTOM_FIELD_ORDER_FIELD_UNSPECIFIED: "name",
    audience_pb2.CUSTOM_FIELD_ORDER_FIELD_NAME: "name",
    audience_pb2.CUSTOM_FIELD_ORDER_FIELD_CUSTOM_FIELD_ID: "custom_field_id",
    audience_pb2.CUSTOM_FIELD_ORDER_FIELD_TYPE: "type",
    audience_pb2.CUSTOM_FIELD_ORDER_FIELD_REQUIRED: "required",
    audience_pb2.CUSTOM_FIELD_ORDER_FIELD_UNIQUE: "unique",
    audience_pb2.CUSTOM_FIELD_ORDER_FIELD_VISIBILITY: "visibility",
    audience_pb2.CUSTOM_FIELD_ORDER_FIELD_GLOBAL: "global",
}


def _named(names: Mapping[int, str], value: int, default: str) -> str:
    """A custom field enum's legacy name: the default for UNSPECIFIED, "?" outside the enum."""
    return default if value == 0 else names.get(value, "?")


def field_spec(message: audience_pb2.CustomField) -> FieldSpec:
    """A CustomField message's settings (unset enums are the defaults; validate_field_spec checks them)."""
    return FieldSpec(
        name=message.name,
        field_type=_named(FIELD_TYPE_NAMES, message.type, "Single line"),
        default_value=message.default_value,
        options=tuple(FieldOption(o.label, o.value, o.selected) for o in message.options),
        required=message.required,
        unique=message.unique,
        validation_method=_named(VALIDATION_METHOD_NAMES, message.validation_method, "Disabled"),
        validation_rule=message.validation_rule,
        merge_tag_alias=message.merge_tag_alias,
        visibility=_named(VISIBILITY_NAMES, message.visibility, "User Only"),
        is_global=message.is_global,
        first_year=message.first_year,
        last_year=message.last_year,
    )


def custom_field_message(record: CustomFieldRecord) -> audience_pb2.CustomField:
    spec = record.spec
    return audience_pb2.CustomField(
        custom_field_id=record.custom_field_id,
        owner_user_id=record.owner_user_id,
        list_id=record.list_id or 0,
        name=spec.name,
        type=domain.FIELD_TYPES.index(spec.field_type) + 1,  # type: ignore[arg-type]
        default_value=spec.default_value,
        options=[
            audience_pb2.CustomFieldOption(label=o.label, value=o.value, selected=o.selected) for o in spec.options
        ],
        required=spec.required,
        unique=spec.unique,
        validation_method=domain.VALIDATION_METHODS.index(spec.validation_method) + 1,  # type: ignore[arg-type]
        validation_rule=spec.validation_rule,
        merge_tag_alias=spec.merge_tag_alias,
        visibility=domain.VISIBILITIES.index(spec.visibility) + 1,  # type: ignore[arg-type]
        first_year=spec.first_year,
        last_year=spec.last_year,
        is_global=record.list_id is None,
        create_time=grpcutil.timestamp(record.created_at),
    )


def instant(message: Any, field_name: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime, None when unset."""
    if not message.HasField(field_name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field_name)
    return stamp.ToDatetime(tzinfo=UTC)


def list_message(mailing_list: MailingList) -> audience_pb2.List:
    return audience_pb2.List(
        list_id=mailing_list.list_id,
        owner_user_id=mailing_list.owner_user_id,
        name=mailing_list.name,
        description=mailing_list.description,
        opt_in_mode=OPT_IN_VALUES[mailing_list.opt_in_mode],
        sender_name=mailing_list.sender_name,
        sender_email_address=mailing_list.sender_email_address,
        sender_company=mailing_list.sender_company,
        sender_address=mailing_list.sender_address,
        create_time=grpcutil.timestamp(mailing_list.created_at),
        subscriber_count=mailing_list.subscriber_count,
        active_subscriber_count=mailing_list.active_subscriber_count,
        segment_count=mailing_list.segment_count,
        confirmation_email_id=mailing_list.confirmation_email_id,
        archive_time=grpcutil.timestamp(mailing_list.archived_at),
        last_activity_time=grpcutil.timestamp(mailing_list.last_activity_at),
    )


def subscriber_message(subscriber: SubscriberRecord) -> audience_pb2.Subscriber:
    return audience_pb2.Subscriber(
        subscriber_id=subscriber.subscriber_id,
        list_id=subscriber.list_id,
        email_address=subscriber.email_address,
        first_name=subscriber.first_name,
        last_name=subscriber.last_name,
        status=STATUS_VALUES[subscriber.status],
        bounce_type=BOUNCE_VALUES[subscriber.bounce_type],
        custom_fields=dict(subscriber.custom_fields),
        subscription_time=grpcutil.timestamp(subscriber.subscription_date),
        subscription_ip=subscriber.subscription_ip,
        unsubscription_time=grpcutil.timestamp(subscriber.unsubscription_date),
        unsubscription_ip=subscriber.unsubscription_ip,
        opt_in_time=grpcutil.timestamp(subscriber.optin_date),
        source=subscriber.source,
        source_ref=subscriber.source_ref,
        suppressed=subscriber.suppressed,
        segments=[audience_pb2.SubscriberSegment(segment_id=s, name=n) for s, n in subscriber.segments],
        unsubscription_channel=subscriber.unsubscription_channel,
        suppression_reason=SUPPRESSION_REASON_VALUES[subscriber.suppression_reason],
    )


def rules_message(value: list[Any]) -> struct_pb2.ListValue:
    message = struct_pb2.ListValue()
    message.extend(value)
    return message


def segment_message(segment: SegmentRecord) -> audience_pb2.Segment:
    return audience_pb2.Segment(
        segment_id=segment.segment_id,
        list_id=segment.list_id,
        name=segment.name,
        operator=segment.operator,
        rules=rules_message(segment.rules),
        randomness=segment.randomness,
        randomness_audience_size=segment.randomness_audience_size,
        subscriber_count=segment.subscriber_count,
        create_time=grpcutil.timestamp(segment.created_at),
    )


def rules_of(message: Any, field_name: str) -> list[Any] | None:
    """A ListValue field as plain JSON, None when unset."""
    if not message.HasField(field_name):
        return None
    decoded = json_format.MessageToDict(getattr(message, field_name))
    return list(plain_json(decoded))


def enum_name(names: Mapping[Any, str], value: int) -> str | None:
    """The legacy name: empty for UNSPECIFIED (the default applies), None for a value outside the enum."""
    if value == 0:
        return ""
    return names.get(value)


def recipients_message(
    rows: Sequence[store.RecipientRow], fields: Mapping[int, Sequence[CustomFieldRecord]]
) -> audience_pb2.StreamRecipientsResponse:
    """A chunk of recipients; each one's custom fields as personalization needs them (`fields`: the
    definitions each list sees), by id and alias, defaults included."""
    response = audience_pb2.StreamRecipientsResponse()
    add = response.recipients.add
    for row in rows:
        subscriber_id, list_id, email_address, first_name, last_name, custom, bounce_type = row[:7]
        subscribed, subscription_ip, opted_in = row[7:]
        recipient = add(
            subscriber_id=subscriber_id,
            list_id=list_id,
            email_address=email_address,
            first_name=first_name,
            last_name=last_name,
            bounce_type=BOUNCE_VALUES[bounce_type],
            subscription_ip=subscription_ip,
        )
        if subscribed is not None:
            recipient.subscription_time.FromDatetime(subscribed)
        if opted_in is not None:
            recipient.opt_in_time.FromDatetime(opted_in)
        definitions = fields.get(list_id, ())
        if custom is not None or definitions:
            stored = store.custom_fields_of(custom)
            recipient.custom_fields.update(domain.personalization_values(stored, definitions))
    return response
