"""Signed tracking tokens: what the open pixel, click links and unsubscribe link of one sent message stand for.

The web view and report-abuse links of a message (%Link:WebBrowser%, %Link:ReportAbuse%) are tokens of
the same form. Delivery signs them when it renders a message; the translator's public endpoints verify them.
A token is short and URL-safe: base64url of

    version (1 byte) | kind (1 byte) | campaign, recipient, list and subscriber ids (LEB128 varints)
    | HMAC-SHA256 tag (first 16 bytes)

The tag covers the bytes before it and, for a click, the target URL, which travels next to the
token in the link (`/t/c/<token>?u=<url>`) so that a reader can see where it leads: a click link
redirects only to the URL it was signed for, so it is no open redirect. Tokens do not expire
(mail is read months later); they stop verifying when the token secret changes.

The key is derived from the principal-token secret for this one purpose, so a tracking tag can
never be replayed as anything else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from services.common import varint

TrackingKind = Literal["open", "click", "unsubscribe", "view", "abuse"]

VERSION = 1
# view: the message's web view (%Link:WebBrowser%); abuse: its report-abuse link (%Link:ReportAbuse%).
_KIND_CODES: dict[str, int] = {"open": 1, "click": 2, "unsubscribe": 3, "view": 4, "abuse": 5}
_KINDS_BY_CODE: dict[int, TrackingKind] = {1: "open", 2: "click", 3: "unsubscribe", 4: "view", 5: "abuse"}
# The kinds whose tag also covers a value travelling beside the token: a click's target URL, and the email
# id of a web view (`/t/view/<token>?e=<email id>`: which of an A/B campaign's emails the recipient got).
_WITH_URL = frozenset({"click", "view"})
TAG_BYTES = 16
_MAX_ID = 2**63 - 1
# Four ids of at most 9 varint bytes, the header and the tag, base64url: far below this.
MAX_TOKEN_LENGTH = 96
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_KEY_LABEL = b"herald tracking token v1"


class InvalidTrackingToken(ValueError):
    """The token is malformed, of an unknown version, or its signature does not match."""


@dataclass(frozen=True)
class TrackedRecipient:
    """Whom a tracking token is about: one recipient of one campaign, and the list subscription they came from."""

    campaign_id: int
    recipient_id: int
    list_id: int
    subscriber_id: int


@dataclass(frozen=True)
class TrackingPayload:
    """A verified token: its kind, its recipient and, for a click, the URL it may redirect to."""

    kind: TrackingKind
    recipient: TrackedRecipient
    url: str = ""


def tracking_key(secret: str) -> bytes:
    """The HMAC key of tracking tokens, derived from the token secret."""
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    try:
        return varint.decode(data, offset)
    except varint.MalformedVarint as exc:
        raise InvalidTrackingToken(str(exc)) from None


def _tag(key: bytes, body: bytes, url: str) -> bytes:
    return hmac.new(key, body + url.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:TAG_BYTES]


def _check_ids(kind: str, recipient: TrackedRecipient) -> None:
    ids = (recipient.campaign_id, recipient.recipient_id, recipient.list_id, recipient.subscriber_id)
    if any(not 0 <= value <= _MAX_ID for value in ids):
        raise ValueError("tracking ids must be between 0 and 2**63 - 1")
    if recipient.campaign_id == 0 or recipient.recipient_id == 0:
        raise ValueError("a tracking token needs a campaign id and a recipient id")
    if kind in ("unsubscribe", "abuse") and (recipient.list_id == 0 or recipient.subscriber_id == 0):
        raise ValueError(f"an {kind} token needs the list id and the subscriber id")


def sign_tracking(
    kind: TrackingKind,
    campaign_id: int,
    recipient_id: int,
    list_id: int,
    subscriber_id: int,
    url: str = "",
    *,
    key: bytes,
) -> str:
    """A token for one recipient's open pixel, click link (with `url`) or unsubscribe link."""
    if kind not in _KIND_CODES:
        raise ValueError(f"unknown tracking kind {kind!r}")
    if (kind == "click" and not url) or (kind not in _WITH_URL and url):
        raise ValueError("a click token needs its URL (a view token may name its email); other tokens have none")
    recipient = TrackedRecipient(campaign_id, recipient_id, list_id, subscriber_id)
    _check_ids(kind, recipient)
    body = bytes((VERSION, _KIND_CODES[kind])) + b"".join(
        varint.encode(value) for value in (campaign_id, recipient_id, list_id, subscriber_id)
    )
    return base64.urlsafe_b64encode(body + _tag(key, body, url)).rstrip(b"=").decode("ascii")


def verify_tracking(token: str, *, key: bytes, url: str = "") -> TrackingPayload:
    """The payload of a token this key signed (with `url` for a click), or InvalidTrackingToken."""
    if not 0 < len(token) <= MAX_TOKEN_LENGTH or not _TOKEN_ALPHABET.fullmatch(token) or len(token) % 4 == 1:
        raise InvalidTrackingToken("not a tracking token")
    data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if len(data) < 2 + 4 + TAG_BYTES:
        raise InvalidTrackingToken("token too short")
    body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    if body[0] != VERSION:
        raise InvalidTrackingToken(f"unknown token version {body[0]}")
    # The signature is checked before anything else of the body is believed.
    if not hmac.compare_digest(tag, _tag(key, body, url)):
        raise InvalidTrackingToken("bad signature")
    kind = _KINDS_BY_CODE.get(body[1])
    if kind is None:
        raise InvalidTrackingToken(f"unknown token kind {body[1]}")
    ids = []
    offset = 2
    for _ in range(4):
        value, offset = _read_varint(body, offset)
        ids.append(value)
    if offset != len(body):
        raise InvalidTrackingToken("trailing bytes")
    recipient = TrackedRecipient(*ids)
    try:
        _check_ids(kind, recipient)
    except ValueError as exc:
        raise InvalidTrackingToken(str(exc)) from None
    if (kind == "click" and not url) or (kind not in _WITH_URL and url):
        raise InvalidTrackingToken("a click token needs its URL; only a view token may also have one")
    return TrackingPayload(kind=kind, recipient=recipient, url=url)


class TrackingLinks:
    """The public tracking URLs of one Herald installation, as delivery puts them into messages."""

    def __init__(self, public_url: str, secret: str) -> None:
        self._base = public_url.rstrip("/")
        self._key = tracking_key(secret)

    def _token(self, kind: TrackingKind, recipient: TrackedRecipient, url: str = "") -> str:
        return sign_tracking(
            kind,
            recipient.campaign_id,
            recipient.recipient_id,
            recipient.list_id,
            recipient.subscriber_id,
            url,
            key=self._key,
        )

    def open_pixel(self, recipient: TrackedRecipient) -> str:
        return f"{self._base}/t/o/{self._token('open', recipient)}.gif"

    def click(self, recipient: TrackedRecipient, url: str) -> str:
        """A tracked link to an http(s) URL (the endpoint redirects to nothing else)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError("only http and https links are tracked")
        return f"{self._base}/t/c/{self._token('click', recipient, url)}?u={quote(url, safe='')}"

    def unsubscribe(self, recipient: TrackedRecipient) -> str:
        """The List-Unsubscribe URL: GET shows a confirmation page, POST (RFC 8058 one-click) unsubscribes."""
        return f"{self._base}/t/u/{self._token('unsubscribe', recipient)}"

    def web_view(self, recipient: TrackedRecipient, email_id: int = 0) -> str:
        """The message's web view (%Link:WebBrowser%): the campaign's email (`email_id`, else its main one)
        rendered for this recipient."""
        if email_id <= 0:
            return f"{self._base}/t/view/{self._token('view', recipient)}"
        return f"{self._base}/t/view/{self._token('view', recipient, str(email_id))}?e={email_id}"

    def report_abuse(self, recipient: TrackedRecipient) -> str:
        """The report-abuse link (%Link:ReportAbuse%): GET asks for confirmation, POST records a complaint."""
        return f"{self._base}/t/abuse/{self._token('abuse', recipient)}"
