"""Custom field rules, pure: what a definition may say, what a value of each type and validation method may be,
the order a subscriber's values are checked in, and what personalization gets."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.audience import domain
from services.audience.domain import CustomFieldRecord, FieldOption, FieldSpec
from services.common.errors import Violations

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
COLOURS = (FieldOption("Red", "red"), FieldOption("Blue", "blue"))


def reasons(spec: FieldSpec) -> list[str]:
    violations = Violations()
    domain.validate_field_spec(spec, violations)
    return [item.reason for item in violations.items]


def field(field_id: int, name: str = "Field", *, list_id: int | None = 1, **settings: object) -> CustomFieldRecord:
    spec = FieldSpec(name=name, is_global=list_id is None, **settings)  # type: ignore[arg-type]
    return CustomFieldRecord(field_id, 7, list_id, spec, NOW)


# --- definitions ------------------------------------------------------------------------------------------------


def test_a_plain_field_is_valid_and_comes_back_trimmed() -> None:
    violations = Violations()
    spec = domain.validate_field_spec(
        FieldSpec(name="  Company ", merge_tag_alias=" company ", default_value=" Acme "), violations
    )
    assert not violations
    assert (spec.name, spec.merge_tag_alias, spec.default_value) == ("Company", "company", "Acme")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (FieldSpec(name=" "), domain.CUSTOM_FIELD_NAME_REQUIRED),
        (FieldSpec(name="x" * 251), domain.TEXT_INVALID),
        (FieldSpec(name="x", field_type="?"), domain.CUSTOM_FIELD_TYPE_INVALID),
        (FieldSpec(name="x", validation_method="?"), domain.VALIDATION_METHOD_INVALID),
        (FieldSpec(name="x", visibility="?"), domain.VISIBILITY_INVALID),
        (FieldSpec(name="x", field_type="Drop down"), domain.CUSTOM_FIELD_OPTIONS_INVALID),
        (
            FieldSpec(name="x", field_type="Drop down", options=(FieldOption("a", "a"), FieldOption("b", "a"))),
            domain.CUSTOM_FIELD_OPTIONS_INVALID,
        ),
        (
            FieldSpec(name="x", field_type="Checkboxes", options=(FieldOption("a,b", "a,b"),)),
            domain.CUSTOM_FIELD_OPTIONS_INVALID,
        ),
        (FieldSpec(name="x", options=COLOURS), domain.CUSTOM_FIELD_OPTIONS_INVALID),
        (FieldSpec(name="x", validation_method="Custom"), domain.VALIDATION_RULE_REQUIRED),
        (
            FieldSpec(name="x", validation_method="Custom", validation_rule=r"(a)\1"),
            domain.VALIDATION_RULE_INVALID,
        ),
        (FieldSpec(name="x", validation_method="Custom", validation_rule="/a/x"), domain.VALIDATION_RULE_INVALID),
        (
            FieldSpec(name="x", validation_method="Numbers", validation_rule="[0-9]"),
            domain.VALIDATION_RULE_INVALID,
        ),
        (FieldSpec(name="x", merge_tag_alias="first name"), domain.MERGE_TAG_ALIAS_INVALID),
        (FieldSpec(name="x", merge_tag_alias="EmailAddress"), domain.MERGE_TAG_ALIAS_RESERVED),
        (FieldSpec(name="x", merge_tag_alias="firstname"), domain.MERGE_TAG_ALIAS_RESERVED),
        (FieldSpec(name="x", merge_tag_alias="CustomField3"), domain.MERGE_TAG_ALIAS_RESERVED),
        (FieldSpec(name="x", merge_tag_alias="42"), domain.MERGE_TAG_ALIAS_RESERVED),
        (FieldSpec(name="x", first_year=2000, last_year=2010), domain.YEARS_INVALID),
        (FieldSpec(name="x", field_type="Date field", first_year=2010, last_year=2000), domain.YEARS_INVALID),
        (
            FieldSpec(name="x", field_type="Drop down", options=COLOURS, default_value="green"),
            domain.DEFAULT_VALUE_INVALID,
        ),
        (FieldSpec(name="x", validation_method="Numbers", default_value="12a"), domain.DEFAULT_VALUE_INVALID),
    ],
)
def test_a_definition_that_cannot_work_is_refused_with_its_reason(spec: FieldSpec, reason: str) -> None:
    assert reason in reasons(spec)


def test_every_problem_of_a_definition_is_named_at_once() -> None:
    found = reasons(FieldSpec(name="", field_type="?", visibility="?", merge_tag_alias="a b"))
    assert set(found) == {
        domain.CUSTOM_FIELD_NAME_REQUIRED,
        domain.CUSTOM_FIELD_TYPE_INVALID,
        domain.VISIBILITY_INVALID,
        domain.MERGE_TAG_ALIAS_INVALID,
    }


def test_option_labels_default_to_their_values() -> None:
    violations = Violations()
    spec = FieldSpec(name="x", field_type="Drop down", options=(FieldOption(" ", " red "),))
    assert domain.validate_field_spec(spec, violations).options == (FieldOption("red", "red"),)


# --- values by type and validation method ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "given", "stored"),
    [
        (FieldSpec(name="x"), " Acme ", "Acme"),
        (FieldSpec(name="x"), "two\nlines", None),
        (FieldSpec(name="x", field_type="Paragraph text"), "two\nlines", "two\nlines"),
        (FieldSpec(name="x", field_type="Drop down", options=COLOURS), "red", "red"),
        (FieldSpec(name="x", field_type="Drop down", options=COLOURS), "Red", None),
        (FieldSpec(name="x", field_type="Checkboxes", options=COLOURS), "blue, red,blue", "blue, red"),
        (FieldSpec(name="x", field_type="Checkboxes", options=COLOURS), "red,green", None),
        (FieldSpec(name="x", field_type="Date field"), "2024-02-29", "2024-02-29"),
        (FieldSpec(name="x", field_type="Date field"), "2023-02-29", None),
        (FieldSpec(name="x", field_type="Date field", first_year=2000, last_year=2010), "2011-01-01", None),
        (FieldSpec(name="x", field_type="Time field"), "23:59", "23:59"),
        (FieldSpec(name="x", field_type="Time field"), "24:00", None),
    ],
)
def test_a_value_is_one_its_type_can_hold(spec: FieldSpec, given: str, stored: str | None) -> None:
    assert domain.typed_value(spec, given) == stored


@pytest.mark.parametrize(
    ("method", "good", "bad"),
    [
        ("Numbers", "0123", "12.5"),
        ("Letters", "Ada", "Ada1"),
        ("Numbers and letters", "Ada1", "Ada 1"),
        ("Email address", "ada@example.com", "ada@"),
        ("URL", "https://example.com/x", "ftp://example.com"),
        ("Date", "2026-12-31", "31/12/2026"),
        ("Time", "07:30:00", "7.30"),
    ],
)
def test_each_validation_method_accepts_what_it_names(method: str, good: str, bad: str) -> None:
    spec = FieldSpec(name="x", validation_method=method)
    assert domain.passes_validation(spec, good) and not domain.passes_validation(spec, bad)


def test_a_custom_rule_is_searched_for_and_php_delimiters_and_flags_are_read() -> None:
    zip_code = FieldSpec(name="x", validation_method="Custom", validation_rule="^[0-9]{5}$")
    assert domain.passes_validation(zip_code, "12345") and not domain.passes_validation(zip_code, "1234")
    anywhere = replace(zip_code, validation_rule="ab")
    assert domain.passes_validation(anywhere, "xxabxx")
    ignoring_case = replace(zip_code, validation_rule="/^abc$/i")
    assert domain.passes_validation(ignoring_case, "ABC")


def test_a_rule_that_would_backtrack_forever_in_a_backtracking_engine_runs_in_linear_time() -> None:
    spec = FieldSpec(name="x", validation_method="Custom", validation_rule="^(a+)+$")
    started = time.perf_counter()
    assert not domain.passes_validation(spec, "a" * 10_000 + "b")
    assert time.perf_counter() - started < 0.5


@given(st.text(max_size=40))
def test_a_checked_value_checks_the_same_again(text: str) -> None:
    spec = FieldSpec(name="x", field_type="Checkboxes", options=(*COLOURS, FieldOption("Green", "green")))
    stored = domain.typed_value(spec, text) if text.strip() else None
    if stored is not None:
        assert domain.typed_value(spec, stored) == stored


# --- a subscriber's values -------------------------------------------------------------------------------------

COMPANY = field(1, "Company", required=True, merge_tag_alias="company")
CODE = field(2, "Code", unique=True, validation_method="Numbers")
COLOUR = field(3, "Colour", field_type="Drop down", options=COLOURS, required=True)
CITY = field(4, "City", default_value="Berlin")
REGION = field(5, "Region", list_id=None, required=True, default_value="EU")
FIELDS = [COMPANY, CODE, COLOUR, CITY]


def test_keys_name_a_field_by_id_by_customfield_id_or_by_alias_and_values_are_stored_by_id() -> None:
    checked = domain.check_values(FIELDS, {"CustomField3": "red", "COMPANY": "Acme"}, enforce=False, form=False)
    assert checked.problem is None
    assert checked.values == {"1": "Acme", "3": "red"}
    assert checked.defaults == {"4": "Berlin"}


def test_a_key_that_names_no_field_of_the_list_is_refused_first() -> None:
    checked = domain.check_values(FIELDS, {"9": "x", "3": "green"}, enforce=True, form=False)
    assert checked.problem is not None and checked.problem.reason == domain.CUSTOM_FIELD_NOT_FOUND
    assert checked.problem.where == "custom_fields.9"


def test_without_the_rules_only_the_type_is_checked() -> None:
    lax = domain.check_values(FIELDS, {"1": "", "2": "abc"}, enforce=False, form=False, clashes={2})
    assert lax.problem is None and lax.values == {"1": "", "2": "abc"}
    wrong_type = domain.check_values(FIELDS, {"3": "green"}, enforce=False, form=False)
    assert wrong_type.problem is not None and wrong_type.problem.reason == domain.CUSTOM_FIELD_VALUE_INVALID


def test_field_by_field_the_rules_are_required_then_validation_then_uniqueness() -> None:
    def first(given: dict[str, str], clashes: set[int] = set()) -> str:  # noqa: B006
        problem = domain.check_values(FIELDS, given, enforce=True, form=False, clashes=clashes).problem
        assert problem is not None
        return f"{problem.reason}@{problem.where}"

    assert first({"1": " ", "2": "x"}) == "CUSTOM_FIELD_REQUIRED@custom_fields.1"
    assert first({"1": "Acme", "2": "x"}, {2}) == "CUSTOM_FIELD_VALIDATION_FAILED@custom_fields.2"
    assert first({"1": "Acme", "2": "12", "3": ""}, {2}) == "CUSTOM_FIELD_NOT_UNIQUE@custom_fields.2"
    # A field given is reported before a required one that was not given at all.
    assert first({"2": "x"}) == "CUSTOM_FIELD_VALIDATION_FAILED@custom_fields.2"
    assert first({"2": "12"}) == "CUSTOM_FIELD_REQUIRED@custom_fields.1"


def test_a_form_checks_what_it_is_given_and_only_enforce_looks_for_what_it_is_not() -> None:
    public = [replace(f, spec=replace(f.spec, visibility="Public")) for f in (COMPANY, CODE, COLOUR, CITY)]
    given_empty = domain.check_values(public, {"1": ""}, enforce=False, form=True)
    assert given_empty.problem is not None and given_empty.problem.reason == domain.CUSTOM_FIELD_REQUIRED
    assert given_empty.problem.custom_field == public[0]
    assert domain.check_values(public, {"2": "7"}, enforce=False, form=True).problem is None
    missing = domain.check_values(public, {"2": "7"}, enforce=True, form=True).problem
    assert missing is not None and missing.where == "custom_fields.1"


def test_a_form_sees_the_public_fields_only() -> None:
    internal = field(8, "Score", required=True, visibility="User Only")
    public = field(9, "Name", visibility="Public", required=True)
    hidden = field(10, "Ref", visibility="Hidden", default_value="web")
    fields = [internal, public, hidden]
    problem = domain.check_values(fields, {"8": "99", "9": "Ann"}, enforce=False, form=True).problem
    assert problem is not None and problem.reason == domain.CUSTOM_FIELD_NOT_FOUND
    # A required field the form cannot fill is not missing; the list's defaults still apply.
    checked = domain.check_values(fields, {"9": "Ann"}, enforce=True, form=True)
    assert checked.problem is None and checked.values == {"9": "Ann"} and checked.defaults == {"10": "web"}
    # The owner's own calls (subscriber.create) may fill every field.
    assert domain.check_values(fields, {"8": "99", "9": "Ann"}, enforce=True, form=False).problem is None


def test_zero_is_a_value_and_an_omitted_list_field_with_a_default_is_not_missing() -> None:
    fields = [replace(CITY, spec=replace(CITY.spec, required=True)), field(6, "Count", required=True)]
    checked = domain.check_values(fields, {"6": "0"}, enforce=True, form=False)
    assert checked.problem is None and checked.values == {"6": "0"} and checked.defaults == {"4": "Berlin"}


def test_an_omitted_global_field_is_missing_whatever_its_default() -> None:
    problem = domain.check_values([REGION], {}, enforce=True, form=False).problem
    assert problem is not None and problem.reason == domain.CUSTOM_FIELD_REQUIRED
    assert domain.check_values([REGION], {}, enforce=False, form=False).defaults == {}


def test_only_unique_fields_with_a_typed_value_are_looked_up() -> None:
    given = {"1": "Acme", "2": " 12 ", "3": "red"}
    assert domain.unique_candidates(FIELDS, given, enforce=True, form=False) == {2: "12"}
    assert domain.unique_candidates(FIELDS, given, enforce=False, form=False) == {}


# --- personalization ------------------------------------------------------------------------------------------


def test_personalization_gets_each_value_by_id_and_alias_with_defaults() -> None:
    stored = {"1": "Acme", "4": "", "legacy": "kept"}
    values = domain.personalization_values(stored, [COMPANY, CITY, REGION, CODE])
    assert values == {"1": "Acme", "company": "Acme", "4": "Berlin", "5": "EU", "legacy": "kept"}
    assert domain.personalization_values(stored, []) == stored
