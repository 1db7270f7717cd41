"""Audience rules, pure and synchronous: lists, subscribers, segments, suppression and targeting checks, and the service's errors."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

from services.audience import rules as segment_rules
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations, conflict, not_found

MAX_NAME = 255
MAX_TEXT = 10_000
MAX_SOURCE_REF = 64
MAX_CUSTOM_VALUE = 10_000
MAX_CUSTOM_FIELDS = 200
MAX_EMAIL_LENGTH = 254
DEFAULT_CHUNK = 5_000
MAX_CHUNK = 50_000
MAX_SUPPRESSIONS_PER_CALL = 100_000

# Reasons the translator maps to legacy codes; they are part of the service's contract.
LIST_ID_REQUIRED = "LIST_ID_REQUIRED"
LIST_IDS_REQUIRED = "LIST_IDS_REQUIRED"
LIST_NOT_FOUND = "LIST_NOT_FOUND"
LIST_NAME_REQUIRED = "LIST_NAME_REQUIRED"
LIST_NAME_TOO_LONG = "LIST_NAME_TOO_LONG"
OPT_IN_MODE_INVALID = "OPT_IN_MODE_INVALID"
TEXT_INVALID = "TEXT_INVALID"
CONFIRMATION_EMAIL_FIELD_REQUIRED = "CONFIRMATION_EMAIL_FIELD_REQUIRED"
CONFIRMATION_EMAIL_CONTENT_TYPE_INVALID = "CONFIRMATION_EMAIL_CONTENT_TYPE_INVALID"
CONFIRMATION_EMAIL_HTML_REQUIRED = "CONFIRMATION_EMAIL_HTML_REQUIRED"
CONFIRMATION_EMAIL_PLAIN_REQUIRED = "CONFIRMATION_EMAIL_PLAIN_REQUIRED"
CONFIRMATION_EMAIL_MODE_INVALID = "CONFIRMATION_EMAIL_MODE_INVALID"
CONFIRMATION_EMAIL_TEMPLATE_REQUIRED = "CONFIRMATION_EMAIL_TEMPLATE_REQUIRED"
CONFIRMATION_EMAIL_FAILED = "CONFIRMATION_EMAIL_FAILED"
EMAIL_ADDRESS_REQUIRED = "EMAIL_ADDRESS_REQUIRED"
EMAIL_ADDRESS_INVALID = "EMAIL_ADDRESS_INVALID"
STATUS_INVALID = "STATUS_INVALID"
BOUNCE_TYPE_INVALID = "BOUNCE_TYPE_INVALID"
SUBSCRIPTION_IP_INVALID = "SUBSCRIPTION_IP_INVALID"
UNSUBSCRIPTION_IP_INVALID = "UNSUBSCRIPTION_IP_INVALID"
OPT_IN_TIME_REQUIRED = "OPT_IN_TIME_REQUIRED"
CUSTOM_FIELD_INVALID = "CUSTOM_FIELD_INVALID"
SUBSCRIBER_ALREADY_EXISTS = "SUBSCRIBER_ALREADY_EXISTS"
SUBSCRIBER_UNSUBSCRIBED = "SUBSCRIBER_UNSUBSCRIBED"
SUBSCRIBER_NOT_FOUND = "SUBSCRIBER_NOT_FOUND"
SUBSCRIBER_SELECTOR_REQUIRED = "SUBSCRIBER_SELECTOR_REQUIRED"
SUBSCRIBER_ALREADY_UNSUBSCRIBED = "SUBSCRIBER_ALREADY_UNSUBSCRIBED"
SUBSCRIBER_IDS_INVALID = "SUBSCRIBER_IDS_INVALID"
IP_ADDRESS_REQUIRED = "IP_ADDRESS_REQUIRED"
IP_ADDRESS_INVALID = "IP_ADDRESS_INVALID"
EMAIL_NOT_FOUND = "EMAIL_NOT_FOUND"
SEARCH_FIELD_INVALID = "SEARCH_FIELD_INVALID"
PAGE_INVALID = "PAGE_INVALID"
SEGMENT_ID_INVALID = "SEGMENT_ID_INVALID"
SEGMENT_IDS_REQUIRED = "SEGMENT_IDS_REQUIRED"
SEGMENT_NOT_FOUND = "SEGMENT_NOT_FOUND"
SEGMENT_NAME_REQUIRED = "SEGMENT_NAME_REQUIRED"
SEGMENT_NAME_TOO_LONG = "SEGMENT_NAME_TOO_LONG"
SEGMENT_OPERATOR_REQUIRED = "SEGMENT_OPERATOR_REQUIRED"
SEGMENT_OPERATOR_INVALID = "SEGMENT_OPERATOR_INVALID"
RANDOMNESS_AUDIENCE_SIZE_INVALID = "RANDOMNESS_AUDIENCE_SIZE_INVALID"
RULES_INVALID = segment_rules.RULES_INVALID
RULE_TYPE_UNSUPPORTED = segment_rules.RULE_TYPE_UNSUPPORTED
RULES_BUNDLE_INVALID = "RULES_BUNDLE_INVALID"
TARGETING_INVALID = "TARGETING_INVALID"
CHUNK_SIZE_INVALID = "CHUNK_SIZE_INVALID"
ADMIN_CANNOT_OWN = "ADMIN_CANNOT_OWN_AUDIENCE"

STATUSES = ("Subscribed", "Unsubscribed", "Opt-In Pending", "Opt-Out Pending")
BOUNCE_TYPES = ("Not Bounced", "Soft", "Hard")
OPT_IN_MODES = ("Single", "Double")
SOURCES = ("CSVImport", "API", "Webhook", "Manual", "Other", "Unknown")
_SOURCE_BY_KEY = {source.lower(): source for source in SOURCES}
# Statuses that record a subscription (and need its date) and those that record an unsubscription.
SUBSCRIBING = frozenset({"Subscribed", "Opt-In Pending"})
UNSUBSCRIBING = frozenset({"Unsubscribed", "Opt-Out Pending"})


# --- records ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailingList:
    list_id: int
    owner_user_id: int
    name: str
    description: str
    opt_in_mode: str
    sender_name: str
    sender_email_address: str
    sender_company: str
    sender_address: str
    confirmation_email_id: int
    created_at: datetime
    archived_at: datetime | None = None
    subscriber_count: int = 0
    active_subscriber_count: int = 0
    segment_count: int = 0
    last_activity_at: datetime | None = None


@dataclass(frozen=True)
class NewList:
    name: str
    description: str = ""
    opt_in_mode: str = "Single"
    sender_name: str = ""
    sender_email_address: str = ""
    sender_company: str = ""
    sender_address: str = ""


@dataclass(frozen=True)
class SubscriberRecord:
    subscriber_id: int
    list_id: int
    owner_user_id: int
    email_address: str
    first_name: str
    last_name: str
    custom_fields: Mapping[str, str]
    status: str
    bounce_type: str
    subscription_date: datetime | None
    subscription_ip: str
    unsubscription_date: datetime | None
    unsubscription_ip: str
    optin_date: datetime | None
    source: str
    source_ref: str
    suppressed: bool = False
    segments: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class NewSubscriber:
    """A checked subscriber to add to a list."""

    list_id: int
    email_address: str
    email_key: str
    first_name: str = ""
    last_name: str = ""
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    status: str = "Subscribed"
    bounce_type: str = "Not Bounced"
    subscription_date: datetime | None = None
    subscription_ip: str = ""
    unsubscription_date: datetime | None = None
    unsubscription_ip: str = ""
    optin_date: datetime | None = None
    source: str = "API"
    source_ref: str = ""


@dataclass(frozen=True)
class SegmentRecord:
    segment_id: int
    list_id: int
    owner_user_id: int
    name: str
    operator: str
    rules: list[Any]
    randomness: bool
    randomness_audience_size: int
    created_at: datetime
    subscriber_count: int = 0

    def definition(self) -> segment_rules.SegmentDefinition:
        """Stored rules were checked when the segment was made; parsing them again cannot fail then."""
        return segment_rules.SegmentDefinition(
            segment_id=self.segment_id,
            list_id=self.list_id,
            operator=self.operator,
            criteria=segment_rules.parse_criteria(self.rules),
            randomness=self.randomness,
            audience_size=self.randomness_audience_size,
        )


@dataclass(frozen=True)
class NewSegment:
    list_id: int
    name: str
    operator: str
    rules: list[Any]
    criteria: segment_rules.Criteria
    randomness: bool
    randomness_audience_size: int


# --- owners -----------------------------------------------------------------------------------------------


def owner_scope(principal: Principal) -> int | None:
    """Whose data the caller may see and change: their own, or (None) everyone's for an admin."""
    return None if principal.is_admin else principal.user_id


def owner_of_new(principal: Principal, what: str) -> int:
    """Lists and suppressions belong to exactly one user, so an admin (who is no user) cannot own one."""
    if principal.is_admin:
        raise DomainError(
            ErrorKind.PERMISSION, ADMIN_CANNOT_OWN, f"an admin cannot own {what}; use the user's credentials"
        )
    return principal.user_id


# --- addresses --------------------------------------------------------------------------------------------


def normalise_email(raw: str) -> tuple[str, str]:
    """The address as stored (email-validator's normal form, domain lower-cased) and its key; ValueError if invalid."""
    text = raw.strip()
    if not text or len(text) > MAX_EMAIL_LENGTH:
        raise ValueError("an email address has 1 to 254 characters")
    try:
        address = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    local, _, domain = address.rpartition("@")
    address = f"{local}@{domain.lower()}"
    return address, email_key(address)


def email_key(address: str) -> str:
    """What addresses are compared by: the whole address lower-cased."""
    return address.strip().lower()


def check_email(raw: str, violations: Violations, where: str = "email_address") -> tuple[str, str]:
    if not raw.strip():
        violations.add(where, EMAIL_ADDRESS_REQUIRED, f"{where} is required")
        return "", ""
    try:
        return normalise_email(raw)
    except ValueError as exc:
        violations.add(where, EMAIL_ADDRESS_INVALID, f"{where} is not a valid email address: {exc}")
        return "", ""


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def _check_text(value: str, where: str, limit: int, violations: Violations) -> str:
    if "\x00" in value:
        violations.add(where, TEXT_INVALID, f"{where} must not contain NUL characters")
    elif len(value) > limit:
        violations.add(where, TEXT_INVALID, f"{where} is longer than {limit} characters")
    return value


# --- lists ------------------------------------------------------------------------------------------------


def validate_new_list(new: NewList) -> NewList:
    violations = Violations()
    name = new.name.strip()
    if not name:
        violations.add("name", LIST_NAME_REQUIRED, "name is required")
    elif len(name) > MAX_NAME:
        violations.add("name", LIST_NAME_TOO_LONG, f"name is longer than {MAX_NAME} characters")
    elif "\x00" in name:
        violations.add("name", TEXT_INVALID, "name must not contain NUL characters")
    if new.opt_in_mode not in OPT_IN_MODES:
        violations.add("opt_in_mode", OPT_IN_MODE_INVALID, "opt_in_mode must be SINGLE or DOUBLE")
    for where, value in (
        ("description", new.description),
        ("sender_name", new.sender_name),
        ("sender_email_address", new.sender_email_address),
        ("sender_company", new.sender_company),
        ("sender_address", new.sender_address),
    ):
        _check_text(value, where, MAX_TEXT if where in ("description", "sender_address") else MAX_NAME, violations)
    violations.raise_if_any()
    return NewList(
        name=name,
        description=new.description,
        opt_in_mode=new.opt_in_mode,
        sender_name=new.sender_name.strip(),
        sender_email_address=new.sender_email_address.strip(),
        sender_company=new.sender_company.strip(),
        sender_address=new.sender_address,
    )


@dataclass(frozen=True)
class ConfirmationEmail:
    """The legacy ConfirmationEmail object of list.create, as far as its checks need it."""

    subject: str
    from_name: str
    from_email: str
    content_type: str  # "HTML", "Plain", "Both", "" (not given) or "?" (not a content type)
    html_content: str
    plain_content: str
    mode: str  # an EmailMode name, "" (not given) or "?" (not a mode)
    template_id: int


def check_confirmation_email(email: ConfirmationEmail, violations: Violations) -> None:
    """The bundled confirmation email's own checks (legacy codes 21 to 26), every problem at once."""
    prefix = "confirmation_email."
    for name in ("subject", "from_name", "from_email"):
        if not getattr(email, name).strip():
            violations.add(prefix + name, CONFIRMATION_EMAIL_FIELD_REQUIRED, f"{prefix}{name} is required")
    if not email.content_type:
        violations.add(
            prefix + "content_type", CONFIRMATION_EMAIL_FIELD_REQUIRED, f"{prefix}content_type is required"
        )
    elif email.content_type not in ("HTML", "Plain", "Both"):
        violations.add(
            prefix + "content_type",
            CONFIRMATION_EMAIL_CONTENT_TYPE_INVALID,
            f"{prefix}content_type must be HTML, Plain or Both",
        )
    if email.content_type in ("HTML", "Both") and not email.html_content.strip():
        violations.add(
            prefix + "html_content",
            CONFIRMATION_EMAIL_HTML_REQUIRED,
            f"content type {email.content_type} needs {prefix}html_content",
        )
    if email.content_type in ("Plain", "Both") and not email.plain_content.strip():
        violations.add(
            prefix + "plain_content",
            CONFIRMATION_EMAIL_PLAIN_REQUIRED,
            f"content type {email.content_type} needs {prefix}plain_content",
        )
    if email.mode == "?":
        violations.add(prefix + "mode", CONFIRMATION_EMAIL_MODE_INVALID, f"{prefix}mode is not an email mode")
    elif email.mode == "Template" and email.template_id <= 0:
        violations.add(
            prefix + "template_id",
            CONFIRMATION_EMAIL_TEMPLATE_REQUIRED,
            f"Template mode needs {prefix}template_id",
        )


def confirmation_email_failed(detail: str) -> DomainError:
    return DomainError(
        ErrorKind.PRECONDITION,
        CONFIRMATION_EMAIL_FAILED,
        f"the confirmation email could not be created, so the list was not created either: {detail}",
    )


def default_confirmation_email_name(list_id: int) -> str:
    return f"Confirmation email: {list_id}"


def validate_list_id(list_id: int, where: str = "list_id") -> None:
    if list_id <= 0:
        raise DomainError(
            ErrorKind.INVALID,
            LIST_ID_REQUIRED,
            f"{where} is required",
            [FieldViolation(where, LIST_ID_REQUIRED, f"{where} is required")],
        )


def validate_ids(ids: Sequence[int], where: str, reason: str) -> list[int]:
    """The distinct ids of a delete; ids that cannot exist are simply never found."""
    if not ids:
        raise DomainError(
            ErrorKind.INVALID,
            reason,
            f"{where} is required",
            [FieldViolation(where, reason, f"{where} is required")],
        )
    return unique_ids(i for i in ids if i > 0)


def unique_ids(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def list_not_found(list_id: int, where: str = "list_id") -> DomainError:
    return not_found(LIST_NOT_FOUND, f"list {list_id} not found", where, list_id=str(list_id))


def segment_not_found(segment_id: int, where: str = "segment_id") -> DomainError:
    return not_found(SEGMENT_NOT_FOUND, f"segment {segment_id} not found", where, segment_id=str(segment_id))


def check_page(page_size: int, skip: int) -> None:
    violations = Violations()
    if page_size < 0:
        violations.add("page_size", PAGE_INVALID, "page_size must not be negative")
    if skip < 0:
        violations.add("skip", PAGE_INVALID, "skip must not be negative")
    violations.raise_if_any()


# --- subscribers ------------------------------------------------------------------------------------------


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
    _check_text(first_name, "subscriber.first_name", MAX_NAME, violations)
    _check_text(last_name, "subscriber.last_name", MAX_NAME, violations)
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


# --- listing subscribers ----------------------------------------------------------------------------------

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


# --- unsubscribe and delete -------------------------------------------------------------------------------


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


# --- segments ---------------------------------------------------------------------------------------------


def validate_new_segment(
    *, list_id: int, name: str, operator: str, raw_rules: list[Any], randomness: bool, audience_size: int
) -> NewSegment:
    violations = Violations()
    if list_id <= 0:
        violations.add("segment.list_id", LIST_ID_REQUIRED, "segment.list_id is required")
    clean_name = name.strip()
    if not clean_name:
        violations.add("segment.name", SEGMENT_NAME_REQUIRED, "segment.name is required")
    elif len(clean_name) > MAX_NAME or "\x00" in clean_name:
        violations.add("segment.name", SEGMENT_NAME_TOO_LONG, f"segment.name has at most {MAX_NAME} characters")
    clean_operator = operator.strip().lower()
    if not clean_operator:
        violations.add("segment.operator", SEGMENT_OPERATOR_REQUIRED, "segment.operator is required")
    elif clean_operator not in (segment_rules.AND, segment_rules.OR):
        violations.add("segment.operator", SEGMENT_OPERATOR_INVALID, "segment.operator must be and or or")
    if audience_size < 0:
        violations.add(
            "segment.randomness_audience_size",
            RANDOMNESS_AUDIENCE_SIZE_INVALID,
            "segment.randomness_audience_size must not be negative",
        )
    criteria = segment_rules.Criteria()
    try:
        criteria = segment_rules.parse_criteria(raw_rules, where="segment.rules")
    except DomainError as exc:
        violations.items.extend(exc.violations)
    violations.raise_if_any()
    return NewSegment(
        list_id=list_id,
        name=clean_name,
        operator=clean_operator,
        rules=raw_rules,
        criteria=criteria,
        randomness=randomness,
        randomness_audience_size=audience_size,
    )


def check_segment_references(
    criteria: segment_rules.Criteria, segments_of_list: Mapping[int, object], where: str = "segment.rules"
) -> None:
    """A new segment may refer only to existing segments of its own list."""
    missing = sorted(criteria.segment_ids() - set(segments_of_list))
    if missing:
        raise segment_rules.rules_error(
            f"{where} refers to segments that are not segments of the list: {', '.join(map(str, missing))}", where
        )


# --- suppressions -----------------------------------------------------------------------------------------


def suppression_keys(addresses: Sequence[str]) -> list[str]:
    """The keys of the addresses to suppress; every invalid address is named."""
    violations = Violations()
    if not addresses:
        violations.add("email_addresses", EMAIL_ADDRESS_REQUIRED, "email_addresses is required")
    if len(addresses) > MAX_SUPPRESSIONS_PER_CALL:
        violations.add(
            "email_addresses", EMAIL_ADDRESS_INVALID, f"at most {MAX_SUPPRESSIONS_PER_CALL} addresses per call"
        )
    keys: list[str] = []
    for i, address in enumerate(addresses[:MAX_SUPPRESSIONS_PER_CALL]):
        try:
            keys.append(normalise_email(address)[1])
        except ValueError as exc:
            violations.add(f"email_addresses[{i}]", EMAIL_ADDRESS_INVALID, f"{address[:100]!r}: {exc}")
    violations.raise_if_any()
    return unique_ids_str(keys)


def unique_ids_str(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


# --- targeting --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A list, or one of its segments (segment_id 0 = the whole list)."""

    list_id: int
    segment_id: int = 0


@dataclass(frozen=True)
class Criterion:
    """One criterion of a rules bundle: subscribers of the list matching the rules."""

    list_id: int
    operator: str
    criteria: segment_rules.Criteria


@dataclass(frozen=True)
class Bundle:
    operator: str
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True)
class Targeting:
    """Who receives: included sources (narrowed by the bundle) or the bundle alone, minus excluded ones."""

    included: tuple[Source, ...] = ()
    excluded: tuple[Source, ...] = ()
    bundle: Bundle | None = None

    def list_ids(self) -> list[int]:
        ids = [s.list_id for s in self.included] + [s.list_id for s in self.excluded]
        if self.bundle is not None:
            ids += [c.list_id for c in self.bundle.criteria]
        return unique_ids(ids)


def _bundle_error(message: str, where: str = "rules_bundle") -> DomainError:
    return DomainError(
        ErrorKind.INVALID, RULES_BUNDLE_INVALID, message, [FieldViolation(where, RULES_BUNDLE_INVALID, message)]
    )


def _whole_number(value: object) -> int | None:
    """A Struct number (always a double) or a digit string as an int, when it is a whole positive number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0 < value < 2**53:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 18:
        number = int(value)
        return number if number > 0 else None
    return None


def parse_bundle(raw: Mapping[str, Any]) -> Bundle | None:
    """{"operator": "and"|"or", "criteria": [{"list_id", "operator", "rules"}]}; an empty object is no bundle.

    Keys are read case-insensitively, as the legacy dispatcher lower-cased them. A malformed bundle
    is RULES_BUNDLE_INVALID (never an empty audience); an unsupported rule type keeps its own reason.
    """
    if not raw:
        return None
    bundle = {str(k).lower(): v for k, v in raw.items()}
    unknown = set(bundle) - {"operator", "criteria"}
    if unknown:
        raise _bundle_error(f"rules_bundle has unknown keys: {', '.join(sorted(unknown))}")
    operator = bundle.get("operator", segment_rules.AND)
    if not isinstance(operator, str) or operator.strip().lower() not in (segment_rules.AND, segment_rules.OR):
        raise _bundle_error("rules_bundle.operator must be and or or", "rules_bundle.operator")
    raw_criteria = bundle.get("criteria")
    if not isinstance(raw_criteria, list) or not raw_criteria:
        raise _bundle_error("rules_bundle.criteria must be a non-empty array", "rules_bundle.criteria")
    criteria: list[Criterion] = []
    for i, raw_criterion in enumerate(raw_criteria):
        where = f"rules_bundle.criteria[{i}]"
        if not isinstance(raw_criterion, Mapping):
            raise _bundle_error(f"{where} must be an object with list_id, operator and rules", where)
        criterion = {str(k).lower(): v for k, v in raw_criterion.items()}
        list_id = _whole_number(criterion.get("list_id", criterion.get("listid")))
        if list_id is None:
            raise _bundle_error(f"{where}.list_id must be a list id", f"{where}.list_id")
        criterion_operator = criterion.get("operator", segment_rules.AND)
        if not isinstance(criterion_operator, str) or criterion_operator.strip().lower() not in (
            segment_rules.AND,
            segment_rules.OR,
        ):
            raise _bundle_error(f"{where}.operator must be and or or", f"{where}.operator")
        try:
            parsed = segment_rules.parse_criteria(criterion.get("rules", []), where=f"{where}.rules")
        except DomainError as exc:
            if exc.reason == RULE_TYPE_UNSUPPORTED:
                raise
            raise _bundle_error(exc.message, f"{where}.rules") from exc
        criteria.append(Criterion(list_id, criterion_operator.strip().lower(), parsed))
    return Bundle(operator.strip().lower(), tuple(criteria))


def validate_targeting(
    included: Sequence[tuple[int, int]], excluded: Sequence[tuple[int, int]], bundle: Mapping[str, Any]
) -> Targeting:
    violations = Violations()
    for where, sources in (("included", included), ("excluded", excluded)):
        for i, (list_id, segment_id) in enumerate(sources):
            if list_id <= 0 or segment_id < 0:
                violations.add(
                    f"{where}[{i}]",
                    TARGETING_INVALID,
                    f"{where}[{i}] needs a list id and a segment id (0 = whole list)",
                )
    violations.raise_if_any()
    return Targeting(
        included=tuple(dict.fromkeys(Source(list_id, segment_id) for list_id, segment_id in included)),
        excluded=tuple(dict.fromkeys(Source(list_id, segment_id) for list_id, segment_id in excluded)),
        bundle=parse_bundle(bundle),
    )


def unowned_sources(
    targeting: Targeting, owned_list_ids: Iterable[int], segment_lists: Mapping[int, int]
) -> list[FieldViolation]:
    """Every list a spec names that is not among the owner's, and every segment that is not one of its list's
    (`segment_lists`: segment id -> list id, for the owner's lists), including the segments a criterion's
    segments rules name; one violation each, in the order the spec names them."""
    owned = set(owned_list_ids)
    found: list[FieldViolation] = []

    def check(where: str, list_id: int, segment_ids: Iterable[int]) -> None:
        if list_id not in owned:
            found.append(FieldViolation(f"{where}.list_id", LIST_NOT_FOUND, f"list {list_id} not found"))
            return
        for segment_id in segment_ids:
            if segment_lists.get(segment_id) != list_id:
                found.append(
                    FieldViolation(f"{where}.segment_id", SEGMENT_NOT_FOUND, f"segment {segment_id} not found")
                )

    for name, sources in (("included", targeting.included), ("excluded", targeting.excluded)):
        for i, source in enumerate(sources):
            check(f"{name}[{i}]", source.list_id, [source.segment_id] if source.segment_id else [])
    for i, criterion in enumerate(targeting.bundle.criteria if targeting.bundle is not None else ()):
        check(f"rules_bundle.criteria[{i}]", criterion.list_id, sorted(criterion.criteria.segment_ids()))
    return found


def sources_not_found(violations: Sequence[FieldViolation]) -> DomainError:
    """NOT_FOUND naming every list and segment of a spec that is not the owner's."""
    first = violations[0]
    return DomainError(ErrorKind.NOT_FOUND, first.reason, first.description, list(violations))


def chunk_size(requested: int) -> int:
    if requested < 0 or requested > MAX_CHUNK:
        raise DomainError(
            ErrorKind.INVALID,
            CHUNK_SIZE_INVALID,
            f"chunk_size must be 0 (default {DEFAULT_CHUNK}) to {MAX_CHUNK}",
            [FieldViolation("chunk_size", CHUNK_SIZE_INVALID, "chunk_size is out of range")],
        )
    return requested or DEFAULT_CHUNK
