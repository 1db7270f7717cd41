"""Signed return paths (VERP): the envelope sender of every message names its campaign and recipient.

Delivery sends each message with MAIL FROM `b-<token>@<bounce domain>`; a bounce comes back to that
address, so the bounce receiver knows whom it is about without guessing from the report's body, and a
provider webhook that echoes the address (or the token) does too. The token is

    base32 (lowercase, unpadded) of: version (1 byte) | campaign id, recipient id (LEB128 varints)
    | HMAC-SHA256 tag (first 10 bytes)

Base32 because mail systems may change the case of a local part (RFC 5321 lets a server treat it as
case-insensitive): the token decodes whatever case it comes back in. With 63-bit ids the local part
stays under 64 characters (RFC 5321 §4.5.3.1.1). The key is derived from the principal-token secret
for this one purpose, so no other signed value of Herald verifies as a return path, and a forged or
altered address is refused before anything in it is believed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.common import varint

VERSION = 1
TAG_BYTES = 10
PREFIX = "b-"
_MAX_ID = 2**63 - 1
_KEY_LABEL = b"herald return path v1"
_TOKEN = re.compile(r"[a-z2-7]{16,60}")


class InvalidReturnPath(ValueError):
    """The address is not a return path this key signed (malformed, another version, or a bad tag)."""


@dataclass(frozen=True)
class BouncedRecipient:
    """Whom a return path stands for: one recipient of one campaign."""

    campaign_id: int
    recipient_id: int


def return_path_key(secret: str) -> bytes:
    """The HMAC key of return paths, derived from the token secret."""
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def bounce_domain(configured: str, public_url: str) -> str:
    """HERALD_BOUNCE_DOMAIN, or the host of the public URL ("localhost" when it names none)."""
    domain = configured.strip().rstrip(".").lower()
    if domain:
        return domain
    host = urlsplit(public_url).hostname or ""
    return host.rstrip(".").lower() or "localhost"


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    try:
        return varint.decode(data, offset)
    except varint.MalformedVarint as exc:
        raise InvalidReturnPath(str(exc)) from None


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]


def sign_token(campaign_id: int, recipient_id: int, *, key: bytes) -> str:
    """The token of one recipient: lowercase letters and digits 2-7."""
    if not (0 < campaign_id <= _MAX_ID and 0 < recipient_id <= _MAX_ID):
        raise ValueError("a return path needs a campaign id and a recipient id between 1 and 2**63 - 1")
    body = bytes((VERSION,)) + varint.encode(campaign_id) + varint.encode(recipient_id)
    return base64.b32encode(body + _tag(key, body)).decode("ascii").rstrip("=").lower()


def verify_token(token: str, *, key: bytes) -> BouncedRecipient:
    """The recipient of a token this key signed (any letter case), or InvalidReturnPath."""
    token = token.strip().lower()
    if not _TOKEN.fullmatch(token):
        raise InvalidReturnPath("not a return-path token")
    try:
        data = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        raise InvalidReturnPath("not base32") from None
    # Only the one spelling sign_token makes: a last letter whose unused bits differ decodes to the same
    # bytes, and would make one return path readable under several addresses.
    if base64.b32encode(data).decode("ascii").rstrip("=").lower() != token:
        raise InvalidReturnPath("not the canonical spelling of a token")
    if len(data) < 3 + TAG_BYTES:
        raise InvalidReturnPath("token too short")
    body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    # The signature is checked before anything else of the body is believed.
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise InvalidReturnPath("bad signature")
    if body[0] != VERSION:
        raise InvalidReturnPath(f"unknown version {body[0]}")
    campaign_id, offset = _read_varint(body, 1)
    recipient_id, offset = _read_varint(body, offset)
    if offset != len(body) or campaign_id == 0 or recipient_id == 0:
        raise InvalidReturnPath("malformed token")
    return BouncedRecipient(campaign_id, recipient_id)


class ReturnPaths:
    """The return paths of one installation: signing for delivery, verifying for the bounce receiver and webhooks."""

    def __init__(self, domain: str, secret: str) -> None:
        self.domain = domain.lower()
        self._key = return_path_key(secret)

    def address(self, campaign_id: int, recipient_id: int) -> str:
        """`b-<token>@<bounce domain>`, the MAIL FROM of the recipient's message."""
        return f"{PREFIX}{self.token(campaign_id, recipient_id)}@{self.domain}"

    def token(self, campaign_id: int, recipient_id: int) -> str:
        return sign_token(campaign_id, recipient_id, key=self._key)

    def verify_token(self, token: str) -> BouncedRecipient:
        return verify_token(token, key=self._key)

    def verify_address(self, address: str) -> BouncedRecipient:
        """The recipient of a return-path address at this installation's bounce domain, or InvalidReturnPath.

        Accepts the address with or without angle brackets, in any letter case."""
        address = address.strip().strip("<>").strip()
        local, at, domain = address.rpartition("@")
        if not at or domain.rstrip(".").lower() != self.domain:
            raise InvalidReturnPath("not at the bounce domain")
        if not local.lower().startswith(PREFIX):
            raise InvalidReturnPath("not a return-path address")
        return self.verify_token(local[len(PREFIX) :])
