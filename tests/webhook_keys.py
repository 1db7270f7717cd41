"""Keys, certificates and payloads for testing the provider webhooks, all made here with `cryptography`.

- `Authority`: a certificate authority of the test run. It issues the TLS certificate of `LocalSns`
  (the stand-in for sns.<region>.amazonaws.com, an HTTPS server on 127.0.0.1) and the SNS signing
  certificate that server hands out. The translator trusts it through HERALD_SNS_CA_FILE.
- `webhook_keys()`: the keys of one test process (SNS signing key, SendGrid's ECDSA key, Postmark's
  secret), and `env()`: the settings that make a Herald under test accept them (tests/conftest.py
  herald_env adds them to every Herald it starts).
- Builders of what the providers post: signed SNS messages carrying SES notifications, SendGrid
  signature headers, Postmark records. Their fields follow the providers' documentation.
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import json
import secrets
import ssl
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

LOCAL_HOST = "127.0.0.1"
# The authority LocalSns listens at: what HERALD_SNS_CERT_HOST_PATTERN allows in tests.
LOCAL_SNS_PATTERN = r"127\.0\.0\.1:[0-9]+"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:herald-ses-feedback"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class Authority:
    """A certificate authority for one test run."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "Herald test CA") -> Authority:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def pem(self) -> bytes:
        return _pem(self.certificate)

    def issue(
        self,
        common_name: str,
        *,
        ip: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        valid_days: tuple[int, int] = (-1, 30),
    ) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        """A leaf certificate: for a TLS server at `ip`, or (without) for signing, like SNS's."""
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=valid_days[0]))
            .not_valid_after(now + datetime.timedelta(days=valid_days[1]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if ip is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())

    def server_context(self, ip: str = LOCAL_HOST) -> ssl.SSLContext:
        """A TLS server context with a certificate of this authority for `ip`."""
        key, certificate = self.issue(ip, ip=ip)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert_file.write_bytes(_pem(certificate))
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            context.load_cert_chain(cert_file, key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this authority alone."""
        return ssl.create_default_context(cadata=self.pem.decode())


@dataclass
class WebhookKeys:
    """The keys of one test process's webhooks."""

    authority: Authority
    sns_key: rsa.RSAPrivateKey
    sns_certificate: x509.Certificate
    sendgrid_key: ec.EllipticCurvePrivateKey
    postmark_secret: str

    @property
    def sendgrid_public_key(self) -> str:
        """The verification key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
        der = self.sendgrid_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def env(self, folder: Path) -> dict[str, str]:
        """The settings that make a Herald accept these keys (the CA file is written into `folder`)."""
        folder.mkdir(parents=True, exist_ok=True)
        ca_file = folder / "webhook-test-ca.pem"
        ca_file.write_bytes(self.authority.pem)
        return {
            "HERALD_SES_WEBHOOK_ENABLED": "true",
            "HERALD_SES_TOPIC_ARNS": TOPIC_ARN,
            "HERALD_SNS_CERT_HOST_PATTERN": LOCAL_SNS_PATTERN,
            "HERALD_SNS_CA_FILE": str(ca_file),
            "HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY": self.sendgrid_public_key,
            "HERALD_POSTMARK_WEBHOOK_SECRET": self.postmark_secret,
        }


@functools.cache
def webhook_keys() -> WebhookKeys:
    authority = Authority.create()
    sns_key, sns_certificate = authority.issue("sns.amazonaws.com")
    return WebhookKeys(
        authority=authority,
        sns_key=sns_key,
        sns_certificate=sns_certificate,
        sendgrid_key=ec.generate_private_key(ec.SECP256R1()),
        postmark_secret=secrets.token_urlsafe(24),
    )


# --- SNS ------------------------------------------------------------------------------------------------------


@dataclass
class LocalSns:
    """An HTTPS server in the test process standing in for sns.<region>.amazonaws.com: it serves signing
    certificates and records subscription confirmations."""

    context: ssl.SSLContext
    certificates: dict[str, bytes] = field(default_factory=dict)
    fetches: list[str] = field(default_factory=list)
    confirmations: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> LocalSns:
        app = web.Application()
        app.router.add_get("/certs/{name}", self._certificate)
        app.router.add_get("/", self._action)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOCAL_HOST, 0, ssl_context=self.context).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"https://{LOCAL_HOST}:{self.port}"

    def publish_certificate(self, certificate: x509.Certificate, name: str = "") -> str:
        """Serves `certificate` and returns its URL."""
        name = name or f"SimpleNotificationService-{uuid.uuid4().hex}.pem"
        self.certificates[name] = _pem(certificate)
        return f"{self.base_url}/certs/{name}"

    def subscribe_url(self, token: str) -> str:
        return f"{self.base_url}/?Action=ConfirmSubscription&TopicArn={TOPIC_ARN}&Token={token}"

    async def _certificate(self, request: web.Request) -> web.Response:
        self.fetches.append(request.match_info["name"])
        pem = self.certificates.get(request.match_info["name"])
        if pem is None:
            raise web.HTTPNotFound()
        return web.Response(body=pem, content_type="application/x-pem-file")

    async def _action(self, request: web.Request) -> web.Response:
        if request.query.get("Action") != "ConfirmSubscription":
            raise web.HTTPBadRequest()
        self.confirmations.append(dict(request.query))
        return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")


def _sns_string_to_sign(document: dict[str, Any]) -> bytes:
    if document["Type"] == "Notification":
        names: Sequence[str] = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
    else:
        names = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    return "".join(f"{name}\n{document[name]}\n" for name in names if name in document).encode()


def sign_sns(document: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict[str, Any]:
    """The document with SignatureVersion and Signature, signed as SNS signs."""
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(_sns_string_to_sign(document), padding.PKCS1v15(), algorithm)
    return {**document, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode()}


def _sns_timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sns_notification(
    message: dict[str, Any] | str,
    certificate_url: str,
    key: rsa.RSAPrivateKey,
    *,
    topic: str = TOPIC_ARN,
    version: str = "2",
    subject: str | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": _sns_timestamp(),
        "SigningCertURL": certificate_url,
        "UnsubscribeURL": f"{certificate_url.rsplit('/', 2)[0]}/?Action=Unsubscribe",
    }
    if subject is not None:
        document["Subject"] = subject
    return sign_sns(document, key, version)


def sns_subscription_confirmation(
    subscribe_url: str, token: str, certificate_url: str, key: rsa.RSAPrivateKey, *, topic: str = TOPIC_ARN
) -> dict[str, Any]:
    document = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm, visit the SubscribeURL.",
        "SubscribeURL": subscribe_url,
        "Timestamp": _sns_timestamp(),
        "SigningCertURL": certificate_url,
    }
    return sign_sns(document, key)


def _ses_mail(source: str, destination: str, headers: Sequence[tuple[str, str]]) -> dict[str, Any]:
    mail: dict[str, Any] = {
        "timestamp": _sns_timestamp(),
        "messageId": f"0100{uuid.uuid4().hex}-000000",
        "source": source,
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/herald.example",
        "sendingAccountId": "123456789012",
        "destination": [destination],
    }
    if headers:
        mail["headersTruncated"] = False
        mail["headers"] = [{"name": name, "value": value} for name, value in headers]
    return mail


def ses_bounce(
    source: str,
    address: str,
    *,
    bounce_type: str = "Permanent",
    sub_type: str = "General",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 user unknown",
    feedback_id: str = "",
    headers: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """An SES Bounce notification for one recipient."""
    entry: dict[str, Any] = {"emailAddress": address, "action": "failed", "status": status}
    if diagnostic:
        entry["diagnosticCode"] = diagnostic
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": [entry],
            "timestamp": _sns_timestamp(),
            "feedbackId": feedback_id or f"0100{uuid.uuid4().hex}-000000",
            "reportingMTA": "dsn; a1-2.smtp-out.amazonses.com",
        },
        "mail": _ses_mail(source, address, headers),
    }


def ses_complaint(
    source: str,
    address: str,
    *,
    feedback_type: str = "abuse",
    feedback_id: str = "",
    headers: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """An SES Complaint notification for one recipient."""
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": address}],
            "timestamp": _sns_timestamp(),
            "feedbackId": feedback_id or f"0100{uuid.uuid4().hex}-000000",
            "userAgent": "Mozilla/5.0",
            "complaintFeedbackType": feedback_type,
            "arrivalDate": _sns_timestamp(),
        },
        "mail": _ses_mail(source, address, headers),
    }


# --- SendGrid ---------------------------------------------------------------------------------------------


def sendgrid_headers(body: bytes, key: ec.EllipticCurvePrivateKey, timestamp: int | None = None) -> dict[str, str]:
    """The signature headers SendGrid sends with `body`."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def sendgrid_event(event: str, address: str, token: str | None, **fields: Any) -> dict[str, Any]:
    """One Event Webhook event; the `herald_token` unique argument sits among its top-level fields."""
    body: dict[str, Any] = {
        "email": address,
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
        "sg_message_id": f"{uuid.uuid4().hex}.filterdrecv-1-1",
        "smtp-id": f"<{uuid.uuid4().hex}@herald.example>",
        **fields,
    }
    if token is not None:
        body["herald_token"] = token
    return body


# --- Postmark ---------------------------------------------------------------------------------------------


def postmark_basic_auth(secret: str, user: str = "herald") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def postmark_bounce(
    address: str,
    token: str | None,
    *,
    bounce_type: str = "HardBounce",
    type_code: int = 1,
    details: str = "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    record_id: int | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "RecordType": "Bounce",
        "ID": record_id if record_id is not None else secrets.randbelow(2**62),
        "Type": bounce_type,
        "TypeCode": type_code,
        "Name": "Hard bounce",
        "Tag": "",
        "MessageID": str(uuid.uuid4()),
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": details,
        "Email": address,
        "From": "news@herald.example",
        "BouncedAt": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
        "DumpAvailable": False,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Hello",
        "Metadata": {},
    }
    if token is not None:
        record["Metadata"] = {"herald_token": token}
    return record


def postmark_spam_complaint(address: str, token: str | None, *, record_id: int | None = None) -> dict[str, Any]:
    record = postmark_bounce(
        address, token, bounce_type="SpamComplaint", type_code=100001, details="", record_id=record_id
    )
    record.update(
        RecordType="SpamComplaint",
        Name="Spam complaint",
        Description="The subscriber explicitly marked this message as spam.",
    )
    return record
