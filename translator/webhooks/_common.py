"""What the three provider webhooks share: the course of a request (ProviderWebhook), reading a bounded
body, naming the recipient by Herald's signed token, building BounceReports from a provider's raw
fields, and recording them in delivery.

A webhook request ends in one of three ways: refused (`Refused`, a 4xx: nothing was believed and
nothing changed), accepted (200: every bounce or complaint with a token Herald signed was recorded,
everything else was acknowledged and counted), or `DeliveryUnavailable` (503: delivery did not take
the reports, so the provider sends the same events again; their event keys make that harmless).
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Generic, TypeVar

import grpc
import structlog
from aiohttp import web
from google.protobuf import timestamp_pb2
from herald.delivery.v1 import delivery_pb2
from prometheus_client import Counter

from services.common.return_path import BouncedRecipient, InvalidReturnPath, ReturnPaths
from translator.commands import Stubs
from translator.identity import IdentityStore
from translator.params import holds_lone_surrogate

log = structlog.get_logger()

# What authenticates one provider's requests: a signature key, a shared secret, an SNS verifier.
Check = TypeVar("Check")

REQUESTS = Counter("herald_webhook_requests_total", "Provider webhook requests", ["provider", "outcome"])
EVENTS = Counter(
    "herald_webhook_events_total",
    "Events in verified provider webhook requests: reported to delivery, ignored (not a bounce or "
    "complaint), or unverified (no token Herald signed)",
    ["provider", "outcome"],
)

# RecordBounces takes at most this many reports per call.
MAX_REPORTS_PER_CALL = 1000
_SERVICE_TIMEOUT_SECONDS = 10.0
_MAX_DIAGNOSTIC = 1000
_MAX_EVENT_KEY = 200
_EVENT_KEY = re.compile(r"[!-~]+")
# An enhanced status code (RFC 3463) anywhere in a text, and a basic reply code at the start of a
# diagnostic ("550 ...", "smtp; 550-5.1.1 ..."): the forms providers quote the remote server's reply in.
_ENHANCED = re.compile(r"(?<![0-9.])([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.])")
_REPLY = re.compile(r"\s*(?:[a-z][a-z0-9-]*\s*;\s*)?([245][0-9][0-9])(?:[ -]|$)", re.IGNORECASE)


class Refused(Exception):
    """The request is not believed: answered `status` with `reason`, and nothing in it is acted on."""

    def __init__(self, status: int, reason: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class DeliveryUnavailable(Exception):
    """Delivery did not record the reports; the provider should send them again (503)."""


def refused_response(provider: str, exc: Refused) -> web.Response:
    REQUESTS.labels(provider, f"refused_{exc.status}").inc()
    log.info("webhook refused", provider=provider, status=exc.status, reason=exc.reason)
    return web.json_response({"error": exc.reason}, status=exc.status, headers=exc.headers)


def unavailable_response(provider: str, reason: str) -> web.Response:
    REQUESTS.labels(provider, "unavailable").inc()
    return web.json_response({"error": reason}, status=503, headers={"Retry-After": "30"})


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or Refused(413) past `limit` bytes (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise Refused(413, f"body larger than {limit} bytes")
    return bytes(body)


def load_json(body: bytes) -> object:
    """A UTF-8 JSON document, or Refused(400): not JSON, nested too deeply, or holding a string no
    UTF-8 encoder takes (a lone surrogate)."""
    try:
        value: object = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Refused(400, "body is not a JSON document") from None
    if holds_lone_surrogate(value):
        raise Refused(400, "body holds an unpaired UTF-16 surrogate")
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class Recipients:
    """Names a bounce's recipient by a token Herald signed, and by nothing else (an address alone
    could be anyone's, and a forged report must not suppress it)."""

    def __init__(self, return_paths: ReturnPaths) -> None:
        self._paths = return_paths

    def by_token(self, token: object) -> BouncedRecipient | None:
        if not isinstance(token, str):
            return None
        try:
            return self._paths.verify_token(token)
        except InvalidReturnPath:
            return None

    def by_address(self, address: object) -> BouncedRecipient | None:
        """The recipient of a return-path address (`b-<token>@<bounce domain>`, bare or in angle brackets)."""
        if not isinstance(address, str):
            return None
        try:
            return self._paths.verify_address(address)
        except InvalidReturnPath:
            return None


@dataclass
class Findings:
    """What one verified webhook request said: the reports to record, and how many events were
    acknowledged without one."""

    reports: list[delivery_pb2.BounceReport] = field(default_factory=list)
    # Events that are no bounce or complaint (deliveries, opens, a provider's own suppressions ...).
    ignored: int = 0
    # Bounces and complaints that carry no token Herald signed: acknowledged, nothing changed.
    unverified: int = 0


def text_of(value: object, limit: int = _MAX_DIAGNOSTIC) -> str:
    """A provider's text field as a string protobuf takes, cut to `limit` characters ('' when not a string)."""
    if not isinstance(value, str):
        return ""
    return value.encode("utf-8", "replace").decode("utf-8").strip()[:limit]


def event_key(provider: str, *parts: object) -> str:
    """A stable deduplication key: `<provider>:<parts>` when short and printable, else a hash of the same."""
    readable = ":".join([provider, *(str(part) for part in parts)])
    if len(readable) <= _MAX_EVENT_KEY and _EVENT_KEY.fullmatch(readable):
        return readable
    digest = hashlib.sha256(readable.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{provider}:sha256:{digest}"


def content_key(provider: str, event: object) -> str:
    """The key of an event without an id of its own: a hash of its content, the same every time it is sent."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{provider}:sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"


def enhanced_status(provided: object, diagnostic: str) -> str:
    """The enhanced status code: the provider's own field, unless it is a bare class ("5.0.0") and the
    diagnostic quotes a precise one; '' when neither has one."""
    given = provided.strip() if isinstance(provided, str) else ""
    given = given if _ENHANCED.fullmatch(given) else ""
    quoted = _ENHANCED.search(diagnostic)
    if quoted and (not given or (given.endswith(".0.0") and given[0] == quoted.group(1))):
        return quoted.group(0)
    return given


def reply_code(diagnostic: str) -> int:
    """The basic SMTP reply code a diagnostic starts with ("550 ...", "smtp; 550 ..."); 0 when none."""
    match = _REPLY.match(diagnostic)
    return int(match.group(1)) if match else 0


def parse_instant(value: object) -> datetime | None:
    """An ISO 8601 instant (any number of fraction digits, 'Z' or an offset) or Unix seconds; None if neither."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def bounce_report(
    recipient: BouncedRecipient,
    *,
    source: delivery_pb2.BounceSource.ValueType,
    key: str,
    kind_hint: delivery_pb2.BounceKind.ValueType = delivery_pb2.BOUNCE_KIND_UNSPECIFIED,
    status: object = "",
    diagnostic: object = "",
    occurred: datetime | None = None,
) -> delivery_pb2.BounceReport:
    """A report of the raw fields: delivery's classifier judges the kind from the codes and the text."""
    text = text_of(diagnostic)
    report = delivery_pb2.BounceReport(
        campaign_id=recipient.campaign_id,
        recipient_id=recipient.recipient_id,
        kind_hint=kind_hint,
        status_code=enhanced_status(status, text),
        reply_code=reply_code(text),
        diagnostic=text,
        source=source,
        event_key=key,
    )
    if occurred is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(occurred)
        report.occur_time.CopyFrom(stamp)
    return report


class BounceSink:
    """Records reports in delivery (RecordBounces, in calls of at most 1,000), with the translator's own token."""

    def __init__(self, identity: IdentityStore, stubs: Stubs) -> None:
        self._identity = identity
        self._delivery = stubs.delivery

    async def record(self, provider: str, reports: Sequence[delivery_pb2.BounceReport]) -> None:
        """Returns once delivery holds every report; DeliveryUnavailable otherwise (some may be recorded:
        the provider's retry sends them again under the same keys)."""
        for start in range(0, len(reports), MAX_REPORTS_PER_CALL):
            chunk = reports[start : start + MAX_REPORTS_PER_CALL]
            try:
                answer = await self._delivery.RecordBounces(
                    delivery_pb2.RecordBouncesRequest(reports=chunk),
                    metadata=(("authorization", f"Bearer {self._identity.system_token()}"),),
                    timeout=_SERVICE_TIMEOUT_SECONDS,
                )
            except grpc.aio.AioRpcError as exc:
                transient = exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.ABORTED,
                )
                # Anything but a transient failure is Herald's own fault (a deployment without
                # RecordBounces, a report delivery refuses): logged as an error, still answered 503 so
                # the provider keeps the events until it is fixed.
                (log.warning if transient else log.error)(
                    "recording bounces failed", provider=provider, code=exc.code().name, error=exc.details()
                )
                raise DeliveryUnavailable(exc.code().name) from exc
            log.info(
                "bounces recorded",
                provider=provider,
                recorded=answer.recorded_count,
                duplicates=answer.duplicate_count,
                unknown=answer.unknown_count,
            )


async def conclude(provider: str, sink: BounceSink, findings: Findings) -> web.Response:
    """Records the findings and answers: 200 with the counts, or 503 when delivery did not take them."""
    if findings.reports:
        try:
            await sink.record(provider, findings.reports)
        except DeliveryUnavailable:
            return unavailable_response(provider, "bounces could not be recorded; try again later")
    EVENTS.labels(provider, "reported").inc(len(findings.reports))
    EVENTS.labels(provider, "ignored").inc(findings.ignored)
    EVENTS.labels(provider, "unverified").inc(findings.unverified)
    if findings.unverified:
        log.warning("webhook events without a Herald token", provider=provider, events=findings.unverified)
    REQUESTS.labels(provider, "accepted").inc()
    return web.json_response(
        {"reported": len(findings.reports), "ignored": findings.ignored, "unverified": findings.unverified}
    )


class ProviderWebhook(ABC, Generic[Check]):
    """The handler of POST /webhooks/<provider>: 404 when the provider is not configured (`check` None), 4xx
    when a request is refused, else what it found is recorded and answered (`conclude`).

    A provider says how a request is authenticated and read (`findings`)."""

    provider: ClassVar[str]

    def __init__(self, check: Check | None, recipients: Recipients, sink: BounceSink, max_body: int) -> None:
        self._check = check
        self._recipients = recipients
        self._sink = sink
        self._max_body = max_body

    async def handle(self, request: web.Request) -> web.Response:
        if self._check is None:
            raise web.HTTPNotFound()
        try:
            found = await self.findings(request, self._check)
        except Refused as exc:
            return refused_response(self.provider, exc)
        if isinstance(found, web.Response):
            return found
        return await conclude(self.provider, self._sink, found)

    @abstractmethod
    async def findings(self, request: web.Request, check: Check) -> Findings | web.Response:
        """What a request it believes reports, or the answer to a request that reports nothing (SNS's
        subscription messages); Refused when it is not believed."""
