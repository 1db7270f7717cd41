"""The segment criteria parser and compiler, and the audience domain checks: pure, no database."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from services.audience import domain, rules, store
from services.common.errors import DomainError, ErrorKind, Violations

TYPES = ["fields", "segments", "suppressions", "tags", "journeys", "website-events", "Fields", "bogus", "", 3]
OPERATORS = [*rules.OPERATORS, *rules.SEGMENT_OPERATORS, *rules.SUPPRESSION_OPERATORS, "sideways", "", None, 7]
FIELDS = [
    "EmailAddress",
    "FirstName",
    "SubscriptionDate",
    "SubscriberID",
    "12",
    "CustomField7",
    "city",
    "bad key!",
    "",
    None,
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)
)
values = st.one_of(
    scalars,
    st.sampled_from(["5", "2025-01-31", "2025-01-31 10:00:00", "abc", " 7 ", "1e999", "99999999999999999999"]),
)
rule_objects = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TYPES),
        "operator": st.sampled_from(OPERATORS),
        "field_id": st.sampled_from(FIELDS),
        "value": values,
    },
)
json_values = st.recursive(
    st.one_of(scalars, rule_objects),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=25,
)
rule_shaped = st.lists(
    st.lists(st.one_of(rule_objects, st.lists(rule_objects, max_size=3)), max_size=4), max_size=4
)

SEGMENTS = {
    3: rules.SegmentDefinition(
        3,
        1,
        "or",
        rules.parse_criteria([[{"type": "fields", "field_id": "FirstName", "operator": "is", "value": "x"}]]),
    ),
    4: rules.SegmentDefinition(4, 1, "and", rules.Criteria(), randomness=True, audience_size=10),
}


def compiled(criteria: rules.Criteria, operator: str) -> str:
    compiler = rules.Compiler(store.subscribers, store.suppressions, SEGMENTS)
    return str(compiler.condition(criteria, operator, store.subscribers).compile(dialect=postgresql.dialect()))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, rule_shaped), st.booleans(), st.sampled_from(["and", "or"]))
def test_parsing_and_compiling_any_json_raises_only_domain_errors(
    raw: Any, require_rule: bool, operator: str
) -> None:
    try:
        criteria = rules.parse_criteria(raw, require_rule=require_rule)
    except DomainError as exc:
        assert exc.kind is ErrorKind.INVALID and exc.reason in (rules.RULES_INVALID, rules.RULE_TYPE_UNSUPPORTED)
        assert exc.violations and exc.violations[0].field.startswith("rules")
        return
    assert compiled(criteria, operator)


@settings(max_examples=300)
@given(
    st.one_of(
        json_values, st.dictionaries(st.sampled_from(["operator", "criteria", "Criteria", "x"]), json_values)
    )
)
def test_any_rules_bundle_is_a_bundle_or_a_clear_invalid_error(raw: Any) -> None:
    if not isinstance(raw, dict):
        raw = {"criteria": raw}
    try:
        bundle = domain.parse_bundle(raw)
    except DomainError as exc:
        assert exc.reason in (domain.RULES_BUNDLE_INVALID, rules.RULE_TYPE_UNSUPPORTED)
        return
    assert bundle is None or all(c.list_id > 0 for c in bundle.criteria)


def _expected(groups: list[list[Any]], operator: str, truth: dict[str, bool]) -> bool:
    """The sheet's table, written out: "and" = groups AND, inside a group OR, inside a sub-group AND."""
    between = all if operator == "and" else any
    inside = any if operator == "and" else all
    deepest = all if operator == "and" else any
    return between(
        inside(
            deepest(truth[r["value"]] for r in item) if isinstance(item, list) else truth[item["value"]]
            for item in group
        )
        for group in groups
    )


@st.composite
def structures(draw: st.DrawFn) -> tuple[list[list[Any]], dict[str, bool]]:
    counter = iter(range(10_000))

    def rule() -> dict[str, Any]:
        return {"type": "fields", "field_id": "FirstName", "operator": "is", "value": f"v{next(counter)}"}

    groups: list[list[Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        group: list[Any] = []
        for _ in range(draw(st.integers(1, 4))):
            if draw(st.booleans()):
                group.append([rule() for _ in range(draw(st.integers(1, 3)))])
            else:
                group.append(rule())
        groups.append(group)
    names = [f"v{i}" for i in range(next(counter))]
    truth = {name: draw(st.booleans()) for name in names}
    return groups, truth


@given(structures(), st.sampled_from(["and", "or"]))
def test_the_connector_alternates_at_each_depth(
    structure: tuple[list[list[Any]], dict[str, bool]], operator: str
) -> None:
    groups, truth = structure
    criteria = rules.parse_criteria(groups)
    result = rules.fold(
        criteria,
        operator,
        lambda rule: truth[rule.value] if isinstance(rule, rules.FieldRule) else False,
        all,
        any,
        True,
    )
    assert result == _expected(groups, operator, truth)


def test_the_generic_reading_of_the_or_row() -> None:
    # "[[A,B],[C]] reads (A AND B) OR C", which is the "or" row of the table.
    a, b, c = ({"type": "fields", "field_id": "FirstName", "operator": "is", "value": v} for v in "abc")
    criteria = rules.parse_criteria([[a, b], [c]])
    for truth in (
        {"a": True, "b": True, "c": False},
        {"a": True, "b": False, "c": False},
        {"a": False, "b": False, "c": True},
    ):
        got = rules.fold(criteria, "or", lambda r, t=truth: t[r.value], all, any, True)  # type: ignore[union-attr,misc]
        assert got == ((truth["a"] and truth["b"]) or truth["c"])


@pytest.mark.parametrize("raw", [[], [[]], [[{}]], [[[]]]])
def test_bulk_selections_need_a_typed_rule(raw: Any) -> None:
    with pytest.raises(DomainError) as raised:
        rules.parse_criteria(raw, require_rule=True)
    assert raised.value.reason == rules.RULES_INVALID


def test_segments_may_have_no_rules_and_match_everyone() -> None:
    assert rules.parse_criteria([]).is_empty and rules.parse_criteria([[], [[]]]).is_empty
    assert compiled(rules.Criteria(), "and") == "true"


@pytest.mark.parametrize("rule_type", ["tags", "journeys", "website-events", "Website_Events"])
def test_rule_types_herald_has_no_data_for_are_refused(rule_type: str) -> None:
    with pytest.raises(DomainError) as raised:
        rules.parse_criteria([[{"type": rule_type, "operator": "has this tag", "value": "1"}]])
    assert raised.value.reason == rules.RULE_TYPE_UNSUPPORTED and "Herald keeps no" in raised.value.message


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({"type": "fields", "operator": "is", "value": "x"}, "needs a field_id"),
        ({"type": "fields", "field_id": "bad key!", "operator": "is", "value": "x"}, "names no subscriber field"),
        ({"type": "fields", "field_id": "12", "operator": "roughly", "value": "x"}, "not an operator"),
        ({"type": "fields", "field_id": "12", "operator": ">", "value": "lots"}, "needs a number"),
        ({"type": "fields", "field_id": "12", "operator": "is", "value": {"a": 1}}, "needs a text or number"),
        (
            {"type": "fields", "field_id": "OptInDate", "operator": "contains", "value": "2025"},
            "does not apply to a date",
        ),
        ({"type": "fields", "field_id": "OptInDate", "operator": "is", "value": "soon"}, "is not a date"),
        ({"type": "segments", "operator": "belongs to", "value": "x"}, "segment id"),
        ({"type": "flowers", "operator": "is"}, "unknown rule type"),
        ({"operator": "is"}, "has no type"),
    ],
)
def test_malformed_rules_say_what_and_where(rule: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DomainError) as raised:
        rules.parse_criteria([[{"type": "suppressions", "operator": "exist"}], [rule]])
    assert raised.value.reason == rules.RULES_INVALID
    assert fragment in raised.value.message and raised.value.violations[0].field == "rules[1][0]"


def test_rules_nest_at_most_three_levels() -> None:
    rule = {"type": "fields", "field_id": "FirstName", "operator": "is", "value": "x"}
    with pytest.raises(DomainError) as raised:
        rules.parse_criteria([[[[rule]]]])
    assert "three levels" in raised.value.message


def test_an_unknown_suppression_operator_matches_nobody() -> None:
    criteria = rules.parse_criteria([[{"type": "suppressions", "operator": "sideways"}]])
    assert criteria.groups[0][0] == rules.SuppressionRule(None)
    assert compiled(criteria, "and") == "false"


def test_numbers_in_text_are_compared_only_when_they_are_numbers() -> None:
    criteria = rules.parse_criteria(
        [[{"type": "fields", "field_id": "CustomField12", "operator": ">=", "value": 5}]]
    )
    sql = compiled(criteria, "and")
    assert "CASE WHEN" in sql and "->>" in sql and "NUMERIC" in sql


@pytest.mark.parametrize("operator", ["is", "is not", "contains", "does not contain", "begins with", "ends with"])
def test_text_rules_on_a_custom_field_compare_its_text(operator: str) -> None:
    # `->>` answers text: SQLAlchemy deprecates (and will refuse) ILIKE on the JSONB column it is applied to,
    # and the suite turns its deprecations into errors.
    criteria = rules.parse_criteria(
        [[{"type": "fields", "field_id": "CustomField12", "operator": operator, "value": "Paris"}]]
    )
    assert "custom_fields ->>" in compiled(criteria, "and")


def test_segment_references_compile_with_a_depth_guard() -> None:
    deep = {
        i: rules.SegmentDefinition(
            i, 1, "and", rules.parse_criteria([[{"type": "segments", "operator": "in", "value": i + 1}]])
        )
        for i in range(1, 10)
    }
    compiler = rules.Compiler(store.subscribers, store.suppressions, deep)
    with pytest.raises(DomainError) as raised:
        compiler.membership(deep[1], store.subscribers)
    assert raised.value.reason == rules.RULES_INVALID and "levels deep" in raised.value.message
    missing = rules.parse_criteria([[{"type": "segments", "operator": "does not belong to", "value": 999}]])
    assert compiled(missing, "and") == "true"  # nobody belongs to a deleted segment
    assert "md5" in compiled(rules.parse_criteria([[{"type": "segments", "operator": "in", "value": 4}]]), "and")


def test_custom_field_keys_and_fields() -> None:
    assert rules.custom_field_key("CustomField012") == "12" == rules.custom_field_key(" 12 ")
    assert rules.custom_field_key("city") == "city" and rules.custom_field_key("a b") is None
    assert (
        rules.field_column("Email Address") == "email_address" and rules.field_column("optin_date") == "optin_date"
    )
    assert rules.field_column("CustomField3") == "custom:3"


# --- domain -------------------------------------------------------------------------------------------------


def test_addresses_are_normalised_and_keyed_case_insensitively() -> None:
    assert domain.normalise_email("  Ada.Lovelace@EXAMPLE.com ") == (
        "Ada.Lovelace@example.com",
        "ada.lovelace@example.com",
    )
    for bad in ("", "nope", "a@b", "x@example.test", "a" * 250 + "@example.com"):
        with pytest.raises(ValueError):
            domain.normalise_email(bad)


def test_duplicates_follow_the_flags_in_code_order() -> None:
    domain.duplicate_verdict("Subscribed", True, False)
    domain.duplicate_verdict("Unsubscribed", False, True)
    with pytest.raises(DomainError) as raised:
        domain.duplicate_verdict("Unsubscribed", False, False)
    assert raised.value.reason == domain.SUBSCRIBER_ALREADY_EXISTS
    with pytest.raises(DomainError) as raised:
        domain.duplicate_verdict("Unsubscribed", True, False)
    assert raised.value.reason == domain.SUBSCRIBER_UNSUBSCRIBED


def test_the_confirmation_email_checks_name_every_problem() -> None:
    violations = Violations()
    domain.check_confirmation_email(
        domain.ConfirmationEmail("", "Ada", "", "Both", "", "", "Template", 0), violations
    )
    assert [v.reason for v in violations.items] == [
        domain.CONFIRMATION_EMAIL_FIELD_REQUIRED,
        domain.CONFIRMATION_EMAIL_FIELD_REQUIRED,
        domain.CONFIRMATION_EMAIL_HTML_REQUIRED,
        domain.CONFIRMATION_EMAIL_PLAIN_REQUIRED,
        domain.CONFIRMATION_EMAIL_TEMPLATE_REQUIRED,
    ]


def test_search_fields_and_order_fields() -> None:
    assert domain.search_column("EmailAddress") == "email_address" and domain.search_column("12") == "custom:12"
    assert domain.order_column("nonsense") == "email_key"
    with pytest.raises(DomainError) as raised:
        domain.search_column("Password")
    assert raised.value.reason == domain.SEARCH_FIELD_INVALID


def test_targeting_sources_must_name_lists() -> None:
    with pytest.raises(DomainError) as raised:
        domain.validate_targeting([(0, 0)], [], {})
    assert raised.value.reason == domain.TARGETING_INVALID
    targeting = domain.validate_targeting([(1, 0), (1, 0), (2, 3)], [(4, 0)], {})
    assert targeting.included == (domain.Source(1, 0), domain.Source(2, 3)) and targeting.bundle is None
    assert targeting.list_ids() == [1, 2, 4]


# --- the per-key rate limit of subscriber.create / subscriber.get ------------------------------------------


def test_the_rate_limit_is_a_sliding_window_per_key() -> None:
    from translator.ratelimit import RateLimited, RateLimiter

    limiter = RateLimiter()
    for second in range(100):
        limiter.admit(("subscriber.create", "key"), 100, 60.0, now=1000.0 + second * 0.5)
    with pytest.raises(RateLimited) as raised:
        limiter.admit(("subscriber.create", "key"), 100, 60.0, now=1050.0)
    assert raised.value.retry_after == 10  # the first call leaves the window at 1060
    limiter.admit(("subscriber.get", "key"), 100, 60.0, now=1050.0)
    limiter.admit(("subscriber.create", "other key"), 100, 60.0, now=1050.0)
    limiter.admit(("subscriber.create", "key"), 100, 60.0, now=1060.0)
