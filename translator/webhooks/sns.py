"""Amazon SNS messages posted over HTTP(S): their signature verified, and subscriptions confirmed.

SNS signs the documented fields of each message, in the documented order, as `name\\nvalue\\n` pairs:
Message, MessageId, Subject (when present), Timestamp, TopicArn, Type for a Notification; Message,
MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type for a (Un)SubscriptionConfirmation.
SignatureVersion 1 is RSA PKCS#1 v1.5 over SHA-1, version 2 the same over SHA-256. The signing
certificate is named by the message itself, so it is believed only when fetched over HTTPS (the
server's certificate verified) from an authority that matches HERALD_SNS_CERT_HOST_PATTERN
(sns.<region>.amazonaws.com by default), without redirects; it is cached until it expires, a day at
most. Subscription URLs follow the same host rules.

What shows a message is not genuine (wrong topic or host, an untrusted server, no certificate at
that URL, a bad signature) is Refused (403). Not reaching the certificate host at all is
SnsUnreachable (503): a genuine message must not be lost to a network failure, and SNS retries it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from yarl import URL

from services.common.config import Settings
from translator.webhooks._common import Refused

log = structlog.get_logger()

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS,
}
# Signed only when the message has it.
_OPTIONAL_FIELDS = frozenset({"Subject"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_PRINTABLE_URL = re.compile(r"[!-~]+")
_MAX_CERTIFICATE_BYTES = 64 * 1024
_MAX_CACHED_CERTIFICATES = 64
_CACHE_SECONDS = 24 * 3600.0
_FETCH_TIMEOUT_SECONDS = 10.0


class SnsUnreachable(Exception):
    """The SNS host did not answer (connection failure, timeout, a 5xx): try again later."""


@dataclass(frozen=True)
class SnsMessage:
    """A message whose signature verified."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    # SubscriptionConfirmation and UnsubscribeConfirmation only.
    subscribe_url: str = ""


def string_to_sign(document: dict[str, object]) -> bytes:
    """The bytes SNS signed for this message (Refused(400) when a signed field is missing or not text)."""
    kind = document.get("Type")
    if not isinstance(kind, str) or kind not in SIGNED_FIELDS:
        raise Refused(400, "not an SNS message of a known Type")
    lines = []
    for name in SIGNED_FIELDS[kind]:
        value = document.get(name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise Refused(400, f"SNS message without {name}")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


class SnsVerifier:
    """Verifies SNS messages and confirms subscriptions; one HTTPS client and certificate cache per translator."""

    def __init__(
        self,
        *,
        host_pattern: str,
        topics: frozenset[str] = frozenset(),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = re.compile(host_pattern, re.IGNORECASE)
        self._topics = topics
        self._ssl = ssl_context or ssl.create_default_context()
        self._session: aiohttp.ClientSession | None = None
        self._certificates: dict[str, tuple[float, rsa.RSAPublicKey]] = {}
        self._fetching: dict[str, asyncio.Future[rsa.RSAPublicKey]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SnsVerifier:
        """The verifier the settings describe; ValueError (the translator does not start) when they are wrong."""
        try:
            re.compile(settings.sns_cert_host_pattern)
        except re.error as exc:
            raise ValueError(f"HERALD_SNS_CERT_HOST_PATTERN is not a regular expression: {exc}") from exc
        # A CA file replaces the system's trust store for these fetches (it does not add to it).
        context = ssl.create_default_context(cafile=settings.sns_ca_file or None)
        topics = frozenset(arn.strip() for arn in settings.ses_topic_arns.split(",") if arn.strip())
        if not topics:
            log.warning("the SES webhook accepts SNS messages of any topic; set HERALD_SES_TOPIC_ARNS")
        return cls(host_pattern=settings.sns_cert_host_pattern, topics=topics, ssl_context=context)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def verify(self, document: object) -> SnsMessage:
        """The message, once its topic, certificate and signature check out; Refused or SnsUnreachable otherwise."""
        if not isinstance(document, dict):
            raise Refused(400, "not an SNS message")
        signed = string_to_sign(document)
        topic = document["TopicArn"]
        assert isinstance(topic, str)
        # The topic is checked first, unverified, only so that a message of another topic costs no fetch.
        if self._topics and topic not in self._topics:
            raise Refused(403, "SNS topic not accepted")
        algorithm = _HASHES.get(str(document.get("SignatureVersion")))
        if algorithm is None:
            raise Refused(400, "unknown SNS SignatureVersion")
        signature = _base64(document.get("Signature"))
        certificate_url = self.allowed_url(document.get("SigningCertURL"), what="SigningCertURL")
        if not urlsplit(certificate_url).path.endswith(".pem") or "?" in certificate_url:
            raise Refused(403, "SigningCertURL does not name a certificate")
        key = await self._signing_key(certificate_url)
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise Refused(403, "SNS signature does not verify") from None
        kind = str(document["Type"])
        return SnsMessage(
            type=kind,
            message_id=str(document["MessageId"]),
            topic_arn=topic,
            message=str(document["Message"]),
            subscribe_url=str(document.get("SubscribeURL", "")) if kind != NOTIFICATION else "",
        )

    async def confirm(self, message: SnsMessage) -> None:
        """Confirms a verified SubscriptionConfirmation by visiting its SubscribeURL (SnsUnreachable on failure)."""
        url = self.allowed_url(message.subscribe_url, what="SubscribeURL")
        try:
            async with self._client().get(URL(url, encoded=True), allow_redirects=False) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("SNS subscription not confirmed", topic=message.topic_arn, error=repr(exc))
            raise SnsUnreachable("the SNS host could not be reached") from exc
        if status != 200:
            log.error("SNS refused the subscription confirmation", topic=message.topic_arn, status=status)
            raise SnsUnreachable(f"SNS answered {status} to the confirmation")
        log.info("SNS subscription confirmed", topic=message.topic_arn)

    def allowed_url(self, value: object, *, what: str) -> str:
        """`value` when it is an https URL at an allowed SNS authority; Refused otherwise."""
        if not isinstance(value, str) or not value:
            raise Refused(400, f"SNS message without {what}")
        try:
            parts = urlsplit(value)
            port_valid = parts.port is None or parts.port > 0
        except ValueError:
            raise Refused(403, f"{what} is not a valid URL") from None
        if (
            not _PRINTABLE_URL.fullmatch(value)
            or parts.scheme != "https"
            or "@" in parts.netloc
            or parts.fragment
            or not port_valid
            or not self._host.fullmatch(parts.netloc)
        ):
            raise Refused(403, f"{what} is not an https URL at an SNS host")
        return value

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=20),
                timeout=aiohttp.ClientTimeout(total=_FETCH_TIMEOUT_SECONDS),
                trust_env=False,
            )
        return self._session

    async def _signing_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._certificates.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        # Messages arriving together wait for one fetch of their certificate.
        pending = self._fetching.get(url)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_key(url))
            self._fetching[url] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(url, None))
        return await asyncio.shield(pending)

    async def _fetch_key(self, url: str) -> rsa.RSAPublicKey:
        try:
            async with self._client().get(URL(url, encoded=True), allow_redirects=False) as response:
                if response.status >= 500:
                    raise SnsUnreachable(f"the SNS host answered {response.status}")
                if response.status != 200:
                    raise Refused(403, "no signing certificate at SigningCertURL")
                pem = await response.content.read(_MAX_CERTIFICATE_BYTES + 1)
        except aiohttp.ClientSSLError as exc:
            log.warning("SNS certificate host not trusted", url=url, error=repr(exc))
            raise Refused(403, "the SigningCertURL host's TLS certificate is not trusted") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("SNS certificate host unreachable", url=url, error=repr(exc))
            raise SnsUnreachable("the SNS certificate host could not be reached") from exc
        certificate = _certificate(pem)
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused(403, "the signing certificate holds no RSA key")
        lifetime = certificate.not_valid_after_utc.timestamp() - time.time()
        if len(self._certificates) >= _MAX_CACHED_CERTIFICATES:
            self._certificates.pop(next(iter(self._certificates)))
        self._certificates[url] = (time.monotonic() + min(_CACHE_SECONDS, lifetime), key)
        return key


def _certificate(pem: bytes) -> x509.Certificate:
    """A PEM certificate that is valid now; Refused(403) for anything else."""
    if len(pem) > _MAX_CERTIFICATE_BYTES:
        raise Refused(403, "the signing certificate is too large")
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Refused(403, "SigningCertURL holds no certificate") from None
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise Refused(403, "the signing certificate is not valid now")
    return certificate


def _base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise Refused(400, "SNS message without Signature")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, "SNS Signature is not base64") from None
