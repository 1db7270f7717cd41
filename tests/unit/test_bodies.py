"""Unit tests for translator.bodies (urlencoded forms) and the request id the translator keeps or replaces."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from translator.app import request_id_of
from translator.bodies import MAX_FORM_FIELDS, UnreadableBody, urlencoded_fields


def test_urlencoded_fields_decode_percent_escapes_and_plus_signs() -> None:
    assert urlencoded_fields(b"Command=tag.create&Tag=a+b%2Bc&Empty=&Flag", None) == [
        ("Command", "tag.create"),
        ("Tag", "a b+c"),
        ("Empty", ""),
        ("Flag", ""),
    ]


def test_urlencoded_fields_keep_the_first_1000_fields() -> None:
    body = b"&".join(b"f%d=%d" % (i, i) for i in range(5000))
    fields = urlencoded_fields(body, None)
    assert len(fields) == MAX_FORM_FIELDS == 1000
    assert fields[0] == ("f0", "0") and fields[-1] == ("f999", "999")


def test_urlencoded_fields_use_the_declared_charset() -> None:
    assert urlencoded_fields(b"Name=Zo%EB", "iso-8859-1") == [("Name", "Zoë")]
    assert urlencoded_fields(b"Name=Zo%C3%AB", None) == [("Name", "Zoë")]


def test_urlencoded_bytes_invalid_in_the_charset_become_replacement_characters() -> None:
    assert urlencoded_fields(b"Tag=a%FFb&Raw=\xff", None) == [("Tag", "a\ufffdb"), ("Raw", "\ufffd")]


@pytest.mark.parametrize("charset", ["bogus-charset", "hex", "undefined"])
def test_urlencoded_fields_in_an_unknown_charset_are_unreadable(charset: str) -> None:
    with pytest.raises(UnreadableBody):
        urlencoded_fields(b"Command=tags.get", charset)


@given(st.binary(max_size=300), st.sampled_from([None, "utf-8", "latin-1", "utf-16", "utf-7", "ascii"]))
def test_urlencoded_fields_read_any_bytes_in_a_known_charset(body: bytes, charset: str | None) -> None:
    fields = urlencoded_fields(body, charset)
    assert len(fields) <= MAX_FORM_FIELDS
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in fields)


@pytest.mark.parametrize("given_id", ["abc-123", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "x" * 128, "a/b:c=d"])
def test_a_printable_ascii_request_id_is_kept(given_id: str) -> None:
    assert request_id_of(make_mocked_request("POST", "/api.php", headers={"X-Request-Id": given_id})) == given_id


@pytest.mark.parametrize("given_id", ["café", "A\tB", "x" * 129, "two words", "\x01", ""])
def test_any_other_request_id_is_replaced_by_a_new_one(given_id: str) -> None:
    replaced = request_id_of(make_mocked_request("POST", "/api.php", headers={"X-Request-Id": given_id}))
    assert replaced != given_id and len(replaced) == 16 and replaced.isascii() and replaced.isalnum()
