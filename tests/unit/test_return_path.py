"""Signed return paths: round trips in any case, and forged or altered addresses refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.return_path import InvalidReturnPath, ReturnPaths, bounce_domain

IDS = st.integers(min_value=1, max_value=2**63 - 1)


@given(IDS, IDS)
def test_an_address_names_its_recipient_in_any_case(campaign_id: int, recipient_id: int) -> None:
    paths = ReturnPaths("bounces.example.com", "secret")
    address = paths.address(campaign_id, recipient_id)
    local = address.split("@")[0]
    assert len(local) <= 64
    for form in (address, address.upper(), f"<{address}>", address.replace("example.com", "EXAMPLE.com.")):
        found = paths.verify_address(form)
        assert (found.campaign_id, found.recipient_id) == (campaign_id, recipient_id)


@given(IDS, IDS, st.integers(min_value=0, max_value=40), st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"))
def test_an_altered_token_is_refused(campaign_id: int, recipient_id: int, position: int, letter: str) -> None:
    paths = ReturnPaths("bounces.example.com", "secret")
    token = paths.token(campaign_id, recipient_id)
    position %= len(token)
    if token[position] == letter:
        return
    altered = token[:position] + letter + token[position + 1 :]
    with pytest.raises(InvalidReturnPath):
        paths.verify_token(altered)


def test_another_secret_or_domain_or_shape_is_refused() -> None:
    paths = ReturnPaths("bounces.example.com", "secret")
    address = paths.address(5, 7)
    with pytest.raises(InvalidReturnPath):
        ReturnPaths("bounces.example.com", "other").verify_address(address)
    with pytest.raises(InvalidReturnPath):
        paths.verify_address(address.replace("bounces.example.com", "example.org"))
    for bad in ("", "postmaster@bounces.example.com", "b-@bounces.example.com", "b-!!!@bounces.example.com"):
        with pytest.raises(InvalidReturnPath):
            paths.verify_address(bad)
    with pytest.raises(ValueError):
        paths.address(0, 7)


def test_the_bounce_domain_defaults_to_the_public_host() -> None:
    assert bounce_domain("", "https://Mail.Example.org:8443/herald") == "mail.example.org"
    assert bounce_domain("Bounces.Example.com.", "https://mail.example.org") == "bounces.example.com"
    assert bounce_domain("", "") == "localhost"


def test_a_token_spelt_with_other_unused_bits_is_refused() -> None:
    paths = ReturnPaths("bounces.example.com", "secret")
    token = paths.token(5, 7)
    # Every letter that decodes to the same bytes in the last position (its unused low bits differ).
    same_bytes = [
        letter
        for letter in "abcdefghijklmnopqrstuvwxyz234567"
        if letter != token[-1] and _decoded(token[:-1] + letter) == _decoded(token)
    ]
    assert same_bytes, "the token's last letter carries unused bits"
    for letter in same_bytes:
        with pytest.raises(InvalidReturnPath):
            paths.verify_token(token[:-1] + letter)


def _decoded(token: str) -> bytes:
    return base64.b32decode(token.upper() + "=" * (-len(token) % 8))
