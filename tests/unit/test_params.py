"""Unit and property tests for translator.params: body parsing, key lower-casing and typed accessors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translator.params import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    BodyError,
    ParamError,
    Params,
    decode_text,
    holds_lone_surrogate,
    normalise_keys,
    parse_form,
    parse_json_body,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def _error(call: object) -> ParamError:
    assert callable(call)
    with pytest.raises(ParamError) as info:
        call()
    return info.value


# --- ParamError -------------------------------------------------------------------------------------------


def test_param_error_lowercases_name_and_carries_problem_and_message() -> None:
    err = ParamError("ListID", "missing")
    assert err.name == "listid"
    assert err.problem == "missing"
    assert "listid" in str(err)


def test_param_error_keeps_a_custom_message() -> None:
    err = ParamError("X", "malformed", "x must be an integer")
    assert str(err) == "x must be an integer"
    assert err.message == "x must be an integer"


# --- normalise_keys ---------------------------------------------------------------------------------------


def test_normalise_keys_lowercases_keys_at_every_depth_including_inside_lists() -> None:
    value = {"Fields": {"EmailAddress": "A@B.com", "Inner": [{"MappedFields": {"FIELD1": "X"}}]}}
    assert normalise_keys(value) == {
        "fields": {"emailaddress": "A@B.com", "inner": [{"mappedfields": {"field1": "X"}}]}
    }


def test_normalise_keys_leaves_values_and_scalars_untouched() -> None:
    assert normalise_keys(["ABC", {"K": "VaLuE"}]) == ["ABC", {"k": "VaLuE"}]
    assert normalise_keys("MiXeD") == "MiXeD"
    assert normalise_keys(None) is None


def test_normalise_keys_does_not_mutate_its_input() -> None:
    value = {"A": {"B": 1}}
    normalise_keys(value)
    assert value == {"A": {"B": 1}}


@given(json_values)
def test_normalise_keys_is_idempotent(value: object) -> None:
    once = normalise_keys(value)
    # repr, not ==, because a NaN inside never compares equal to itself.
    assert repr(normalise_keys(once)) == repr(once)


# --- parse_form -------------------------------------------------------------------------------------------


def test_parse_form_builds_nested_lists_from_numeric_brackets() -> None:
    result = parse_form(
        [
            ("ABTesting[Variations][0][emailid]", "301"),
            ("ABTesting[Variations][1][EmailID]", "302"),
            ("ABTesting[TestSize]", "20"),
        ]
    )
    assert result == {"abtesting": {"variations": [{"emailid": "301"}, {"emailid": "302"}], "testsize": "20"}}


def test_parse_form_single_variation_becomes_a_one_item_list() -> None:
    result = parse_form([("ABTesting[Variations][0][emailid]", "301")])
    assert result == {"abtesting": {"variations": [{"emailid": "301"}]}}


def test_parse_form_empty_brackets_append_to_a_list() -> None:
    assert parse_form([("a[]", "1"), ("a[]", "2")]) == {"a": ["1", "2"]}


def test_parse_form_orders_list_by_integer_key_not_arrival() -> None:
    assert parse_form([("a[10]", "x")] + [(f"a[{i}]", str(i)) for i in range(10)]) == {
        "a": [*(str(i) for i in range(10)), "x"]
    }


def test_parse_form_append_continues_after_highest_numeric_key() -> None:
    assert parse_form([("a[1]", "x"), ("a[0]", "y"), ("a[]", "z")]) == {"a": ["y", "x", "z"]}


def test_parse_form_keeps_sparse_numeric_keys_as_an_object() -> None:
    # Custom field IDs must survive: CustomFields[12]=x is {"12": "x"}, not ["x"].
    assert parse_form([("CustomFields[12]", "x"), ("CustomFields[7]", "y")]) == {
        "customfields": {"12": "x", "7": "y"}
    }


def test_parse_form_keeps_non_canonical_numeric_keys_as_an_object() -> None:
    assert parse_form([("a[00]", "x")]) == {"a": {"00": "x"}}


def test_parse_form_keeps_top_level_numeric_keys_as_an_object() -> None:
    assert parse_form([("0", "a"), ("1", "b")]) == {"0": "a", "1": "b"}


def test_parse_form_repeated_plain_key_last_wins() -> None:
    assert parse_form([("Name", "a"), ("NAME", "b")]) == {"name": "b"}


def test_parse_form_lowercases_keys_but_not_values() -> None:
    assert parse_form([("Command", "List.Create"), ("Opt[InMode]", "Double")]) == {
        "command": "List.Create",
        "opt": {"inmode": "Double"},
    }


@pytest.mark.parametrize("key", ["a[b", "a]", "A]b", "[a]", "a[b]c", "a[b[c]]", "a[]]", "[]", "]["])
def test_parse_form_keeps_malformed_bracket_keys_flat(key: str) -> None:
    assert parse_form([(key, "v")]) == {key.lower(): "v"}


def test_parse_form_later_scalar_replaces_earlier_nested_value_and_vice_versa() -> None:
    assert parse_form([("a[b]", "1"), ("a", "2")]) == {"a": "2"}
    assert parse_form([("a", "2"), ("a[b]", "1")]) == {"a": {"b": "1"}}


def test_parse_form_keeps_too_deep_bracket_keys_flat() -> None:
    deep = "a" + "[x]" * MAX_DEPTH
    assert parse_form([(deep, "v")]) == {deep: "v"}
    ok = "a" + "[x]" * (MAX_DEPTH - 1)
    assert isinstance(parse_form([(ok, "v")])["a"], dict)


def test_parse_form_append_after_replacing_a_group_starts_at_zero() -> None:
    pairs = [("a[b][]", "1"), ("a[b]", "x"), ("a[b][]", "2")]
    assert parse_form(pairs) == {"a": {"b": ["2"]}}


def test_parse_form_of_nothing_is_empty() -> None:
    assert parse_form([]) == {}


@given(st.lists(st.tuples(st.text(), st.text())))
def test_parse_form_never_raises_on_arbitrary_pairs(pairs: list[tuple[str, str]]) -> None:
    assert isinstance(parse_form(pairs), dict)


@given(st.lists(st.tuples(st.text(alphabet="ab[]0", max_size=12), st.text(max_size=3))))
def test_parse_form_never_raises_on_bracket_heavy_keys(pairs: list[tuple[str, str]]) -> None:
    result = parse_form(pairs)
    assert all(key == key.lower() for key in result)


# --- parse_json_body --------------------------------------------------------------------------------------


def test_parse_json_body_returns_object_with_lowercased_keys_at_depth() -> None:
    body = b'{"Command":"Subscriber.Create","Fields":{"EmailAddress":"X@Y.z"},"Items":[{"ID":1}]}'
    assert parse_json_body(body) == {
        "command": "Subscriber.Create",
        "fields": {"emailaddress": "X@Y.z"},
        "items": [{"id": 1}],
    }


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1,2]", b'"text"', b"1", b"null", b"{", b'{"a":NaN}', b'{"a":Infinity}', b"\xff{}"],
)
def test_parse_json_body_rejects_non_objects_and_invalid_json(body: bytes) -> None:
    with pytest.raises(BodyError):
        parse_json_body(body)


def test_parse_json_body_accepts_nesting_up_to_the_limit() -> None:
    body = '{"a":' * (MAX_DEPTH - 1) + "{}" + "}" * (MAX_DEPTH - 1)
    assert isinstance(parse_json_body(body.encode()), dict)


def test_parse_json_body_rejects_nesting_beyond_the_limit() -> None:
    body = '{"a":' * MAX_DEPTH + "[]" + "}" * MAX_DEPTH
    with pytest.raises(BodyError):
        parse_json_body(body.encode())


def test_parse_json_body_rejects_pathologically_deep_nesting_without_recursion_error() -> None:
    with pytest.raises(BodyError):
        parse_json_body(b"[" * 100_000 + b"]" * 100_000)


def test_parse_json_body_rejects_huge_integer_literals_as_body_errors() -> None:
    with pytest.raises(BodyError):
        parse_json_body(b'{"a":' + b"9" * 10_000 + b"}")


def test_parse_json_body_decodes_utf8_values() -> None:
    assert parse_json_body('{"Name":"Zoë"}'.encode()) == {"name": "Zoë"}


@pytest.mark.parametrize(
    "body", [rb'{"a":"\ud800"}', rb'{"a":"x\udfffy"}', rb'{"\udc00":1}', rb'{"a":[{"b":"\ude00\ud83d"}]}']
)
def test_parse_json_body_refuses_lone_surrogates_anywhere(body: bytes) -> None:
    with pytest.raises(BodyError, match="surrogate"):
        parse_json_body(body)


def test_parse_json_body_joins_a_paired_surrogate_escape_into_one_character() -> None:
    assert parse_json_body(rb'{"a":"\ud83d\ude00"}') == {"a": "\U0001f600"}


@pytest.mark.parametrize(
    ("encoding", "charset"), [("utf-16", "utf-16"), ("utf-16-be", "UTF-16BE"), ("cp1252", "windows-1252")]
)
def test_parse_json_body_decodes_with_the_declared_charset(encoding: str, charset: str) -> None:
    assert parse_json_body('{"Name":"Zoë"}'.encode(encoding), charset) == {"name": "Zoë"}


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_decode_text_without_a_charset_follows_a_byte_order_mark(encoding: str) -> None:
    assert decode_text("{}".encode(encoding), None) == "{}"


@pytest.mark.parametrize(
    ("body", "charset"),
    [
        (b"{}", "bogus-charset"),
        (b"{}", "hex"),
        (b"{}", "undefined"),
        (b"{}", "a\x00b"),
        (b"{}\xff", None),
        (b"{}x", "utf-16"),
    ],
)
def test_decode_text_refuses_unknown_charsets_and_undecodable_bytes(body: bytes, charset: str | None) -> None:
    with pytest.raises(BodyError):
        decode_text(body, charset)


def test_holds_lone_surrogate_looks_at_keys_and_values_at_every_depth() -> None:
    assert not holds_lone_surrogate({"a": ["b", {"c": "\U0001f600"}], "n": 1})
    assert holds_lone_surrogate({"a": ["b", {"c": "\ud800"}]})
    assert holds_lone_surrogate({"a": {"\udfff": 1}})
    assert holds_lone_surrogate("\udce9")


@given(st.text())
def test_text_hypothesis_generates_never_holds_a_lone_surrogate(text: str) -> None:
    # st.text() leaves out surrogates: what a UTF-8 encoder accepts is exactly what this says is clean.
    assert holds_lone_surrogate(text) is False
    text.encode("utf-8")


def test_a_json_string_parameter_holding_a_lone_surrogate_is_malformed() -> None:
    params = Params({"rulesjson": '[{"value": "\\ud800"}]', "options": '{"\\udfff": 1}'})
    assert _error(lambda: params.json_str("RulesJSON")).problem == "malformed"
    assert _error(lambda: params.obj("Options")).problem == "malformed"


# --- Params.has / raw -------------------------------------------------------------------------------------


def test_params_lowercases_keys_and_matches_names_case_insensitively() -> None:
    p = Params({"ListID": 5, "Fields": {"EmailAddress": "a"}})
    assert p.raw("LISTID") == 5
    assert p.raw("listid") == 5
    assert p.raw("fields") == {"emailaddress": "a"}


def test_has_treats_none_and_empty_string_as_absent() -> None:
    p = Params({"a": None, "b": "", "c": 0, "d": " ", "e": False})
    assert not p.has("a")
    assert not p.has("b")
    assert not p.has("missing")
    assert p.has("c")
    assert p.has("d")
    assert p.has("E")


def test_raw_returns_none_for_missing() -> None:
    assert Params({}).raw("x") is None


# --- Params.str -------------------------------------------------------------------------------------------


def test_str_returns_strings_as_given_without_trimming() -> None:
    assert Params({"Name": "  Hello  "}).str("name") == "  Hello  "


def test_str_renders_numbers() -> None:
    p = Params({"i": 42, "f": 1.5, "g": 5.0})
    assert p.str("i") == "42"
    assert p.str("f") == "1.5"
    assert p.str("g") == "5.0"


def test_str_missing_is_none_or_missing_error_when_required() -> None:
    p = Params({"e": ""})
    assert p.str("e") is None
    assert p.str("absent") is None
    err = _error(lambda: p.str("Absent", required=True))
    assert (err.name, err.problem) == ("absent", "missing")
    assert _error(lambda: p.str("e", required=True)).problem == "missing"


@pytest.mark.parametrize("value", [True, False, {"a": 1}, ["a"], float("nan"), float("inf")])
def test_str_rejects_bools_objects_lists_and_non_finite_numbers(value: object) -> None:
    err = _error(lambda: Params({"x": value}).str("x"))
    assert (err.name, err.problem) == ("x", "malformed")


def test_str_rejects_values_longer_than_max_len() -> None:
    p = Params({"x": "abcd"})
    assert p.str("x", max_len=4) == "abcd"
    assert _error(lambda: p.str("x", max_len=3)).problem == "malformed"


def test_str_default_max_len_is_65535() -> None:
    assert Params({"x": "a" * 65535}).str("x") is not None
    assert _error(lambda: Params({"x": "a" * 65536}).str("x")).problem == "malformed"


# --- Params.int -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, 7), (-3, -3), ("12", 12), (" +12 \t", 12), ("-0012", -12), (5.0, 5), ("0", 0), (0, 0)],
)
def test_int_accepts_ints_digit_strings_and_integral_floats(value: object, expected: int) -> None:
    assert Params({"n": value}).int("N") == expected


@pytest.mark.parametrize(
    "value",
    [True, False, 1.5, "1.5", "1e3", "abc", "1_000", "١٢", "  ", "+", "--1", [1], {"a": 1}, float("nan")],
)
def test_int_rejects_non_integers(value: object) -> None:
    err = _error(lambda: Params({"n": value}).int("n"))
    assert (err.name, err.problem) == ("n", "malformed")


def test_int_accepts_int64_bounds() -> None:
    assert Params({"n": INT64_MAX}).int("n") == INT64_MAX
    assert Params({"n": str(INT64_MIN)}).int("n") == INT64_MIN
    assert Params({"n": "000000000000000000000000001"}).int("n") == 1


@pytest.mark.parametrize(
    "value", [INT64_MAX + 1, INT64_MIN - 1, str(INT64_MAX + 1), "9" * 5000, 1e19, -1e300, float("inf")]
)
def test_int_rejects_values_outside_int64(value: object) -> None:
    assert _error(lambda: Params({"n": value}).int("n")).problem == "malformed"


def test_int_applies_inclusive_min_and_max() -> None:
    p = Params({"lo": 1, "hi": 10})
    assert p.int("lo", min=1) == 1
    assert p.int("hi", max=10) == 10
    assert _error(lambda: p.int("lo", min=2)).problem == "malformed"
    assert _error(lambda: p.int("hi", max=9)).problem == "malformed"


def test_int_missing_is_none_or_missing_error_when_required() -> None:
    p = Params({"n": "", "m": None})
    assert p.int("n") is None
    assert p.int("m") is None
    assert p.int("absent") is None
    err = _error(lambda: p.int("CampaignID", required=True))
    assert (err.name, err.problem) == ("campaignid", "missing")


@given(json_values)
def test_int_returns_int64_or_raises_param_error_for_any_json_value(value: object) -> None:
    try:
        result = Params({"n": value}).int("n")
    except ParamError as err:
        assert err.problem == "malformed"
        return
    if value is None or value == "":
        assert result is None
    else:
        assert isinstance(result, int) and not isinstance(result, bool)
        assert INT64_MIN <= result <= INT64_MAX


@given(st.integers())
def test_int_accepts_exactly_the_int64_range(value: int) -> None:
    p = Params({"n": value, "s": str(value)})
    if INT64_MIN <= value <= INT64_MAX:
        assert p.int("n") == value
        assert p.int("s") == value
    else:
        assert _error(lambda: p.int("n")).problem == "malformed"
        assert _error(lambda: p.int("s")).problem == "malformed"


# --- Params.bool ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, 1, "1", "true", "TRUE", " yes ", "On", "Yes"])
def test_bool_true_values(value: object) -> None:
    assert Params({"b": value}).bool("B", default=False) is True


@pytest.mark.parametrize(
    "value", [False, 0, "0", "false", "no", "off", "", "maybe", 2, -1, 1.0, [1], {"a": 1}, "y", "tru"]
)
def test_bool_anything_else_is_false(value: object) -> None:
    assert Params({"b": value}).bool("b", default=True) is False


def test_bool_missing_or_null_gives_the_default() -> None:
    p = Params({"n": None})
    assert p.bool("absent", default=True) is True
    assert p.bool("absent", default=False) is False
    assert p.bool("n", default=True) is True


@given(json_values, st.booleans())
def test_bool_never_raises(value: object, default: bool) -> None:
    assert isinstance(Params({"b": value}).bool("b", default=default), bool)


# --- Params.int_list --------------------------------------------------------------------------------------


def test_int_list_parses_csv_with_spaces() -> None:
    assert Params({"Lists": "1, 2,3"}).int_list("lists") == [1, 2, 3]


def test_int_list_skips_empty_csv_items() -> None:
    assert Params({"x": "1,,2,"}).int_list("x") == [1, 2]
    assert Params({"x": " ,1, ,"}).int_list("x") == [1]


def test_int_list_accepts_lists_of_ints_and_strings_and_single_ints() -> None:
    assert Params({"x": [3, "4", " 5 "]}).int_list("x") == [3, 4, 5]
    assert Params({"x": 9}).int_list("x") == [9]
    assert Params({"x": "9"}).int_list("x") == [9]


def test_int_list_deduplicates_preserving_first_seen_order() -> None:
    assert Params({"x": "3,1,3,2,1"}).int_list("x") == [3, 1, 2]


@pytest.mark.parametrize(
    "value", ["1,a", "0", "-1", "1,0", [1, "x"], [1, True], [[1]], True, {"a": 1}, "1.5", str(INT64_MAX + 1)]
)
def test_int_list_rejects_non_integer_or_non_positive_items(value: object) -> None:
    err = _error(lambda: Params({"x": value}).int_list("x"))
    assert (err.name, err.problem) == ("x", "malformed")


def test_int_list_treats_empty_after_skipping_as_missing() -> None:
    for value in (",,", " , ", [], ["", None], "", None):
        assert Params({"x": value}).int_list("x") is None
        assert _error(lambda v=value: Params({"x": v}).int_list("x", required=True)).problem == "missing"


def test_int_list_missing_key_is_none_or_missing_error_when_required() -> None:
    assert Params({}).int_list("x") is None
    err = _error(lambda: Params({}).int_list("EmailIDs", required=True))
    assert (err.name, err.problem) == ("emailids", "missing")


def test_int_list_rejects_more_than_max_items_distinct_values() -> None:
    p = Params({"x": "1,2,3,3,3"})
    assert p.int_list("x", max_items=3) == [1, 2, 3]
    assert _error(lambda: p.int_list("x", max_items=2)).problem == "malformed"


# --- Params.str_list --------------------------------------------------------------------------------------


def test_str_list_splits_csv_strips_and_drops_empties() -> None:
    assert Params({"Fields": " EmailID, Subject,,"}).str_list("fields") == ["EmailID", "Subject"]


def test_str_list_accepts_lists_of_strings() -> None:
    assert Params({"x": ["a", " b ", "", 7]}).str_list("x") == ["a", "b", "7"]


def test_str_list_missing_or_empty_is_none_or_missing_error_when_required() -> None:
    assert Params({}).str_list("x") is None
    assert Params({"x": " , "}).str_list("x") is None
    assert _error(lambda: Params({"x": ","}).str_list("x", required=True)).problem == "missing"


@pytest.mark.parametrize("value", [5, True, {"a": "b"}, ["a", {"b": 1}], ["a", ["b"]], [False]])
def test_str_list_rejects_non_string_shapes(value: object) -> None:
    assert _error(lambda: Params({"x": value}).str_list("x")).problem == "malformed"


# --- Params.obj -------------------------------------------------------------------------------------------


def test_obj_returns_dicts_with_lowercased_keys() -> None:
    assert Params({"MappedFields": {"FIELD1": "EmailAddress"}}).obj("mappedfields") == {"field1": "EmailAddress"}


def test_obj_accepts_a_json_string_holding_an_object() -> None:
    assert Params({"Options": '{"OptInMode":"Double","Inner":{"A":1}}'}).obj("options") == {
        "optinmode": "Double",
        "inner": {"a": 1},
    }


def test_obj_missing_is_none() -> None:
    assert Params({}).obj("x") is None
    assert Params({"x": ""}).obj("x") is None


@pytest.mark.parametrize("value", ["[1]", "not json", "1", 5, True, ["a"], '{"a":NaN}'])
def test_obj_rejects_non_objects(value: object) -> None:
    err = _error(lambda: Params({"x": value}).obj("x"))
    assert (err.name, err.problem) == ("x", "malformed")


# --- Params.json_str --------------------------------------------------------------------------------------


def test_json_str_parses_the_string_and_keeps_inner_key_case() -> None:
    rules = [[{"type": "fields", "field_id": 3, "Operator": "is", "value": "X"}]]
    assert Params({"RulesJson": json.dumps(rules)}).json_str("rulesjson") == rules


def test_json_str_missing_is_none() -> None:
    assert Params({}).json_str("rulesjson") is None
    assert Params({"rulesjson": ""}).json_str("rulesjson") is None


@pytest.mark.parametrize("value", ["[[", "nope", "{'a':1}", [1], {"a": 1}, 5, "[" * 40 + "]" * 40])
def test_json_str_rejects_bad_json_non_strings_and_deep_nesting(value: object) -> None:
    err = _error(lambda: Params({"RulesJSON": value}).json_str("rulesjson"))
    assert (err.name, err.problem) == ("rulesjson", "malformed")
