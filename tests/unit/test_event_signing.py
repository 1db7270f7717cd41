"""Signed events: only the install's own secret, for the same event type and namespace, makes a signature that verifies."""

from __future__ import annotations

import json

import pytest

from services.common.event_signing import EventSigner, UnsignedEvent

SECRET = "s" * 48
REQUEST = json.dumps(
    {
        "campaign_id": 7,
        "owner_user_id": 3,
        "name": "Grüße",
        "targeting": {"included": [{"list_id": 1, "segment_id": 0}], "rules_bundle": {"weight": 1.5}},
        "occurrence": 1,
    }
).encode()


def signer(secret: str = SECRET, event: str = "campaign.send_requested", namespace: str = "herald") -> EventSigner:
    return EventSigner(secret, event, namespace)


def test_a_signed_event_verifies_and_keeps_its_fields() -> None:
    signed = signer().signed(REQUEST)
    signer().verify(signed)
    body = json.loads(signed)
    assert body.pop("signature")
    assert body == json.loads(REQUEST)


def test_signing_again_replaces_the_signature() -> None:
    assert signer().signed(signer().signed(REQUEST)) == signer().signed(REQUEST)


def test_an_event_without_a_signature_is_refused() -> None:
    with pytest.raises(UnsignedEvent, match="no signature"):
        signer().verify(REQUEST)


@pytest.mark.parametrize(
    "change",
    [
        {"campaign_id": 8},
        {"owner_user_id": 4},
        {"targeting": {"included": [{"list_id": 2, "segment_id": 0}]}},
        {"occurrence": 2},
        {"extra": True},
    ],
)
def test_a_changed_field_breaks_the_signature(change: dict[str, object]) -> None:
    body = json.loads(signer().signed(REQUEST))
    body.update(change)
    with pytest.raises(UnsignedEvent, match="does not match"):
        signer().verify(json.dumps(body).encode())


@pytest.mark.parametrize(
    "other",
    [signer(secret="t" * 48), signer(event="campaign.status_changed"), signer(namespace="other")],
    ids=["another secret", "another event type", "another namespace"],
)
def test_a_signature_made_elsewhere_is_refused(other: EventSigner) -> None:
    with pytest.raises(UnsignedEvent):
        signer().verify(other.signed(REQUEST))


def test_key_order_and_spacing_do_not_matter() -> None:
    body = json.loads(signer().signed(REQUEST))
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2, ensure_ascii=False).encode()
    signer().verify(reordered)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'{"signature": 5}', b"[" * 100_000])
def test_what_is_not_a_signed_object_is_refused(payload: bytes) -> None:
    with pytest.raises(UnsignedEvent):
        signer().verify(payload)
