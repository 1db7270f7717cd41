"""Rules of subscribers: a new one and its list's demands, duplicates, listing, and the selections of bulk changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.audience import rules as segment_rules
from services.audience.domain._checks import (
    MAX_NAME,
    check_email,
    check_text,
    is_ip_address,
    normalise_email,
)
from services.audience.domain._reasons import (
    BOUNCE_TYPE_INVALID,
    CUSTOM_FIELD_INVALID,
    EMAIL_ADDRESS_INVALID,
    IP_ADDRESS_INVALID,
    IP_ADDRESS_REQUIRED,
    LIST_ID_REQUIRED,
    OPT_IN_TIME_REQUIRED,
    SEARCH_FIELD_INVALID,
    STATUS_INVALID,
    SUBSCRIBER_ALREADY_EXISTS,
    SUBSCRIBER_NOT_FOUND,
    SUBSCRIBER_SELECTOR_REQUIRED,
    SUBSCRIBER_UNSUBSCRIBED,
    SUBSCRIPTION_IP_INVALID,
    UNSUBSCRIPTION_IP_INVALID,
)
from services.audience.domain._records import MailingList, NewSubscriber
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations, conflict, not_found

STATUSES = ("Subscribed", "Unsubscribed", "Opt-In Pending", "Opt-Out Pending")
BOUNCE_TYPES = ("Not Bounced", "Soft", "Hard")
SOURCES = ("CSVImport", "API", "Webhook", "Manual", "Other", "Unknown")
_SOURCE_BY_KEY = {source.lower(): source for source in SOURCES}
# Statuses that record a subscription (and need its date) and those that record an unsubscription.
SUBSCRIBING = frozenset({"Subscribed", "Opt-In Pending"})
UNSUBSCRIBING = frozenset({"Unsubscribed", "Opt-Out Pending"})
MAX_SOURCE_REF = 64
MAX_CUSTOM_VALUE = 10_000
MAX_CUSTOM_FIELDS = 200


def normalise_source(raw: str) -> str:
    """Any source that is not one of the known ones becomes Unknown; none given is API."""
    if not raw.strip():
        return "API"
    return _SOURCE_BY_KEY.get(raw.strip().lower(), "Unknown")


def check_custom_fields(raw: Mapping[str, str], violations: Violations) -> dict[str, str]:
    """Custom field values by normalised key ("CustomField12" and "12" are the same field)."""
    checked: dict[str, str] = {}
    if len(raw) > MAX_CUSTOM_FIELDS:
        violations.add("custom_fields", CUSTOM_FIELD_INVALID, f"at most {MAX_CUSTOM_FIELDS} custom fields")
        return checked
    for raw_key, value in raw.items():
        key = segment_rules.custom_field_key(raw_key)
        if key is None:
            violations.add(
                f"custom_fields.{raw_key[:64]}",
                CUSTOM_FIELD_INVALID,
                f"{raw_key[:64]!r} is not a custom field id (digits, or letters, digits, '_', '.', '-')",
            )
        elif "\x00" in value or len(value) > MAX_CUSTOM_VALUE:
            violations.add(
                f"custom_fields.{key}",
                CUSTOM_FIELD_INVALID,
                f"custom field {key} must be text of at most {MAX_CUSTOM_VALUE} characters",
            )
        else:
            checked[key] = value
    return checked


def validate_new_subscriber(
    *,
    list_id: int,
    email_address: str,
    first_name: str,
    last_name: str,
    custom_fields: Mapping[str, str],
    status: str | None,
    bounce_type: str | None,
    subscription_date: datetime | None,
    subscription_ip: str,
    unsubscription_date: datetime | None,
    unsubscription_ip: str,
    optin_date: datetime | None,
    source: str,
    source_ref: str,
    violations: Violations,
) -> NewSubscriber:
    """Checks a subscriber on its own (the list's rules come later); adds every problem to `violations`.

    `status` / `bounce_type` None means a value outside the enums; "" means not given (the defaults).
    """
    if list_id <= 0:
        violations.add("subscriber.list_id", LIST_ID_REQUIRED, "subscriber.list_id is required")
    address, key = check_email(email_address, violations, "subscriber.email_address")
    if status is None:
        violations.add("subscriber.status", STATUS_INVALID, "subscriber.status is not a subscriber status")
    if bounce_type is None:
        violations.add(
            "subscriber.bounce_type", BOUNCE_TYPE_INVALID, "subscriber.bounce_type is not a bounce type"
        )
    for where, ip, reason in (
        ("subscriber.subscription_ip", subscription_ip, SUBSCRIPTION_IP_INVALID),
        ("subscriber.unsubscription_ip", unsubscription_ip, UNSUBSCRIPTION_IP_INVALID),
    ):
        if ip.strip() and not is_ip_address(ip):
            violations.add(where, reason, f"{where} is not an IPv4 or IPv6 address")
    fields = check_custom_fields(custom_fields, violations)
    check_text(first_name, "subscriber.first_name", MAX_NAME, violations)
    check_text(last_name, "subscriber.last_name", MAX_NAME, violations)
    return NewSubscriber(
        list_id=list_id,
        email_address=address,
        email_key=key,
        first_name=first_name.strip()[:MAX_NAME],
        last_name=last_name.strip()[:MAX_NAME],
        custom_fields=fields,
        status=status or "Subscribed",
        bounce_type=bounce_type or "Not Bounced",
        subscription_date=subscription_date,
        subscription_ip=subscription_ip.strip(),
        unsubscription_date=unsubscription_date,
        unsubscription_ip=unsubscription_ip.strip(),
        optin_date=optin_date,
        source=normalise_source(source),
        # The legacy API truncates SourceRef to 64 characters rather than refusing it.
        source_ref=source_ref.replace("\x00", "")[:MAX_SOURCE_REF],
    )


def check_list_rules(subscriber: NewSubscriber, mailing_list: MailingList, violations: Violations) -> None:
    """What the list demands: a Subscribed subscriber of a double opt-in list must have confirmed (opt_in_time)."""
    if (
        mailing_list.opt_in_mode == "Double"
        and subscriber.status == "Subscribed"
        and subscriber.optin_date is None
    ):
        violations.add(
            "subscriber.opt_in_time",
            OPT_IN_TIME_REQUIRED,
            "a Subscribed subscriber of a double opt-in list needs opt_in_time (when they confirmed)",
        )


def duplicate_verdict(existing_status: str, update_if_duplicate: bool, update_if_unsubscribed: bool) -> None:
    """Whether an address already on the list may be updated; the error says why not."""
    if existing_status == "Unsubscribed" and update_if_unsubscribed:
        return
    if not update_if_duplicate:
        raise subscriber_exists()
    if existing_status == "Unsubscribed":
        raise DomainError(
            ErrorKind.PRECONDITION,
            SUBSCRIBER_UNSUBSCRIBED,
            "the address unsubscribed from the list earlier; set update_if_unsubscribed to subscribe it again",
        )


def subscriber_exists() -> DomainError:
    return conflict(SUBSCRIBER_ALREADY_EXISTS, "the address is already on the list", "subscriber.email_address")


def subscriber_not_found(where: str = "subscriber_id") -> DomainError:
    return not_found(SUBSCRIBER_NOT_FOUND, "subscriber not found on the list", where)


ORDER_COLUMNS = {
    "": "email_key",
    "email_address": "email_key",
    "emailaddress": "email_key",
    "subscriber_id": "subscriber_id",
    "subscriberid": "subscriber_id",
    "subscription_time": "subscription_date",
    "subscriptiondate": "subscription_date",
    "first_name": "first_name",
    "firstname": "first_name",
    "last_name": "last_name",
    "lastname": "last_name",
}
SEARCH_COLUMNS = {
    "email_address": "email_address",
    "emailaddress": "email_address",
    "subscriber_id": "subscriber_id",
    "subscriberid": "subscriber_id",
    "subscription_time": "subscription_date",
    "subscriptiondate": "subscription_date",
    "subscription_ip": "subscription_ip",
    "subscriptionip": "subscription_ip",
    "opt_in_time": "optin_date",
    "optindate": "optin_date",
}


def order_column(raw: str) -> str:
    """The column subscribers are ordered by; anything unknown falls back to the email address."""
    return ORDER_COLUMNS.get(raw.strip().lower(), "email_key")


def search_column(raw: str) -> str:
    """The column searched ("custom:<id>" for a custom field id); SEARCH_FIELD_INVALID for anything else."""
    text = raw.strip()
    column = SEARCH_COLUMNS.get(text.lower())
    if column is not None:
        return column
    if text.isdigit() and len(text) <= 18:
        return segment_rules.CUSTOM_PREFIX + str(int(text))
    key = segment_rules.custom_field_key(text) if text.lower().startswith("customfield") else None
    if key is not None:
        return segment_rules.CUSTOM_PREFIX + key
    raise DomainError(
        ErrorKind.INVALID,
        SEARCH_FIELD_INVALID,
        f"search_field {raw!r} must be email_address, subscriber_id, subscription_time, subscription_ip, "
        "opt_in_time or a custom field id",
        [FieldViolation("search_field", SEARCH_FIELD_INVALID, "search_field is not searchable")],
    )


@dataclass(frozen=True)
class Selection:
    """Which subscribers of a list a bulk operation touches: by ids, one address, or rules."""

    subscriber_ids: tuple[int, ...] = ()
    email_key: str = ""
    criteria: segment_rules.Criteria | None = None
    operator: str = segment_rules.AND


def rules_selection(raw_rules: list[Any], raw_operator: str, where: str = "rules") -> Selection:
    """A bulk selection by RulesJSON: it must hold at least one typed rule (5.9.3), never the whole list."""
    operator = raw_operator.strip().lower() or segment_rules.AND
    if operator not in (segment_rules.AND, segment_rules.OR):
        raise segment_rules.rules_error(
            f"rules_operator must be and or or, not {raw_operator!r}", "rules_operator"
        )
    return Selection(
        criteria=segment_rules.parse_criteria(raw_rules, where=where, require_rule=True), operator=operator
    )


def unsubscribe_selection(
    subscriber_id: int, email_address: str, raw_rules: list[Any] | None, raw_operator: str, ip_address: str
) -> Selection:
    """Checks an unsubscribe request's own fields; one selector: address, then id, then rules."""
    violations = Violations()
    if not ip_address.strip():
        violations.add("ip_address", IP_ADDRESS_REQUIRED, "ip_address is required")
    elif not is_ip_address(ip_address):
        violations.add("ip_address", IP_ADDRESS_INVALID, "ip_address is not an IPv4 or IPv6 address")
    selection = Selection()
    if email_address.strip():
        try:
            selection = Selection(email_key=normalise_email(email_address)[1])
        except ValueError as exc:
            violations.add("email_address", EMAIL_ADDRESS_INVALID, f"email_address is not valid: {exc}")
    elif subscriber_id > 0:
        selection = Selection(subscriber_ids=(subscriber_id,))
    elif raw_rules is not None:
        try:
            selection = rules_selection(raw_rules, raw_operator)
        except DomainError as exc:
            violations.items.extend(exc.violations)
    else:
        violations.add(
            "subscriber_id",
            SUBSCRIBER_SELECTOR_REQUIRED,
            "one of email_address, subscriber_id or rules is required",
        )
    violations.raise_if_any()
    return selection
