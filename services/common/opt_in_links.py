"""Signed confirm and reject links of a double opt-in confirmation email (`%Link:Confirm%`, `%Link:Reject%`).

Delivery signs them when it renders the email; the translator's public endpoints verify them
(translator/tracking.py). A token is base64url of

    version (1 byte) | action (1 byte) | list id, subscriber id (LEB128 varints) | HMAC-SHA256 tag (16 bytes)

The key is derived from the token secret for this purpose only, so neither a tracking token nor any
other signed value of Herald's verifies as an opt-in link, and a confirm token is no reject token.
Subscriber ids are never reused, so a link stays about the one subscription it was sent for; the
links are idempotent, so they need no nonce and no expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal

from services.common import varint

OptInAction = Literal["confirm", "reject"]

VERSION = 1
_ACTION_CODES: dict[OptInAction, int] = {"confirm": 1, "reject": 2}
_ACTIONS_BY_CODE: dict[int, OptInAction] = {code: action for action, code in _ACTION_CODES.items()}
TAG_BYTES = 16
_MAX_ID = 2**63 - 1
MAX_TOKEN_LENGTH = 64
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_KEY_LABEL = b"herald opt-in link v1"


class InvalidOptInToken(ValueError):
    """The token is malformed, of an unknown version or action, or its signature does not match."""


@dataclass(frozen=True)
class OptInSubscription:
    """What a verified link is about: the action and one subscriber of one list."""

    action: OptInAction
    list_id: int
    subscriber_id: int


def opt_in_key(secret: str) -> bytes:
    """The HMAC key of opt-in links, derived from the token secret."""
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]


def sign_opt_in(action: OptInAction, list_id: int, subscriber_id: int, *, key: bytes) -> str:
    """The token of one subscriber's confirm or reject link."""
    if action not in _ACTION_CODES:
        raise ValueError(f"unknown opt-in action {action!r}")
    if not (0 < list_id <= _MAX_ID and 0 < subscriber_id <= _MAX_ID):
        raise ValueError("an opt-in link needs a list id and a subscriber id")
    body = bytes((VERSION, _ACTION_CODES[action])) + varint.encode(list_id) + varint.encode(subscriber_id)
    return base64.urlsafe_b64encode(body + _tag(key, body)).rstrip(b"=").decode("ascii")


def verify_opt_in(token: str, *, key: bytes) -> OptInSubscription:
    """The subscription a token this key signed is about, or InvalidOptInToken."""
    if not 0 < len(token) <= MAX_TOKEN_LENGTH or not _TOKEN_ALPHABET.fullmatch(token) or len(token) % 4 == 1:
        raise InvalidOptInToken("not an opt-in token")
    data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if len(data) < 4 + TAG_BYTES:
        raise InvalidOptInToken("token too short")
    body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    # The signature is checked before anything in the body is believed.
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise InvalidOptInToken("bad signature")
    if body[0] != VERSION:
        raise InvalidOptInToken(f"unknown token version {body[0]}")
    action = _ACTIONS_BY_CODE.get(body[1])
    if action is None:
        raise InvalidOptInToken(f"unknown opt-in action {body[1]}")
    try:
        list_id, offset = varint.decode(body, 2)
        subscriber_id, offset = varint.decode(body, offset)
    except varint.MalformedVarint as exc:
        raise InvalidOptInToken(str(exc)) from None
    if offset != len(body) or not (0 < list_id <= _MAX_ID and 0 < subscriber_id <= _MAX_ID):
        raise InvalidOptInToken("malformed ids")
    return OptInSubscription(action, list_id, subscriber_id)


class OptInLinks:
    """The public confirm and reject URLs of one Herald installation, as delivery puts them into messages.

    They live under /t/ like the tracking links, so link tracking leaves them as they are."""

    def __init__(self, public_url: str, secret: str) -> None:
        self._base = public_url.rstrip("/")
        self._key = opt_in_key(secret)

    def confirm(self, list_id: int, subscriber_id: int) -> str:
        return f"{self._base}/t/confirm/{sign_opt_in('confirm', list_id, subscriber_id, key=self._key)}"

    def reject(self, list_id: int, subscriber_id: int) -> str:
        return f"{self._base}/t/reject/{sign_opt_in('reject', list_id, subscriber_id, key=self._key)}"
