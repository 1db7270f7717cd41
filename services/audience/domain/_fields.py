"""Rules of custom field definitions: the types, validation methods and visibilities, and a field's settings.

A value a subscriber may hold is checked in _field_values; this module says what a field is.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import re2

from services.audience.domain._checks import normalise_email
from services.audience.domain._reasons import (
    CUSTOM_FIELD_NAME_REQUIRED,
    CUSTOM_FIELD_NOT_FOUND,
    CUSTOM_FIELD_OPTIONS_INVALID,
    CUSTOM_FIELD_TYPE_INVALID,
    DEFAULT_VALUE_INVALID,
    MERGE_TAG_ALIAS_INVALID,
    MERGE_TAG_ALIAS_RESERVED,
    MERGE_TAG_ALIAS_TAKEN,
    TEXT_INVALID,
    VALIDATION_METHOD_INVALID,
    VALIDATION_RULE_INVALID,
    VALIDATION_RULE_REQUIRED,
    VISIBILITY_INVALID,
    YEARS_INVALID,
)
from services.common.errors import DomainError, Violations, conflict, not_found

# The legacy names, in the order of the proto enums (value n is names[n - 1]).
FIELD_TYPES = (
    "Single line",
    "Paragraph text",
    "Multiple choice",
    "Drop down",
    "Checkboxes",
    "Hidden field",
    "Date field",
    "Time field",
)
CHOICE_TYPES = frozenset({"Multiple choice", "Drop down", "Checkboxes"})
# Types whose value is one line: a line break in one is not a value the field can hold.
ONE_LINE_TYPES = frozenset({"Single line", "Hidden field"})
VALIDATION_METHODS = (
    "Disabled",
    "Numbers",
    "Letters",
    "Numbers and letters",
    "Email address",
    "URL",
    "Date",
    "Time",
    "Custom",
)
VISIBILITIES = ("Public", "User Only", "Hidden")
# Subscriber fields personalization already names (supporting-commands §2, plus Herald's first and last
# name): an alias that shadowed one would change what existing content renders.
RESERVED_ALIASES = frozenset(
    name.casefold()
    for name in (
        "SubscriberID",
        "EmailAddress",
        "SubscriptionDate",
        "SubscriptionIP",
        "OptInDate",
        "SubscriptionStatus",
        "BounceType",
        "Status",
        "HashedSubscriberID",
        "FirstName",
        "LastName",
        "UnsubscriptionDate",
        "UnsubscriptionIP",
    )
)
MAX_FIELD_TEXT = 250
MAX_OPTIONS = 1_000
MAX_RULE = 1_000
CHECKBOX_SEPARATOR = ","
_ALIAS_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ID_TAG_RE = re.compile(r"customfield[0-9]+", re.IGNORECASE)
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME_RE = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")
_DELIMITED_RE = re.compile(r"/(.*)/([a-z]*)", re.DOTALL)


@dataclass(frozen=True)
class FieldOption:
    label: str
    value: str
    selected: bool = False


@dataclass(frozen=True)
class FieldSpec:
    """A custom field's settings. `field_type`, `validation_method` and `visibility` are legacy names;
    an unknown one is "?" (validate_field_spec names it)."""

    name: str
    field_type: str = "Single line"
    default_value: str = ""
    options: tuple[FieldOption, ...] = ()
    required: bool = False
    unique: bool = False
    validation_method: str = "Disabled"
    validation_rule: str = ""
    merge_tag_alias: str = ""
    visibility: str = "User Only"
    is_global: bool = False
    first_year: int = 0
    last_year: int = 0


@dataclass(frozen=True)
class CustomFieldRecord:
    """A stored definition: list_id None for a global field (every list of its owner)."""

    custom_field_id: int
    owner_user_id: int
    list_id: int | None
    spec: FieldSpec
    created_at: dt.datetime

    @property
    def key(self) -> str:
        """What subscribers' values of the field are stored under."""
        return str(self.custom_field_id)


def custom_field_not_found(custom_field_id: int, where: str = "custom_field_id") -> DomainError:
    return not_found(CUSTOM_FIELD_NOT_FOUND, f"custom field {custom_field_id} not found", where)


def alias_taken(alias: str, where: str = "custom_field.merge_tag_alias") -> DomainError:
    return conflict(
        MERGE_TAG_ALIAS_TAKEN, f"the merge tag alias {alias!r} is another field's of the same list", where
    )


# --- values by type and by validation method (also used for defaults) ------------------------------------


def parse_date(text: str) -> dt.date | None:
    match = _DATE_RE.fullmatch(text)
    if match is None:
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def is_time(text: str) -> bool:
    match = _TIME_RE.fullmatch(text)
    return match is not None and int(match[1]) < 24 and int(match[2]) < 60 and int(match[3] or 0) < 60


def checkbox_values(text: str) -> list[str]:
    """A Checkboxes value's option values, each once, in the order given."""
    return list(dict.fromkeys(item.strip() for item in text.split(CHECKBOX_SEPARATOR) if item.strip()))


def typed_value(spec: FieldSpec, text: str) -> str | None:
    """The value as the field stores it (trimmed; a Checkboxes value's items joined by ", "), or None
    when the field's type cannot hold it. `text` must not be empty after trimming."""
    value = text.strip()
    kind = spec.field_type
    if kind in ONE_LINE_TYPES:
        return None if "\n" in value or "\r" in value else value
    if kind in ("Multiple choice", "Drop down"):
        return value if value in {option.value for option in spec.options} else None
    if kind == "Checkboxes":
        chosen = checkbox_values(value)
        allowed = {option.value for option in spec.options}
        return ", ".join(chosen) if chosen and all(item in allowed for item in chosen) else None
    if kind == "Date field":
        day = parse_date(value)
        if day is None or (spec.first_year and not spec.first_year <= day.year <= spec.last_year):
            return None
        return day.isoformat()
    if kind == "Time field":
        return value if is_time(value) else None
    return value  # Paragraph text


def _is_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in text)


def _is_email(text: str) -> bool:
    try:
        normalise_email(text)
    except ValueError:
        return False
    return True


_METHOD_CHECKS: Mapping[str, Callable[[str], bool]] = {
    "Disabled": lambda text: True,
    "Numbers": lambda text: text.isascii() and text.isdigit(),
    "Letters": lambda text: text.isascii() and text.isalpha(),
    "Numbers and letters": lambda text: text.isascii() and text.isalnum(),
    "Email address": _is_email,
    "URL": _is_url,
    "Date": lambda text: parse_date(text) is not None,
    "Time": is_time,
}


def passes_validation(spec: FieldSpec, value: str) -> bool:
    """Whether a (typed, non-empty) value passes the field's validation method."""
    if spec.validation_method == "Custom":
        return compiled_rule(spec.validation_rule).search(value) is not None
    return _METHOD_CHECKS[spec.validation_method](value)


@lru_cache(maxsize=512)
def compiled_rule(rule: str) -> Any:
    """A Custom validation rule as RE2 compiles it: RE2 runs in linear time, so a rule of the user's cannot
    make a public subscription form hang the service. `/pattern/flags` (i, m, s, u) is read as PHP did;
    anything else is the pattern itself. Raises ValueError when RE2 cannot compile it (backreferences and
    lookarounds are not RE2)."""
    pattern, flags = rule, ""
    delimited = _DELIMITED_RE.fullmatch(rule)
    if delimited is not None:
        pattern, flags = delimited[1], delimited[2]
        if set(flags) - set("imsu"):
            raise ValueError(f"unsupported flags {flags!r} (i, m, s and u are)")
    inline = "".join(sorted(set(flags) - {"u"}))
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(f"(?{inline}){pattern}" if inline else pattern, options)
    except re2.error as exc:
        raise ValueError(str(exc.args[0] if exc.args else exc)) from exc


# --- a field's settings ---------------------------------------------------------------------------------------


def _check_text(value: str, where: str, violations: Violations) -> None:
    if "\x00" in value:
        violations.add(where, TEXT_INVALID, f"{where} must not contain NUL characters")
    elif len(value) > MAX_FIELD_TEXT:
        violations.add(where, TEXT_INVALID, f"{where} is longer than {MAX_FIELD_TEXT} characters")


def _check_alias(alias: str, where: str, violations: Violations) -> None:
    if not alias:
        return
    if not _ALIAS_RE.fullmatch(alias):
        violations.add(
            where, MERGE_TAG_ALIAS_INVALID, f"{where} has letters, digits, '_', '.' and '-' only (1 to 64)"
        )
    elif alias.casefold() in RESERVED_ALIASES or _ID_TAG_RE.fullmatch(alias) or alias.isdigit():
        violations.add(
            where,
            MERGE_TAG_ALIAS_RESERVED,
            f"{where} {alias!r} would shadow a subscriber field or a field id in personalization tags",
        )


def _checked_options(spec: FieldSpec, where: str, violations: Violations) -> tuple[FieldOption, ...]:
    if spec.field_type not in CHOICE_TYPES:
        if spec.options:
            violations.add(where, CUSTOM_FIELD_OPTIONS_INVALID, f"a {spec.field_type} field has no options")
        return ()
    options = tuple(
        FieldOption(option.label.strip() or option.value.strip(), option.value.strip(), option.selected)
        for option in spec.options
    )
    values = [option.value for option in options]
    if not options:
        violations.add(where, CUSTOM_FIELD_OPTIONS_INVALID, f"a {spec.field_type} field needs at least one option")
    elif len(options) > MAX_OPTIONS:
        violations.add(where, CUSTOM_FIELD_OPTIONS_INVALID, f"at most {MAX_OPTIONS} options")
    elif any(not value for value in values) or len(set(values)) != len(values):
        violations.add(where, CUSTOM_FIELD_OPTIONS_INVALID, "every option needs a value of its own")
    elif spec.field_type == "Checkboxes" and any(CHECKBOX_SEPARATOR in value for value in values):
        violations.add(
            where,
            CUSTOM_FIELD_OPTIONS_INVALID,
            "a Checkboxes option value must not contain a comma (the separator)",
        )
    else:
        for option in options:
            _check_text(option.label, f"{where}.label", violations)
            _check_text(option.value, f"{where}.value", violations)
    return options


def validate_field_spec(spec: FieldSpec, violations: Violations, prefix: str = "custom_field.") -> FieldSpec:
    """The settings as stored (trimmed), every problem added to `violations`."""
    found_before = len(violations.items)
    name = spec.name.strip()
    if not name:
        violations.add(f"{prefix}name", CUSTOM_FIELD_NAME_REQUIRED, "a custom field needs a name")
    _check_text(name, f"{prefix}name", violations)
    type_known = spec.field_type in FIELD_TYPES
    if not type_known:
        violations.add(f"{prefix}type", CUSTOM_FIELD_TYPE_INVALID, "type is not a custom field type")
    if spec.validation_method not in VALIDATION_METHODS:
        violations.add(
            f"{prefix}validation_method", VALIDATION_METHOD_INVALID, "validation_method is not a validation method"
        )
    if spec.visibility not in VISIBILITIES:
        violations.add(f"{prefix}visibility", VISIBILITY_INVALID, "visibility is Public, User Only or Hidden")
    rule = spec.validation_rule.strip()
    if spec.validation_method == "Custom":
        if not rule:
            violations.add(
                f"{prefix}validation_rule", VALIDATION_RULE_REQUIRED, "the Custom method needs a validation rule"
            )
        elif len(rule) > MAX_RULE or "\x00" in rule:
            violations.add(f"{prefix}validation_rule", VALIDATION_RULE_INVALID, "the rule is too long")
        else:
            try:
                compiled_rule(rule)
            except ValueError as exc:
                violations.add(
                    f"{prefix}validation_rule",
                    VALIDATION_RULE_INVALID,
                    f"the rule is no RE2 regular expression: {exc}",
                )
    elif rule:
        violations.add(
            f"{prefix}validation_rule", VALIDATION_RULE_INVALID, "only the Custom validation method takes a rule"
        )
    alias = spec.merge_tag_alias.strip()
    _check_alias(alias, f"{prefix}merge_tag_alias", violations)
    options = _checked_options(spec, f"{prefix}options", violations) if type_known else spec.options
    years = (spec.first_year, spec.last_year)
    if years != (0, 0) and (spec.field_type != "Date field" or not 1000 <= years[0] <= years[1] <= 9999):
        violations.add(
            f"{prefix}first_year", YEARS_INVALID, "years are a range of a Date field's (first <= last, 1000-9999)"
        )
    checked = replace(
        spec,
        name=name,
        validation_rule=rule,
        merge_tag_alias=alias,
        options=options,
        default_value=spec.default_value,
    )
    default = spec.default_value.strip()
    if default:
        _check_text(default, f"{prefix}default_value", violations)
        if len(violations.items) == found_before:
            typed = typed_value(checked, default)
            if typed is None or not passes_validation(checked, typed):
                violations.add(
                    f"{prefix}default_value",
                    DEFAULT_VALUE_INVALID,
                    "default_value is not a value the field can hold (its type, options and validation)",
                )
            default = typed or default
    return replace(checked, default_value=default)
