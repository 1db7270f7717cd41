"""Signed events: an HMAC in an event's JSON, so that a consumer acts only on what a Herald service published.

NATS credentials keep strangers off the bus, but not everyone who holds them (an operator's tool, a
compromised neighbour on a shared NATS) should be able to make Herald send mail. Events whose
consumer acts on them as orders (delivery queues a campaign on `campaign.send_requested`) therefore
carry a `signature` field: HMAC-SHA256 over the event's namespace and the rest of the event, in
canonical JSON (sorted keys, no spaces, ASCII), base64url. The key is derived from the principal-token
secret for one event type, so a signature of one type never verifies as another's, and whoever may
sign already holds the secret that mints any principal token: signing grants no one anything new.

The signature is a field of the event (`signature` in its proto message) rather than a NATS header,
so it survives the outbox, which stores payloads only; consumers that do not check it ignore it.
It is over the JSON object as received, unknown fields included, so it covers the whole request
whatever version of the message wrote it. services/common/events.py signs on encoding and verifies
before decoding every event type marked signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

SIGNATURE_FIELD = "signature"


class UnsignedEvent(Exception):
    """The event carries no signature, or one that this install's secret did not make."""


class EventSigner:
    """Signs and verifies one event type of one install (its NATS namespace) with a key from the token secret."""

    def __init__(self, token_secret: str, event: str, namespace: str) -> None:
        label = f"herald signed event v1: {event}".encode()
        self._key = hmac.new(token_secret.encode(), label, hashlib.sha256).digest()
        self._namespace = namespace.encode()

    def signed(self, payload: bytes) -> bytes:
        """The event (a JSON object) with its signature added."""
        body = _object(payload)
        body.pop(SIGNATURE_FIELD, None)
        signed = {**body, SIGNATURE_FIELD: self._signature(body)}
        return json.dumps(signed, ensure_ascii=False, separators=(",", ":")).encode()

    def verify(self, payload: bytes) -> None:
        """Returns when the event is signed by this install; raises UnsignedEvent otherwise."""
        try:
            body = _object(payload)
        except ValueError as exc:
            raise UnsignedEvent(str(exc)) from exc
        given = body.pop(SIGNATURE_FIELD, None)
        if not isinstance(given, str) or not given:
            raise UnsignedEvent("the event carries no signature")
        if not hmac.compare_digest(given.encode(), self._signature(body).encode()):
            raise UnsignedEvent("the signature does not match (forged, altered, or signed with another secret)")

    def _signature(self, body: dict[str, Any]) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        digest = hmac.new(self._key, self._namespace + b"\n" + canonical, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _object(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body
