"""POST /webhooks/postmark: Postmark's bounce and spam-complaint webhooks, authenticated by a shared secret.

Postmark signs nothing; it sends HTTP basic auth credentials written into the webhook URL
(`https://herald:<secret>@host/webhooks/postmark`, Postmark's documented way), or custom headers
configured with the webhook. The secret (HERALD_POSTMARK_WEBHOOK_SECRET) is accepted as the basic
auth password (any user name) or as the `X-Herald-Webhook-Token` header, compared in constant time.
A missing or wrong secret answers 401, which Postmark retries for hours: events sent while the
secret was being changed are not lost.

The body is one record. The recipient is the `herald_token` metadata (Herald sends the
X-PM-Metadata-herald_token header). RecordType Bounce maps Postmark's bounce Type:
HardBounce and BadEmailAddress hint HARD; SoftBounce, Transient and DnsError hint SOFT; Blocked,
DMARCPolicy and Unknown leave the judgement to the classifier; SpamComplaint is a COMPLAINT; the other
types (auto-responders, address changes, Postmark's own deactivations, sending errors of its API ...)
say nothing about the address and are ignored. RecordType SpamComplaint is a COMPLAINT. `Details`
holds the remote server's reply, `Description` Postmark's generic text. The event key is
`postmark:<ID>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import structlog
from aiohttp import web
from herald.delivery.v1 import delivery_pb2

from services.common.config import Settings
from translator.webhooks._common import (
    Findings,
    ProviderWebhook,
    Recipients,
    Refused,
    bounce_report,
    content_key,
    event_key,
    load_json,
    parse_instant,
    read_body,
    text_of,
)

log = structlog.get_logger()

PROVIDER = "postmark"
TOKEN_HEADER = "X-Herald-Webhook-Token"
TOKEN_METADATA = "herald_token"
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="herald-webhooks", charset="UTF-8"'}
# Postmark's bounce types that are bounces of the address, with the hint each gives the classifier.
BOUNCE_TYPES: dict[str, delivery_pb2.BounceKind.ValueType] = {
    "HardBounce": delivery_pb2.BOUNCE_KIND_HARD,
    "BadEmailAddress": delivery_pb2.BOUNCE_KIND_HARD,
    "SoftBounce": delivery_pb2.BOUNCE_KIND_SOFT,
    "Transient": delivery_pb2.BOUNCE_KIND_SOFT,
    "DnsError": delivery_pb2.BOUNCE_KIND_SOFT,
    "Blocked": delivery_pb2.BOUNCE_KIND_UNSPECIFIED,
    "DMARCPolicy": delivery_pb2.BOUNCE_KIND_UNSPECIFIED,
    "Unknown": delivery_pb2.BOUNCE_KIND_UNSPECIFIED,
    "SpamComplaint": delivery_pb2.BOUNCE_KIND_COMPLAINT,
}


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


class PostmarkSecret:
    """Checks the shared secret of a Postmark webhook call."""

    def __init__(self, secret: str) -> None:
        self._digest = _digest(secret.encode())

    @classmethod
    def from_settings(cls, settings: Settings) -> PostmarkSecret | None:
        return cls(settings.postmark_webhook_secret) if settings.postmark_webhook_secret else None

    def check(self, authorization: str | None, token: str | None) -> None:
        """Returns when the basic auth password or the token header is the secret; Refused(401) otherwise."""
        offered = []
        if token is not None:
            offered.append(token.strip().encode("utf-8", "surrogateescape"))
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            offered.append(decoded.partition(b":")[2])
        # Every offer is compared (digests of equal length, in constant time), so the answer's timing
        # tells nothing about the secret.
        matched = False
        for candidate in offered:
            matched |= hmac.compare_digest(_digest(candidate), self._digest)
        if not matched:
            raise Refused(401, "webhook credentials missing or wrong", headers=_CHALLENGE)


def findings_of(record: object, recipients: Recipients) -> Findings:
    """The report of one authenticated record (none for what is no bounce or complaint)."""
    if not isinstance(record, dict):
        raise Refused(400, "body is not a JSON object")
    record_type = record.get("RecordType")
    bounce_type = record.get("Type")
    if record_type == "SpamComplaint":
        hint = delivery_pb2.BOUNCE_KIND_COMPLAINT
    elif record_type == "Bounce" and isinstance(bounce_type, str) and bounce_type in BOUNCE_TYPES:
        hint = BOUNCE_TYPES[bounce_type]
    else:
        if record_type == "Bounce":
            log.info("Postmark bounce type ignored", type=text_of(bounce_type, 60))
        return Findings(ignored=1)
    metadata = record.get("Metadata")
    recipient = recipients.by_token(metadata.get(TOKEN_METADATA) if isinstance(metadata, dict) else None)
    if recipient is None:
        return Findings(unverified=1)
    record_id = record.get("ID")
    valid_id = (isinstance(record_id, int) and not isinstance(record_id, bool)) or (
        isinstance(record_id, str) and record_id.isdigit()
    )
    key = event_key(PROVIDER, record_id) if valid_id else content_key(PROVIDER, record)
    details = text_of(record.get("Details"))
    complaint = hint == delivery_pb2.BOUNCE_KIND_COMPLAINT
    report = bounce_report(
        recipient,
        source=delivery_pb2.BOUNCE_SOURCE_POSTMARK,
        key=key,
        kind_hint=hint,
        diagnostic=details
        or text_of(record.get("Description"))
        or ("Postmark spam complaint" if complaint else ""),
        occurred=parse_instant(record.get("BouncedAt")),
    )
    return Findings(reports=[report])


class PostmarkWebhook(ProviderWebhook[PostmarkSecret]):
    """The handler of POST /webhooks/postmark; without a secret it is off (404)."""

    provider = PROVIDER

    async def findings(self, request: web.Request, check: PostmarkSecret) -> Findings | web.Response:
        # The secret first: an unauthenticated caller gets no further, not even its body read.
        check.check(request.headers.get("Authorization"), request.headers.get(TOKEN_HEADER))
        body = await read_body(request, self._max_body)
        return findings_of(load_json(body), self._recipients)
