"""Rules of a subscriber's custom field values against the definitions its list sees, and the values personalization gets.

A value is checked for its field's type first, then (when asked) the field's required, validation and
uniqueness rules, field by field in id order; the first problem is the answer (supporting-commands §4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

from services.audience import rules as segment_rules
from services.audience.domain._fields import CustomFieldRecord, passes_validation, typed_value
from services.audience.domain._reasons import (
    CUSTOM_FIELD_NOT_FOUND,
    CUSTOM_FIELD_NOT_UNIQUE,
    CUSTOM_FIELD_REQUIRED,
    CUSTOM_FIELD_VALIDATION_FAILED,
    CUSTOM_FIELD_VALUE_INVALID,
)


@dataclass(frozen=True)
class FieldProblem:
    """The first problem of a subscriber's values: its reason, the key it is reported under
    (`custom_fields.<id>`, or the key as given for one that names no field) and the field, when known."""

    reason: str
    where: str
    message: str
    custom_field: CustomFieldRecord | None = None


@dataclass(frozen=True)
class FieldValues:
    """Checked values by field id (as stored), the defaults a new subscriber of the list gets for the list
    fields not given, and the first problem found (None when there is none)."""

    values: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    problem: FieldProblem | None = None


def is_empty(value: str) -> bool:
    """Empty once trimmed; "0" is a value (supporting-commands §4)."""
    return not value.strip()


def resolve(fields: Sequence[CustomFieldRecord], given: Mapping[str, str]) -> tuple[dict[int, str], list[str]]:
    """The given values by field id ("12", "CustomField12" or the field's alias name it, the alias
    case-insensitively; an id key wins over an alias key of the same field), and the keys that name
    no field the list sees, in sorted order."""
    by_id = {f.custom_field_id: f for f in fields}
    by_alias = {f.spec.merge_tag_alias.casefold(): f for f in fields if f.spec.merge_tag_alias}
    values: dict[int, str] = {}
    unknown: list[str] = []
    for raw_key, value in sorted(given.items(), key=lambda item: not item[0].isdigit()):
        key = segment_rules.custom_field_key(raw_key) or raw_key
        found = by_id.get(int(key)) if key.isdigit() else by_alias.get(key.casefold())
        if found is None:
            unknown.append(raw_key)
        else:
            values.setdefault(found.custom_field_id, value)
    return values, sorted(unknown)


def unique_candidates(
    fields: Sequence[CustomFieldRecord], given: Mapping[str, str], *, enforce: bool, form: bool
) -> dict[int, str]:
    """The values whose uniqueness must be looked up before check_values: those of unique fields that are
    given, non-empty and of the field's type, when the rules are checked at all."""
    if not (enforce or form):
        return {}
    records = {f.custom_field_id: f for f in fields}
    candidates: dict[int, str] = {}
    for field_id, value in resolve(fields, given)[0].items():
        record = records[field_id]
        if record.spec.unique and not is_empty(value):
            typed = typed_value(record.spec, value)
            if typed is not None:
                candidates[field_id] = typed
    return candidates


def check_values(
    fields: Sequence[CustomFieldRecord],
    given: Mapping[str, str],
    *,
    enforce: bool,
    form: bool,
    clashes: Set[int] = frozenset(),
) -> FieldValues:
    """Checks a subscriber's values against the fields its list sees.

    Always: every key names one of the fields (CUSTOM_FIELD_NOT_FOUND) and every non-empty value is one its
    type can hold (CUSTOM_FIELD_VALUE_INVALID). With `enforce` (EnforceRequiredFields) or `form` (a public
    subscription form, which always checks what it is given): a given required field must not be empty
    (CUSTOM_FIELD_REQUIRED), a value must pass its validation method (CUSTOM_FIELD_VALIDATION_FAILED) and,
    for a unique field, be no other subscriber's of the list (`clashes`: the ids whose value is taken;
    CUSTOM_FIELD_NOT_UNIQUE). With `enforce`, a required field that is not given at all is missing too,
    unless it is a list field with a default (which a new subscriber gets); a global field's default never
    counts (supporting-commands §4). A `form` sees the Public fields only: a key naming another is
    CUSTOM_FIELD_NOT_FOUND, and a required one it cannot fill is not missing.
    """
    # A form has the list's Public fields only: to a stranger, a User Only or Hidden field is no field at all.
    fillable = [f for f in fields if f.spec.visibility == "Public"] if form else list(fields)
    values, unknown = resolve(fillable, given)
    defaults = {
        f.key: f.spec.default_value
        for f in fields
        if f.list_id is not None and f.spec.default_value and f.custom_field_id not in values
    }
    if unknown:
        key = unknown[0]
        message = f"{key[:64]!r} names no custom field of the list (nor a global one of its owner)"
        return FieldValues(problem=FieldProblem(CUSTOM_FIELD_NOT_FOUND, f"custom_fields.{key[:64]}", message))
    checks_rules = enforce or form
    checked: dict[str, str] = {}
    records = sorted(fillable, key=lambda f: f.custom_field_id)
    for record in records:
        if record.custom_field_id not in values:
            continue
        value, where, spec = values[record.custom_field_id], f"custom_fields.{record.key}", record.spec
        if is_empty(value):
            if spec.required and checks_rules:
                message = f"custom field {record.key} ({spec.name}) is required"
                return FieldValues(problem=FieldProblem(CUSTOM_FIELD_REQUIRED, where, message, record))
            checked[record.key] = ""
            continue
        typed = typed_value(spec, value)
        if typed is None:
            message = f"custom field {record.key} ({spec.name}) cannot hold that value: {_expected(record)}"
            return FieldValues(problem=FieldProblem(CUSTOM_FIELD_VALUE_INVALID, where, message, record))
        if checks_rules and not passes_validation(spec, typed):
            message = f"custom field {record.key} ({spec.name}) failed its validation ({spec.validation_method})"
            return FieldValues(problem=FieldProblem(CUSTOM_FIELD_VALIDATION_FAILED, where, message, record))
        if checks_rules and spec.unique and record.custom_field_id in clashes:
            message = f"custom field {record.key} ({spec.name}) must be unique: another subscriber has that value"
            return FieldValues(problem=FieldProblem(CUSTOM_FIELD_NOT_UNIQUE, where, message, record))
        checked[record.key] = typed
    if enforce:
        for record in records:
            omitted = record.custom_field_id not in values
            if omitted and record.spec.required and record.key not in defaults:
                message = f"custom field {record.key} ({record.spec.name}) is required"
                return FieldValues(
                    problem=FieldProblem(CUSTOM_FIELD_REQUIRED, f"custom_fields.{record.key}", message, record)
                )
    return FieldValues(values=checked, defaults=defaults)


def _expected(record: CustomFieldRecord) -> str:
    spec = record.spec
    if spec.options:
        return "one of " + ", ".join(repr(option.value) for option in spec.options[:20])
    return {
        "Date field": "a date YYYY-MM-DD" + (f" in {spec.first_year}-{spec.last_year}" if spec.first_year else ""),
        "Time field": "a time HH:MM or HH:MM:SS",
    }.get(spec.field_type, "one line of text")


def personalization_values(stored: Mapping[str, str], fields: Sequence[CustomFieldRecord]) -> dict[str, str]:
    """What personalization gets of a subscriber's values: each field's value (its default when the
    subscriber has none) under its id and its alias; values under keys that name no field stay as stored."""
    if not fields:
        return dict(stored)
    values = dict(stored)
    for record in fields:
        value = stored.get(record.key, "")
        if is_empty(value):
            value = record.spec.default_value
        if not value:
            continue
        values[record.key] = value
        if record.spec.merge_tag_alias:
            values[record.spec.merge_tag_alias] = value
    return values
