"""DKIM for sending domains: the rules for a domain and selector, the key pair Herald generates and keeps sealed, and the Signer the delivery worker signs a run's messages with (dkimpy, its RSA step by OpenSSL).

A user's sending domain is a hostname (stored lower-case, IDNA A-labels) with a DKIM selector. Herald
generates an RSA 2048 key pair, publishes nothing itself and hands back the DNS TXT record to publish at
`<selector>._domainkey.<domain>`. The private key is kept sealed (AES-256-GCM under a key derived from
the token secret, bound to its owner and domain) and leaves the database only towards the delivery
worker, which signs every message whose From domain has a key of the campaign's owner.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import dkim as dkimpy
import idna
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.common.errors import DomainError, ErrorKind, Violations, conflict, invalid, not_found
from services.delivery.dkim_openssl import prepared_pem
from services.delivery.domain import ADMIN_REQUIRED

# Reasons; they are part of the service's contract (google.rpc.ErrorInfo).
SENDING_DOMAIN_INVALID = "SENDING_DOMAIN_INVALID"
DKIM_SELECTOR_INVALID = "DKIM_SELECTOR_INVALID"
OWNER_USER_ID_INVALID = "OWNER_USER_ID_INVALID"
SENDING_DOMAIN_EXISTS = "SENDING_DOMAIN_EXISTS"
SENDING_DOMAIN_NOT_FOUND = "SENDING_DOMAIN_NOT_FOUND"

KEY_BITS = 2048
MAX_NAME_LENGTH = 253  # a DNS name in text form, without the trailing dot (RFC 1035 §2.3.4)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DIGITS = re.compile(r"[0-9]+")

# The header fields a signature covers when the message has them: RFC 6376 §5.4.1's usual set, and the
# List-Unsubscribe pair, which RFC 8058 §4 requires to be signed. From is listed once more than it occurs
# ("oversigned"), so that a From added on the way breaks the signature instead of showing.
SIGNED_HEADERS = (
    b"from",
    b"reply-to",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
OVERSIGNED_HEADERS = (b"from",)


# --- the rules for a domain, a selector and an owner -------------------------------------------------------


def _hostname_problem(name: str) -> str:
    """Why an ASCII, lower-case name is no hostname of at least two labels ("" when it is one)."""
    labels = name.split(".")
    if len(labels) < 2:
        return "a sending domain has at least two labels (example.com)"
    if len(name) > MAX_NAME_LENGTH:
        return f"a domain name has at most {MAX_NAME_LENGTH} characters"
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "each label is 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen"
    if _DIGITS.fullmatch(labels[-1]):
        return "an IP address is no sending domain"
    return ""


def normalized_domain(text: str) -> str:
    """The domain as stored: lower-case IDNA A-labels, without a trailing dot; DomainError when it is no hostname."""
    name = text.strip().removesuffix(".")
    if not name:
        raise invalid(SENDING_DOMAIN_INVALID, "domain is required", "domain")
    try:
        ascii_name = name.lower() if name.isascii() else idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise invalid(
            SENDING_DOMAIN_INVALID, f"{text!r} is no valid internationalized domain: {exc}", "domain"
        ) from exc
    problem = _hostname_problem(ascii_name)
    if problem:
        raise invalid(SENDING_DOMAIN_INVALID, f"{text!r}: {problem}", "domain")
    return ascii_name


def normalized_selector(text: str) -> str:
    """The selector as stored (lower-case): dot-separated labels of letters, digits and hyphens (RFC 6376 §3.1)."""
    selector = text.strip().lower()
    if not selector:
        raise invalid(DKIM_SELECTOR_INVALID, "selector is required", "selector")
    if not selector.isascii() or not all(_LABEL.fullmatch(label) for label in selector.split(".")):
        raise invalid(
            DKIM_SELECTOR_INVALID,
            f"{text!r}: a selector is dot-separated labels of 1 to 63 ASCII letters, digits or hyphens, "
            "not starting or ending with a hyphen",
            "selector",
        )
    return selector


def validated_sending_domain(domain: str, selector: str) -> tuple[str, str]:
    """(domain, selector) as stored; one DomainError naming every bad field."""
    violations = Violations()
    checked: list[str] = []
    for check, value in ((normalized_domain, domain), (normalized_selector, selector)):
        try:
            checked.append(check(value))
        except DomainError as exc:
            violations.items.extend(exc.violations)
    violations.raise_if_any()
    name = record_name(checked[1], checked[0])
    if len(name) > MAX_NAME_LENGTH:
        raise invalid(
            DKIM_SELECTOR_INVALID,
            f"the DNS name {name!r} would have more than {MAX_NAME_LENGTH} characters",
            "selector",
        )
    return checked[0], checked[1]


def owner_of(requested: int, user_id: int, is_admin: bool, *, for_listing: bool = False) -> int | None:
    """Whose sending domains a call is about: the caller's own (0 or their id), another user's for an admin only.

    An admin's token is nobody's user, so an admin names the user; a listing by an admin that names
    nobody covers every user (None).
    """
    if requested < 0:
        raise invalid(
            OWNER_USER_ID_INVALID, "owner_user_id must be a user id (or 0 for yourself)", "owner_user_id"
        )
    if is_admin:
        if requested == 0 and not for_listing:
            raise invalid(
                OWNER_USER_ID_INVALID, "an admin names the user whose sending domain this is", "owner_user_id"
            )
        return requested or None
    if requested not in (0, user_id):
        raise DomainError(
            ErrorKind.PERMISSION, ADMIN_REQUIRED, "only an admin may manage another user's sending domains"
        )
    return user_id


def already_exists(domain: str) -> DomainError:
    return conflict(SENDING_DOMAIN_EXISTS, f"the sending domain {domain} already exists", "domain")


def unknown(domain: str) -> DomainError:
    # The same answer whether nobody or another user has the domain: it reveals nothing about others.
    return not_found(SENDING_DOMAIN_NOT_FOUND, f"no sending domain {domain}", "domain")


# --- the DNS record --------------------------------------------------------------------------------------


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def txt_value(public_key: str) -> str:
    """The TXT record to publish for a public key (base64 of its DER SubjectPublicKeyInfo)."""
    return f"v=DKIM1; k=rsa; p={public_key}"


# --- keys ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """A new key: the private key in PEM (PKCS#1, what dkimpy reads fastest) and the public key for DNS."""

    private_pem: bytes
    public_key: str


def generate_key_pair() -> KeyPair:
    """An RSA 2048 key pair (~0.1 s of CPU: callers on an event loop run it in a thread)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private_pem, base64.b64encode(public_der).decode("ascii"))


class KeyUnreadable(Exception):
    """A sealed key that does not open: sealed under another token secret, or altered."""


class KeySeal:
    """Private keys at rest: AES-256-GCM under a key derived (HKDF-SHA256) from the token secret.

    The sealed bytes are a version byte, the 12-byte nonce and the ciphertext with its tag. The owner and
    domain are the associated data, so a sealed key copied onto another row does not open there.
    """

    VERSION = b"\x01"
    _INFO = b"herald delivery: DKIM private keys at rest, v1"

    def __init__(self, token_secret: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=self._INFO).derive(
            token_secret.encode("utf-8")
        )
        self._aead = AESGCM(derived)

    @staticmethod
    def _bound_to(owner_user_id: int, domain: str) -> bytes:
        return f"{owner_user_id}:{domain}".encode("ascii")

    def seal(self, private_pem: bytes, owner_user_id: int, domain: str) -> bytes:
        nonce = os.urandom(12)
        return self.VERSION + nonce + self._aead.encrypt(nonce, private_pem, self._bound_to(owner_user_id, domain))

    def open(self, sealed: bytes, owner_user_id: int, domain: str) -> bytes:
        if sealed[:1] != self.VERSION or len(sealed) < 1 + 12 + 16:
            raise KeyUnreadable(f"the key of {domain} is sealed in an unknown format")
        try:
            return self._aead.decrypt(sealed[1:13], sealed[13:], self._bound_to(owner_user_id, domain))
        except InvalidTag as exc:
            raise KeyUnreadable(f"the key of {domain} does not open with this token secret") from exc


# --- signing ---------------------------------------------------------------------------------------------


def sender_domain(address: str) -> str:
    """The domain of a From address as sending domains are stored ("" when it has none or no valid one)."""
    _, at, domain = address.strip().rpartition("@")
    if not at:
        return ""
    try:
        return normalized_domain(domain)
    except DomainError:
        return ""


@dataclass(frozen=True)
class SigningKey:
    """One sending domain's key, opened, as the worker signs with it.

    The key is parsed and loaded in OpenSSL once, here (a SigningKey lives for one run), so that dkimpy
    neither parses the PEM nor computes the RSA in Python for each message (services/delivery/dkim_openssl.py).
    """

    domain: str
    selector: str
    private_pem: bytes
    _prepared_pem: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prepared_pem", prepared_pem(self.private_pem))

    def signed(self, parsed: dkimpy.DKIM, message: bytes) -> bytes:
        """The message (`parsed` by dkimpy) with a DKIM-Signature header field in front (relaxed/relaxed, rsa-sha256)."""
        present = {name.lower() for name, _ in parsed.headers}
        covered = [name for name in SIGNED_HEADERS if name in present]
        signature: bytes = parsed.sign(
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self._prepared_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=covered + list(OVERSIGNED_HEADERS),
        )
        return signature + message


class Signer:
    """Signs a run's messages: those whose From domain has a key of the run's owner; the others pass unchanged.

    The domain is read from the message's own From header field (what DKIM alignment is about), not from
    the envelope sender, which is the return path.
    """

    def __init__(self, keys: Iterable[SigningKey] = ()) -> None:
        self._keys = {key.domain: key for key in keys}
        # A run has one From header per email: each is resolved to its key once.
        self._by_from: dict[bytes, SigningKey | None] = {}

    @property
    def domains(self) -> list[str]:
        return sorted(self._keys)

    def key_for(self, from_field: bytes) -> SigningKey | None:
        """The key for a From header field's value (None when its domain has none)."""
        if from_field not in self._by_from:
            _, address = email.utils.parseaddr(from_field.decode("utf-8", "replace").strip())
            self._by_from[from_field] = self._keys.get(sender_domain(address))
        return self._by_from[from_field]

    def sign(self, message: bytes) -> bytes:
        """The message as it is sent: with a DKIM-Signature in front when its From domain has a key."""
        if not self._keys:
            return message
        parsed = dkimpy.DKIM(message, linesep=b"\r\n")
        from_field = next((value for name, value in parsed.headers if name.lower() == b"from"), None)
        key = None if from_field is None else self.key_for(from_field)
        return message if key is None else key.signed(parsed, message)


@dataclass(frozen=True)
class SealedKey:
    """A sending domain's key as stored."""

    owner_user_id: int
    domain: str
    selector: str
    sealed_private_key: bytes


def opened_signer(sealed: Iterable[SealedKey], seal: KeySeal) -> tuple[Signer, list[str]]:
    """A Signer with every key that opens, and the domains whose key does not (they are sent unsigned)."""
    keys: list[SigningKey] = []
    unreadable: list[str] = []
    for row in sealed:
        try:
            keys.append(
                SigningKey(
                    row.domain, row.selector, seal.open(row.sealed_private_key, row.owner_user_id, row.domain)
                )
            )
        except KeyUnreadable:
            unreadable.append(row.domain)
    return Signer(keys), unreadable
