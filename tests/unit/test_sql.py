"""Pure tests of services.common.sql: LIKE patterns match their text literally, id lists are one array parameter."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from services.common import sql


def _like_matches(pattern: str, text: str) -> bool:
    """A reference LIKE with backslash escapes, case-insensitive like ILIKE."""
    regex, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            regex.append(re.escape(next(chars)))
        elif char == "%":
            regex.append(".*")
        elif char == "_":
            regex.append(".")
        else:
            regex.append(re.escape(char))
    return re.fullmatch("".join(regex), text, flags=re.DOTALL | re.IGNORECASE) is not None


@pytest.mark.parametrize(
    ("search", "escaped"),
    [("50%", "50\\%"), ("a_b", "a\\_b"), ("back\\slash", "back\\\\slash"), ("plain", "plain"), ("\\%", "\\\\\\%")],
)
def test_like_wildcards_and_escape_character_are_escaped(search: str, escaped: str) -> None:
    assert sql.escape_like(search) == escaped


def test_percent_in_search_matches_only_a_literal_percent() -> None:
    pattern = sql.contains_pattern("50%")
    assert _like_matches(pattern, "Save 50% today")
    assert not _like_matches(pattern, "Save 500 today")


def test_underscore_in_search_matches_only_a_literal_underscore() -> None:
    pattern = sql.contains_pattern("a_b")
    assert _like_matches(pattern, "x a_b y")
    assert not _like_matches(pattern, "x aXb y")


@given(st.text(alphabet="ab%_\\ ", max_size=8), st.text(alphabet="ab%_\\ ", max_size=12))
def test_search_pattern_matches_exactly_names_containing_the_search(search: str, name: str) -> None:
    assert _like_matches(sql.contains_pattern(search), name) == (search.lower() in name.lower())


def test_an_id_list_is_one_bigint_array_parameter_whatever_its_length() -> None:
    column = sa.column("campaign_id", sa.BigInteger)
    for ids in ([1], list(range(1000))):
        compiled = (column == sa.any_(sql.id_array(ids))).compile(dialect=postgresql.psycopg.dialect())
        assert list(compiled.params.values()) == [ids]
        assert str(compiled).count("%(") == 1
