"""POST /webhooks/sendgrid: SendGrid's Event Webhook, with its signature verified.

SendGrid signs `timestamp + raw body` with ECDSA P-256 over SHA-256 and sends the DER signature in
base64 (`X-Twilio-Email-Event-Webhook-Signature`) beside the Unix timestamp
(`X-Twilio-Email-Event-Webhook-Timestamp`); the verification key is the base64 DER public key shown
in SendGrid's Mail Settings (HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY; PEM is accepted too). A timestamp
more than HERALD_SENDGRID_WEBHOOK_MAX_AGE_SECONDS away from now is refused, so a captured request
cannot be replayed later.

The body is a JSON array of events. The recipient is the `herald_token` unique argument (Herald puts it
in the X-SMTPAPI header; SendGrid copies unique arguments into every event). Events:
- `bounce`: `type` "bounce" hints HARD, "blocked" leaves the judgement to the classifier (a block is
  mostly the sender's reputation or policy); `status` and `reason` are the codes and text;
- `spamreport`: a COMPLAINT;
- `dropped` is ignored: SendGrid never offered the message to the receiving server (its own
  suppression lists, an invalid address it knew of), so it tells nothing new about the address, and
  the bounce or complaint that put the address there was reported when it happened. `deferred` is
  ignored too: SendGrid still tries, and reports a bounce if it gives up. Everything else is ignored.
The event key is `sendgrid:<sg_event_id>`.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable

import structlog
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
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
)

log = structlog.get_logger()

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
TOKEN_FIELD = "herald_token"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HINTS = {"bounce": delivery_pb2.BOUNCE_KIND_HARD, "blocked": delivery_pb2.BOUNCE_KIND_UNSPECIFIED}


def public_key(text: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from base64 DER (as SendGrid shows it) or PEM; ValueError for anything else."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ValueError(f"HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA P-256 key")
    return key


class SendGridSignature:
    """Checks the Event Webhook's signature and the freshness of its timestamp."""

    def __init__(
        self, key: ec.EllipticCurvePublicKey, *, max_age_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self._max_age = max_age_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> SendGridSignature | None:
        if not settings.sendgrid_webhook_public_key.strip():
            return None
        return cls(
            public_key(settings.sendgrid_webhook_public_key),
            max_age_seconds=settings.sendgrid_webhook_max_age_seconds,
        )

    def verify(self, signature: str | None, timestamp: str | None, body: bytes) -> None:
        """Returns when `body` is what SendGrid signed at `timestamp`, recently; Refused otherwise."""
        if not signature or not timestamp:
            raise Refused(401, "signature headers missing")
        timestamp = timestamp.strip()
        if not _TIMESTAMP.fullmatch(timestamp):
            raise Refused(400, "malformed signature timestamp")
        if abs(self._clock() - int(timestamp)) > self._max_age:
            raise Refused(403, "signature timestamp outside the accepted window")
        try:
            der = base64.b64decode(signature.strip(), validate=True)
            self._key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise Refused(403, "signature does not verify") from None


def findings_of(events: object, recipients: Recipients) -> Findings:
    """The reports of one verified request's events."""
    if not isinstance(events, list):
        raise Refused(400, "body is not a JSON array of events")
    findings = Findings()
    for event in events:
        kind = event.get("event") if isinstance(event, dict) else None
        if not isinstance(event, dict) or kind not in ("bounce", "spamreport"):
            findings.ignored += 1
            continue
        recipient = recipients.by_token(event.get(TOKEN_FIELD))
        if recipient is None:
            findings.unverified += 1
            continue
        event_id = event.get("sg_event_id")
        key = (
            event_key(PROVIDER, event_id)
            if isinstance(event_id, str) and event_id
            else content_key(PROVIDER, event)
        )
        occurred = parse_instant(event.get("timestamp"))
        if kind == "spamreport":
            report = bounce_report(
                recipient,
                source=delivery_pb2.BOUNCE_SOURCE_SENDGRID,
                key=key,
                kind_hint=delivery_pb2.BOUNCE_KIND_COMPLAINT,
                diagnostic="SendGrid spam report",
                occurred=occurred,
            )
        else:
            bounce_type = event.get("type", "bounce")
            report = bounce_report(
                recipient,
                source=delivery_pb2.BOUNCE_SOURCE_SENDGRID,
                key=key,
                kind_hint=_HINTS.get(str(bounce_type), delivery_pb2.BOUNCE_KIND_UNSPECIFIED),
                status=event.get("status"),
                diagnostic=event.get("reason"),
                occurred=occurred,
            )
        findings.reports.append(report)
    return findings


class SendGridWebhook(ProviderWebhook[SendGridSignature]):
    """The handler of POST /webhooks/sendgrid; without a verification key it is off (404)."""

    provider = PROVIDER

    async def findings(self, request: web.Request, check: SendGridSignature) -> Findings | web.Response:
        body = await read_body(request, self._max_body)
        check.verify(request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER), body)
        return findings_of(load_json(body), self._recipients)
