"""The rules of event webhooks (outgoing; docs/webhooks.md): endpoint URLs, event kinds, payloads, signatures and the retry schedule. No I/O.

Not to be confused with the provider webhooks Herald receives (translator/, docs/bounces.md): these are the
POSTs Herald makes to its users' endpoints with their own events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from yarl import URL

from services.common.errors import DomainError, ErrorKind, Violations, invalid, not_found
from services.common.urlguard import IPAddress, address_allowed

WEBHOOK_URL_INVALID = "WEBHOOK_URL_INVALID"
WEBHOOK_EVENT_KINDS_INVALID = "WEBHOOK_EVENT_KINDS_INVALID"
WEBHOOK_DESCRIPTION_INVALID = "WEBHOOK_DESCRIPTION_INVALID"
WEBHOOK_ENDPOINT_NOT_FOUND = "WEBHOOK_ENDPOINT_NOT_FOUND"
WEBHOOK_PAGE_TOKEN_INVALID = "WEBHOOK_PAGE_TOKEN_INVALID"
WEBHOOK_PAGE_SIZE_INVALID = "WEBHOOK_PAGE_SIZE_INVALID"
WEBHOOK_ENDPOINT_LIMIT = "WEBHOOK_ENDPOINT_LIMIT"

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
# Endpoints per user: each one multiplies the user's events.
MAX_ENDPOINTS_PER_USER = 20
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# What the docs tell receivers to accept: a timestamp at most this far from their clock.
REPLAY_TOLERANCE_SECONDS = 300

# The payload `type` of each kind, in the order of the proto enum (WebhookEventKind 1, 2, ...).
CAMPAIGN_STATUS_CHANGED = "campaign.status_changed"
RECIPIENT_KINDS = ("queued", "sent", "failed", "bounced", "complained", "opened", "clicked", "unsubscribed")
RECIPIENT_TYPE_PREFIX = "recipient."
EVENT_TYPES: tuple[str, ...] = (
    CAMPAIGN_STATUS_CHANGED,
    *(f"{RECIPIENT_TYPE_PREFIX}{kind}" for kind in RECIPIENT_KINDS),
)
# The ids stable across redeliveries of one JetStream message: uuid5 of the install, stream sequence, publish
# time and place, under this namespace.
_EVENT_ID_NAMESPACE = uuid.UUID("5b0c1d4e-9f6a-4f1e-8a43-2f7d0e6b9c11")


def event_type_of_recipient_kind(kind: int) -> str | None:
    """The payload type of a DeliveryEventKind number (1 queued ... 8 unsubscribed); None for one unknown."""
    if 1 <= kind <= len(RECIPIENT_KINDS):
        return f"{RECIPIENT_TYPE_PREFIX}{RECIPIENT_KINDS[kind - 1]}"
    return None


def validated_event_types(kinds: Sequence[int]) -> list[str]:
    """The payload types of the requested WebhookEventKind numbers (repeats dropped, in enum order)."""
    if not kinds:
        raise invalid(WEBHOOK_EVENT_KINDS_INVALID, "event_kinds: name at least one event kind", "event_kinds")
    if any(not 1 <= kind <= len(EVENT_TYPES) for kind in kinds):
        raise invalid(
            WEBHOOK_EVENT_KINDS_INVALID, "event_kinds: every kind must be a specified one", "event_kinds"
        )
    return [EVENT_TYPES[kind - 1] for kind in sorted(set(kinds))]


def kind_numbers(event_types: Iterable[str]) -> list[int]:
    return [EVENT_TYPES.index(name) + 1 for name in event_types if name in EVENT_TYPES]


def check_url(url: str, violations: Violations, *, allow_http: bool, allow_private: bool) -> None:
    """Records why `url` cannot be an endpoint: not absolute https (or http where allowed), too long, with
    credentials or a fragment, or a literal address the operator does not allow. Names are checked by the
    caller once resolved (at registration) and by the connection's resolver at every delivery."""
    schemes = ("https", "http") if allow_http else ("https",)
    try:
        target: URL | None = URL(url)
    except ValueError:
        target = None
    problem = ""
    if len(url) > MAX_URL_LENGTH:
        problem = f"is longer than {MAX_URL_LENGTH} characters"
    elif target is None or not target.is_absolute() or not target.host or target.scheme not in schemes:
        problem = (
            "is not an absolute http or https URL"
            if allow_http
            else "is not an absolute https URL (this server allows no plain http endpoints)"
        )
    elif target.user or target.password:
        problem = "must not carry credentials"
    elif target.fragment:
        problem = "must not have a fragment"
    else:
        address = literal_address(target.host)
        if address is not None and not address_allowed(address, allow_private=allow_private):
            problem = f"names the non-public address {address}, which this server does not reach"
    if problem:
        violations.add("url", WEBHOOK_URL_INVALID, f"url {problem}")


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def refused_resolution(host: str, addresses: Iterable[str], *, allow_private: bool) -> DomainError | None:
    """The error for a name that resolves to an address the operator does not allow, else None."""
    for text in addresses:
        address = literal_address(text.split("%", 1)[0])
        if address is None or not address_allowed(address, allow_private=allow_private):
            return invalid(
                WEBHOOK_URL_INVALID,
                f"url: {host} resolves to the non-public address {text}, which this server does not reach",
                "url",
            )
    return None


def unresolvable(host: str) -> DomainError:
    return invalid(WEBHOOK_URL_INVALID, f"url: {host} does not resolve", "url")


def check_description(description: str, violations: Violations) -> None:
    if len(description) > MAX_DESCRIPTION_LENGTH:
        violations.add(
            "description",
            WEBHOOK_DESCRIPTION_INVALID,
            f"description is longer than {MAX_DESCRIPTION_LENGTH} characters",
        )


def endpoint_not_found(endpoint_id: int) -> DomainError:
    return not_found(
        WEBHOOK_ENDPOINT_NOT_FOUND,
        f"no webhook endpoint {endpoint_id}",
        "endpoint_id",
        endpoint_id=str(endpoint_id),
    )


def too_many_endpoints() -> DomainError:
    return DomainError(
        ErrorKind.PRECONDITION,
        WEBHOOK_ENDPOINT_LIMIT,
        f"a user has at most {MAX_ENDPOINTS_PER_USER} webhook endpoints; delete one first",
    )


# --- secrets and signatures -----------------------------------------------------------------------------------


def new_secret() -> str:
    """A signing secret as shown to the user: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: its bytes after the prefix, base64-decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,` and the base64 HMAC-SHA256 of `<id>.<timestamp>.<body>`."""
    signed = f"{event_id}.{timestamp}.".encode("ascii") + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signed_headers(
    secret: str, event_id: str, timestamp: int, body: bytes, previous_secret: str | None = None
) -> dict[str, str]:
    """The headers of one POST; after a rotation, with a second signature by the previous secret (space-separated)."""
    signatures = [signature(secret, event_id, timestamp, body)]
    if previous_secret:
        signatures.append(signature(previous_secret, event_id, timestamp, body))
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


WEBHOOK_SECRET_GRACE_INVALID = "WEBHOOK_SECRET_GRACE_INVALID"
DEFAULT_SECRET_GRACE_SECONDS = 86400.0
MAX_SECRET_GRACE_SECONDS = 7 * 86400.0


def secret_grace_seconds(seconds: int | None, nanos: int = 0) -> float:
    """How long the previous secret keeps signing after a rotation: the default for unset, else 0 to 7 days."""
    if seconds is None:
        return DEFAULT_SECRET_GRACE_SECONDS
    grace = seconds + nanos / 1e9
    if seconds < 0 or nanos < 0 or grace > MAX_SECRET_GRACE_SECONDS:
        raise invalid(
            WEBHOOK_SECRET_GRACE_INVALID,
            "previous_secret_grace must be from 0 to 7 days",
            "previous_secret_grace",
        )
    return grace


# --- events ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingEvent:
    """One event for the endpoints of one owner that asked for its type."""

    owner_user_id: int
    campaign_id: int
    event_id: str
    event_type: str
    stream_sequence: int
    position: int
    body: bytes


def event_id(namespace: str, stream_sequence: int, published_ns: int, position: int) -> str:
    """The stable id of the event at `position` of the JetStream message (the same on every redelivery)."""
    name = f"{namespace}:{stream_sequence}:{published_ns}:{position}"
    return f"evt_{uuid.uuid5(_EVENT_ID_NAMESPACE, name).hex}"


def payload(event_id: str, event_type: str, occurred: datetime, data: dict[str, object]) -> bytes:
    """The JSON body POSTed: the event's id, type and time, and its message in proto3 JSON under `data`."""
    document = {
        "id": event_id,
        "type": event_type,
        "timestamp": occurred.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


# --- the retry schedule ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff: the first delay doubling per failed attempt up to the longest, each shortened by up
    to a tenth at random (so endpoints failing together do not come back together); an endpoint failing
    for longer than the horizon is disabled."""

    first_seconds: float
    max_seconds: float
    horizon_seconds: float

    def delay(self, failed_attempts: int) -> float:
        """Seconds before the next attempt after the `failed_attempts`-th failure of one event (from 1)."""
        exponent = min(max(failed_attempts - 1, 0), 60)
        base = min(self.first_seconds * 2.0**exponent, self.max_seconds)
        return base * (1 - random.random() * 0.1)  # spreading retries, not security

    def gives_up(self, failing_for_seconds: float) -> bool:
        return failing_for_seconds >= self.horizon_seconds


def disabled_reason(failing_since: datetime, horizon_seconds: float, last_outcome: str) -> str:
    return (
        f"every delivery failed since {failing_since.isoformat(timespec='seconds')} "
        f"(the retry horizon is {horizon_seconds:g} s); last attempt: {last_outcome}"
    )


# --- pages of the delivery log -----------------------------------------------------------------------------------

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def attempts_page(page_size: int, page_token: str) -> tuple[int, int | None]:
    """(limit, the attempt id to list below or None) of a ListWebhookAttempts request."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise invalid(WEBHOOK_PAGE_SIZE_INVALID, f"page_size must be 0 to {MAX_PAGE_SIZE}", "page_size")
    before = None
    if page_token:
        if not page_token.isdigit() or int(page_token) <= 0 or len(page_token) > 19:
            raise invalid(WEBHOOK_PAGE_TOKEN_INVALID, "page_token is not one this service gave", "page_token")
        before = int(page_token)
    return page_size or DEFAULT_PAGE_SIZE, before
