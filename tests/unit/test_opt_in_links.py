"""Opt-in link tokens: they round-trip, stay URL-safe, keep confirm apart from reject, and refuse every forgery."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.opt_in_links import (
    MAX_TOKEN_LENGTH,
    InvalidOptInToken,
    OptInLinks,
    OptInSubscription,
    opt_in_key,
    sign_opt_in,
    verify_opt_in,
)
from services.common.tracking import sign_tracking, tracking_key

KEY = opt_in_key("test-secret")
_ids = st.integers(min_value=1, max_value=2**63 - 1)


@given(list_id=_ids, subscriber_id=_ids, action=st.sampled_from(["confirm", "reject"]))
def test_a_token_round_trips_and_stays_short(list_id: int, subscriber_id: int, action: str) -> None:
    token = sign_opt_in(action, list_id, subscriber_id, key=KEY)  # type: ignore[arg-type]
    assert len(token) <= MAX_TOKEN_LENGTH
    assert verify_opt_in(token, key=KEY) == OptInSubscription(action, list_id, subscriber_id)  # type: ignore[arg-type]


def test_a_token_of_another_secret_does_not_verify() -> None:
    token = sign_opt_in("confirm", 3, 42, key=opt_in_key("another-secret"))
    with pytest.raises(InvalidOptInToken):
        verify_opt_in(token, key=KEY)


def test_changing_the_action_or_an_id_breaks_the_signature() -> None:
    raw = bytearray(base64.urlsafe_b64decode(sign_opt_in("confirm", 3, 42, key=KEY) + "=="))
    for index in (1, 2, 3):  # the action, the list id, the subscriber id
        forged = bytearray(raw)
        forged[index] ^= 0x01
        token = base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode()
        with pytest.raises(InvalidOptInToken):
            verify_opt_in(token, key=KEY)


def test_a_tracking_token_is_no_opt_in_token() -> None:
    tracking = sign_tracking("unsubscribe", 1, 2, 3, 42, key=tracking_key("test-secret"))
    with pytest.raises(InvalidOptInToken):
        verify_opt_in(tracking, key=KEY)


@given(st.text(max_size=80))
def test_any_other_text_is_refused_cleanly(text: str) -> None:
    try:
        verify_opt_in(text, key=KEY)
    except InvalidOptInToken:
        pass


def test_links_live_under_the_tracking_prefix() -> None:
    links = OptInLinks("https://herald.example/", "test-secret")
    confirm = links.confirm(3, 42)
    assert confirm.startswith("https://herald.example/t/confirm/")
    assert verify_opt_in(confirm.rsplit("/", 1)[1], key=KEY).action == "confirm"
    assert links.reject(3, 42).startswith("https://herald.example/t/reject/")
