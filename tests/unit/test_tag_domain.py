"""Pure tests of services.tag.domain: tag name rules and request checks."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError, ErrorKind
from services.tag import domain


def _field_reasons(call: object) -> list[tuple[str, str]]:
    assert callable(call)
    with pytest.raises(DomainError) as info:
        call()
    assert info.value.kind is ErrorKind.INVALID
    return [(v.field, v.reason) for v in info.value.violations]


# --- names ------------------------------------------------------------------------------------------------


def test_create_trims_the_name() -> None:
    assert domain.validate_new_tag_name("  summer-campaign \t") == "summer-campaign"


@pytest.mark.parametrize(
    "name",
    ["newsletter", "Summer Sale 2024", "summer_campaign", "a-b_c d", "Café", "Übersicht", "日本語", "हिन्दी"],
)
def test_letters_digits_spaces_hyphens_and_underscores_are_accepted(name: str) -> None:
    assert domain.validate_new_tag_name(name) == name


def test_a_decomposed_accent_is_accepted_and_stored_composed() -> None:
    decomposed = unicodedata.normalize("NFD", "Café")
    assert domain.validate_new_tag_name(decomposed) == "Café"


@pytest.mark.parametrize("name", ["sale!", "a/b", "50%", "tag.name", "a\tb", "line\nbreak", "emoji 🎉", "\u0301a"])
def test_other_characters_make_the_name_invalid(name: str) -> None:
    assert _field_reasons(lambda: domain.validate_new_tag_name(name)) == [("name", "TAG_NAME_INVALID")]


def test_an_empty_name_is_required() -> None:
    assert _field_reasons(lambda: domain.validate_new_tag_name("")) == [("name", "TAG_NAME_REQUIRED")]


@pytest.mark.parametrize("name", [" ", "   ", "\t\n", "\u00a0"])
def test_a_blank_name_is_empty_after_trimming(name: str) -> None:
    assert _field_reasons(lambda: domain.validate_new_tag_name(name)) == [("name", "TAG_NAME_EMPTY")]


def test_a_name_of_255_characters_is_accepted_and_256_is_invalid() -> None:
    assert domain.validate_new_tag_name("x" * 255) == "x" * 255
    assert _field_reasons(lambda: domain.validate_new_tag_name("x" * 256)) == [("name", "TAG_NAME_INVALID")]


def test_the_length_limit_applies_after_trimming() -> None:
    assert domain.validate_new_tag_name("  " + "x" * 255 + "  ") == "x" * 255


def test_names_differing_only_in_case_or_surrounding_space_share_a_key() -> None:
    assert domain.tag_name_key("Newsletter") == domain.tag_name_key("  NEWSLETTER ")
    assert domain.tag_name_key("Straße") == domain.tag_name_key("STRASSE")
    assert domain.tag_name_key("news") != domain.tag_name_key("news letter")


@given(st.text(alphabet=st.characters(categories=["Lu", "Ll", "Nd"]) | st.sampled_from(" -_"), max_size=300))
def test_a_name_is_valid_exactly_when_it_is_nonblank_and_short_enough(raw: str) -> None:
    name = domain.normalise_tag_name(raw)
    assert domain.is_valid_tag_name(name) == (0 < len(name) <= domain.MAX_TAG_NAME_LENGTH)


@given(st.text(max_size=50))
def test_normalising_a_name_twice_changes_nothing(raw: str) -> None:
    once = domain.normalise_tag_name(raw)
    assert domain.normalise_tag_name(once) == once


# --- requests ---------------------------------------------------------------------------------------------


def test_update_with_neither_tag_id_nor_name_reports_both() -> None:
    assert _field_reasons(lambda: domain.validate_rename(0, "")) == [
        ("tag_id", "TAG_ID_REQUIRED"),
        ("name", "TAG_NAME_REQUIRED"),
    ]


def test_update_reports_a_missing_tag_id_with_a_bad_name() -> None:
    assert _field_reasons(lambda: domain.validate_rename(-3, "bad!")) == [
        ("tag_id", "TAG_ID_REQUIRED"),
        ("name", "TAG_NAME_INVALID"),
    ]


def test_update_returns_the_trimmed_name() -> None:
    assert domain.validate_rename(7, " promo ") == "promo"


def test_delete_requires_tag_ids_and_drops_repeats() -> None:
    assert _field_reasons(lambda: domain.validate_tag_ids([])) == [("tag_ids", "TAG_IDS_REQUIRED")]
    assert domain.validate_tag_ids([3, 1, 3]) == [3, 1]


def test_assignment_without_tag_id_and_campaign_ids_reports_both() -> None:
    assert _field_reasons(lambda: domain.validate_assignment(0, [])) == [
        ("tag_id", "TAG_ID_REQUIRED"),
        ("campaign_ids", "CAMPAIGN_IDS_REQUIRED"),
    ]


def test_assignment_with_a_non_positive_campaign_id_is_invalid() -> None:
    assert _field_reasons(lambda: domain.validate_assignment(5, [1, 0])) == [
        ("campaign_ids", "CAMPAIGN_IDS_INVALID")
    ]


def test_assignment_returns_distinct_campaign_ids_in_request_order() -> None:
    assert domain.validate_assignment(5, [9, 2, 9, 4]) == [9, 2, 4]


# --- errors -----------------------------------------------------------------------------------------------


def test_tag_not_found_names_the_tag_id_field() -> None:
    error = domain.tag_not_found(12)
    assert (error.kind, error.reason) == (ErrorKind.NOT_FOUND, "TAG_NOT_FOUND")
    assert [(v.field, v.reason) for v in error.violations] == [("tag_id", "TAG_NOT_FOUND")]


def test_a_duplicate_name_is_a_conflict_on_the_name_field() -> None:
    error = domain.tag_already_exists("news")
    assert (error.kind, error.reason) == (ErrorKind.CONFLICT, "TAG_ALREADY_EXISTS")
    assert [(v.field, v.reason) for v in error.violations] == [("name", "TAG_ALREADY_EXISTS")]


def test_missing_campaigns_are_one_violation_naming_every_id() -> None:
    error = domain.campaigns_not_found([4, 9])
    assert (error.kind, error.reason) == (ErrorKind.NOT_FOUND, "CAMPAIGN_NOT_FOUND")
    assert [(v.field, v.reason) for v in error.violations] == [("campaign_ids", "CAMPAIGN_NOT_FOUND")]
    assert "4" in error.violations[0].description and "9" in error.violations[0].description
    assert error.metadata == {"campaign_ids": "4,9"}


def test_ids_named_in_downstream_descriptions_are_picked_from_the_requested_ones() -> None:
    texts = ["campaign 12 not found", "campaign 7 not found"]
    assert domain.ids_named_in(texts, [7, 8, 12, 1]) == [7, 12]


# --- archive template -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/archive-template",
        "http://example.com",
        "HTTPS://Example.COM:8443/t.html?x=1#top",
        "http://127.0.0.1:8000/template.html",
        "http://[2001:db8::1]/t",
        "https://example.com/" + "a" * (domain.MAX_TEMPLATE_URL_LENGTH - len("https://example.com/")),
    ],
)
def test_an_absolute_http_or_https_template_url_is_accepted(url: str) -> None:
    assert domain.validate_archive_template(3, url) == url


def test_an_empty_template_url_clears_the_template() -> None:
    assert domain.validate_archive_template(3, "") == ""


@pytest.mark.parametrize(
    "url",
    [
        "example.com/template",
        "/archive-template",
        "ftp://example.com/template",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://",
        "https:///path-only",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://[::1/",
        "https://exa mple.com/",
        "https://example.com/\nSet-Cookie: x",
        " https://example.com/",
        "https://example.com/" + "a" * domain.MAX_TEMPLATE_URL_LENGTH,
    ],
)
def test_anything_but_an_absolute_http_url_is_an_invalid_template_url(url: str) -> None:
    assert _field_reasons(lambda: domain.validate_archive_template(3, url)) == [
        ("archive_template_url", "TEMPLATE_URL_INVALID")
    ]


def test_a_template_without_tag_id_and_with_a_bad_url_reports_both() -> None:
    assert _field_reasons(lambda: domain.validate_archive_template(0, "nope")) == [
        ("tag_id", "TAG_ID_REQUIRED"),
        ("archive_template_url", "TEMPLATE_URL_INVALID"),
    ]


@given(st.text(max_size=80))
def test_every_accepted_template_url_has_an_http_scheme_and_a_host(url: str) -> None:
    if domain.is_valid_template_url(url):
        scheme, _, rest = url.partition("://")
        assert scheme.lower() in ("http", "https") and rest
