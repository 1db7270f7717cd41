"""Delivery rules, pure and synchronous: recipient statuses and domains, statistics requests and how figures add up."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.common import bounces
from services.common.bounces import BounceKind, BounceSource
from services.common.errors import Violations

# A statistics request names at most this many campaigns (campaigns.get asks for one page at a time).
MAX_CAMPAIGN_IDS = 10_000
# Per-domain statistics keep the domains with the most recipients; the long tail is left out.
MAX_DOMAINS_PER_CAMPAIGN = 100


class RecipientStatus(enum.StrEnum):
    """Where a queue row is in its delivery, as stored (services/delivery/sending.py says how rows move)."""

    PENDING = "Pending"
    # Outside a split test's test group, waiting for the winner.
    HELD = "Held"
    # Claimed by one worker, which is sending it.
    SENDING = "Sending"
    # Answered with a temporary failure; retried through JetStream when `next_attempt_at` is due
    # (services/delivery/retries.py).
    DEFERRED = "Deferred"
    SENT = "Sent"
    FAILED = "Failed"
    # Never sent: the campaign was cancelled (or deleted) first.
    DROPPED = "Dropped"


# The kinds of tracking event, as stored.
OPEN = "open"
CLICK = "click"

# Reasons the translator maps to legacy codes; they are part of the service's contract.
TOO_MANY_CAMPAIGNS = "TOO_MANY_CAMPAIGNS"


def recipient_domain(email_address: str) -> str:
    """The lower-cased part after the last @ ("" when there is none), as stored on a queue row."""
    _, at, domain = email_address.strip().rpartition("@")
    return domain.lower() if at else ""


def validate_statistics_request(campaign_ids: Sequence[int]) -> list[int]:
    """The distinct campaign ids of a statistics request, in the order first given."""
    violations = Violations()
    if len(campaign_ids) > MAX_CAMPAIGN_IDS:
        violations.add(
            "campaign_ids",
            TOO_MANY_CAMPAIGNS,
            f"at most {MAX_CAMPAIGN_IDS} campaign ids per request, got {len(campaign_ids)}",
        )
    violations.raise_if_any()
    return list(dict.fromkeys(campaign_ids))


@dataclass(frozen=True)
class RecipientCounts:
    """What the queue rows of one campaign say."""

    total: int = 0
    sent: int = 0
    failed: int = 0
    # Waiting for a retry after a temporary failure (they end Sent or Failed).
    deferred: int = 0
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None
    # The main send's messages and last send time (the throughput's): without the tail of retries once the
    # campaign was Sent (migration 0011).
    main_sent: int = 0
    main_last_sent_at: datetime | None = None


@dataclass(frozen=True)
class EventCounts:
    """Opens and clicks of one campaign: every hit, and distinct recipients."""

    opens: int = 0
    unique_opens: int = 0
    clicks: int = 0
    unique_clicks: int = 0


@dataclass(frozen=True)
class BounceCounts:
    """Distinct recipients of one campaign per bounce kind, and those who unsubscribed (link or complaint)."""

    hard: int = 0
    soft: int = 0
    policy: int = 0
    complaints: int = 0
    unsubscriptions: int = 0


@dataclass(frozen=True)
class VariationFigures:
    email_id: int
    total_recipients: int
    sent: int
    failed: int
    deferred: int
    unique_opens: int
    unique_clicks: int


@dataclass(frozen=True)
class DomainFigures:
    domain: str
    total_recipients: int
    sent: int
    failed: int
    deferred: int


@dataclass(frozen=True)
class SplitTestStanding:
    """Where the split test of a campaign's last occurrence stands; the winner is 0 until it was chosen."""

    test_recipients: int
    held_recipients: int
    winner_email_id: int = 0
    decided_at: datetime | None = None


@dataclass(frozen=True)
class CampaignStatistics:
    """Everything delivery reports about one campaign; all zeros when nothing was queued."""

    campaign_id: int
    total_recipients: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    events: EventCounts = field(default_factory=EventCounts)
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None
    main_sent: int = 0
    main_last_sent_at: datetime | None = None
    variations: list[VariationFigures] = field(default_factory=list)
    domains: list[DomainFigures] = field(default_factory=list)
    split_test: SplitTestStanding | None = None
    bounces: BounceCounts = field(default_factory=BounceCounts)


def campaign_statistics(
    campaign_ids: Sequence[int],
    run_totals: Mapping[int, int],
    counts: Mapping[int, RecipientCounts],
    events: Mapping[int, EventCounts],
    variations: Mapping[int, list[VariationFigures]],
    domains: Mapping[int, list[DomainFigures]],
    split_tests: Mapping[int, SplitTestStanding] | None = None,
    bounce_counts: Mapping[int, BounceCounts] | None = None,
) -> list[CampaignStatistics]:
    """One entry per campaign id, in the given order, from the figure groups the store read.

    TotalRecipients is the figure fixed when the campaign was queued; a campaign without a run
    record (rows written by hand, or a queue being written) counts its rows instead.
    """
    statistics = []
    for campaign_id in campaign_ids:
        count = counts.get(campaign_id, RecipientCounts())
        statistics.append(
            CampaignStatistics(
                campaign_id=campaign_id,
                total_recipients=run_totals.get(campaign_id, count.total),
                sent=count.sent,
                failed=count.failed,
                deferred=count.deferred,
                events=events.get(campaign_id, EventCounts()),
                first_sent_at=count.first_sent_at,
                last_sent_at=count.last_sent_at,
                main_sent=count.main_sent,
                main_last_sent_at=count.main_last_sent_at,
                variations=variations.get(campaign_id, []),
                domains=domains.get(campaign_id, []),
                split_test=(split_tests or {}).get(campaign_id),
                bounces=(bounce_counts or {}).get(campaign_id, BounceCounts()),
            )
        )
    return statistics


# --- tracking events (opens, clicks and unsubscribes reported by the translator's public endpoints) ---

UNSUBSCRIBE = "unsubscribe"
TRACKING_KINDS = (OPEN, CLICK, UNSUBSCRIBE)
# One report carries at most this many events (the translator batches hits every few hundred ms).
MAX_TRACKING_EVENTS = 1000
MAX_TRACKED_URL_LENGTH = 4096
MAX_EVENT_KEY_LENGTH = 128

TOO_MANY_EVENTS = "TOO_MANY_EVENTS"
INVALID_CAMPAIGN_ID = "INVALID_CAMPAIGN_ID"
INVALID_RECIPIENT_ID = "INVALID_RECIPIENT_ID"
INVALID_EVENT_KIND = "INVALID_EVENT_KIND"
INVALID_URL = "INVALID_URL"
INVALID_EVENT_KEY = "INVALID_EVENT_KEY"


@dataclass(frozen=True)
class TrackingHit:
    """One open, click or unsubscribe of one recipient, as reported (kind "" when the reporter gave none)."""

    campaign_id: int
    recipient_id: int
    kind: str
    url: str
    occurred_at: datetime
    event_key: str


def validate_tracking_hits(hits: Sequence[TrackingHit]) -> None:
    """Raises one INVALID error naming every bad field of a RecordTrackingEvents request."""
    violations = Violations()
    if len(hits) > MAX_TRACKING_EVENTS:
        violations.add("events", TOO_MANY_EVENTS, f"at most {MAX_TRACKING_EVENTS} events per request")
        violations.raise_if_any()
    for index, hit in enumerate(hits):
        where = f"events[{index}]"
        if hit.campaign_id <= 0:
            violations.add(f"{where}.campaign_id", INVALID_CAMPAIGN_ID, "campaign_id must be positive")
        if hit.recipient_id <= 0:
            violations.add(f"{where}.recipient_id", INVALID_RECIPIENT_ID, "recipient_id must be positive")
        if hit.kind not in TRACKING_KINDS:
            violations.add(f"{where}.kind", INVALID_EVENT_KIND, "kind must be open, click or unsubscribe")
        if hit.kind == CLICK and not hit.url:
            violations.add(f"{where}.url", INVALID_URL, "a click needs the clicked url")
        if hit.kind != CLICK and hit.url:
            violations.add(f"{where}.url", INVALID_URL, "only a click has a url")
        if len(hit.url) > MAX_TRACKED_URL_LENGTH or "\x00" in hit.url:
            violations.add(
                f"{where}.url", INVALID_URL, f"url: at most {MAX_TRACKED_URL_LENGTH} characters, no NUL"
            )
        if len(hit.event_key) > MAX_EVENT_KEY_LENGTH or "\x00" in hit.event_key:
            violations.add(
                f"{where}.event_key", INVALID_EVENT_KEY, f"event_key: at most {MAX_EVENT_KEY_LENGTH} characters"
            )
    violations.raise_if_any()


# --- unsubscriptions through the API (legacy subscriber.unsubscribe with a CampaignID) ---

# One request names at most this many subscribers (the translator splits a bulk unsubscription).
MAX_UNSUBSCRIBED_SUBSCRIBERS = 10_000
MAX_ADDRESS_LENGTH = 1000

INVALID_LIST_ID = "INVALID_LIST_ID"
INVALID_SUBSCRIBERS = "INVALID_SUBSCRIBERS"
INVALID_EMAIL_ID = "INVALID_EMAIL_ID"


@dataclass(frozen=True)
class Unsubscriptions:
    """Subscribers of a list who unsubscribed, as the API reports them for one campaign (and maybe one email)."""

    campaign_id: int
    list_id: int
    # (subscriber id, address on the list lower-cased) of each subscriber.
    subscribers: tuple[tuple[int, str], ...]
    email_id: int
    occurred_at: datetime


def validate_unsubscriptions(unsubscriptions: Unsubscriptions) -> None:
    """Raises one INVALID error naming every bad field of a RecordUnsubscriptions request."""
    violations = Violations()
    if unsubscriptions.campaign_id <= 0:
        violations.add("campaign_id", INVALID_CAMPAIGN_ID, "campaign_id must be positive")
    if unsubscriptions.list_id <= 0:
        violations.add("list_id", INVALID_LIST_ID, "list_id must be positive")
    subscribers = unsubscriptions.subscribers
    if len(subscribers) > MAX_UNSUBSCRIBED_SUBSCRIBERS or any(
        subscriber_id <= 0 or not address or len(address) > MAX_ADDRESS_LENGTH
        for subscriber_id, address in subscribers
    ):
        violations.add(
            "subscribers",
            INVALID_SUBSCRIBERS,
            f"subscribers: a positive subscriber_id and an email_address each, at most "
            f"{MAX_UNSUBSCRIBED_SUBSCRIBERS} per request",
        )
    if unsubscriptions.email_id < 0:
        violations.add("email_id", INVALID_EMAIL_ID, "email_id must be positive, or 0 for any email")
    violations.raise_if_any()


# --- bounces and complaints (RecordBounces; the classifier is services/common/bounces.py) ---

MAX_BOUNCE_REPORTS = 1000
MAX_BOUNCE_EVENT_KEY_LENGTH = 200
# A diagnostic is kept to this many characters: a remote server's reply, not a whole bounce message.
MAX_DIAGNOSTIC_LENGTH = 1000

TOO_MANY_REPORTS = "TOO_MANY_REPORTS"
INVALID_BOUNCE_SOURCE = "INVALID_BOUNCE_SOURCE"
INVALID_KIND_HINT = "INVALID_KIND_HINT"
INVALID_STATUS_CODE = "INVALID_STATUS_CODE"
INVALID_REPLY_CODE = "INVALID_REPLY_CODE"

# The hints a reporter may give: an abuse report says COMPLAINT, a provider's bounce type HARD or SOFT.
# A policy rejection is the classifier's judgement from the codes and text, never a reporter's.
BOUNCE_HINTS = (BounceKind.COMPLAINT, BounceKind.HARD, BounceKind.SOFT)


@dataclass(frozen=True)
class BounceReport:
    """One bounce or complaint as a reporter gave it; `kind_hint` and `source` are "" when unspecified."""

    campaign_id: int
    recipient_id: int
    kind_hint: str
    status_code: str
    reply_code: int
    diagnostic: str
    source: str
    event_key: str
    occurred_at: datetime


@dataclass(frozen=True)
class ClassifiedBounce:
    """A bounce as recorded: classified, with the codes the classifier read and a diagnostic fit to keep."""

    campaign_id: int
    recipient_id: int
    kind: BounceKind
    source: BounceSource
    status_code: str
    reply_code: int
    diagnostic: str
    event_key: str
    occurred_at: datetime


def validate_bounce_reports(reports: Sequence[BounceReport]) -> None:
    """Raises one INVALID error naming every bad field of a RecordBounces request."""
    violations = Violations()
    if len(reports) > MAX_BOUNCE_REPORTS:
        violations.add("reports", TOO_MANY_REPORTS, f"at most {MAX_BOUNCE_REPORTS} reports per request")
        violations.raise_if_any()
    for index, report in enumerate(reports):
        where = f"reports[{index}]"
        if report.campaign_id <= 0:
            violations.add(f"{where}.campaign_id", INVALID_CAMPAIGN_ID, "campaign_id must be positive")
        if report.recipient_id <= 0:
            violations.add(f"{where}.recipient_id", INVALID_RECIPIENT_ID, "recipient_id must be positive")
        if report.source not in BounceSource.__members__.values():
            violations.add(f"{where}.source", INVALID_BOUNCE_SOURCE, "source must be specified")
        if report.kind_hint and report.kind_hint not in BOUNCE_HINTS:
            violations.add(
                f"{where}.kind_hint", INVALID_KIND_HINT, "kind_hint is unspecified, COMPLAINT, HARD or SOFT"
            )
        if report.status_code and not bounces.is_status_code(report.status_code):
            violations.add(
                f"{where}.status_code",
                INVALID_STATUS_CODE,
                "status_code is an RFC 3463 enhanced status code such as 5.1.1, or empty",
            )
        if report.reply_code != 0 and not 200 <= report.reply_code <= 599:
            violations.add(f"{where}.reply_code", INVALID_REPLY_CODE, "reply_code is an SMTP reply code, or 0")
        key = report.event_key
        if not key or len(key) > MAX_BOUNCE_EVENT_KEY_LENGTH or not key.isprintable():
            violations.add(
                f"{where}.event_key",
                INVALID_EVENT_KEY,
                f"event_key is required: 1 to {MAX_BOUNCE_EVENT_KEY_LENGTH} printable characters",
            )
    violations.raise_if_any()


def diagnostic_text(text: str) -> str:
    """A diagnostic as stored: no NUL (PostgreSQL text holds none), at most MAX_DIAGNOSTIC_LENGTH characters."""
    return text.replace("\x00", "").strip()[:MAX_DIAGNOSTIC_LENGTH]


def classified_bounce(report: BounceReport) -> ClassifiedBounce:
    """The report judged by the one classifier; a code read from the text is recorded with the bounce."""
    diagnostic = diagnostic_text(report.diagnostic)
    hint = BounceKind(report.kind_hint) if report.kind_hint else None
    verdict = bounces.judge(report.status_code, report.reply_code, diagnostic, hint)
    return ClassifiedBounce(
        campaign_id=report.campaign_id,
        recipient_id=report.recipient_id,
        kind=verdict.kind,
        source=BounceSource(report.source),
        status_code=report.status_code or verdict.status_code,
        reply_code=report.reply_code or verdict.reply_code,
        diagnostic=diagnostic,
        event_key=report.event_key,
        occurred_at=report.occurred_at,
    )


def distinct_reports(reports: Sequence[BounceReport]) -> list[BounceReport]:
    """The reports with their event keys made unique: the first report of a key is the one kept."""
    first: dict[str, BounceReport] = {}
    for report in reports:
        first.setdefault(report.event_key, report)
    return list(first.values())


@dataclass(frozen=True)
class RecordedBounce:
    """One bounce of a recipient's log."""

    kind: BounceKind
    source: BounceSource
    status_code: str
    reply_code: int
    diagnostic: str
    occurred_at: datetime


# --- mail capture (the local SMTP capture server and the pages that show what it received) ---

DEFAULT_CAPTURED_PAGE_SIZE = 50
MAX_CAPTURED_PAGE_SIZE = 500
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"
ADMIN_REQUIRED = "ADMIN_REQUIRED"
CAPTURED_MESSAGE_NOT_FOUND = "CAPTURED_MESSAGE_NOT_FOUND"


@dataclass(frozen=True)
class CapturedMessage:
    """One message as the capture server received it."""

    session_id: str
    peer: str
    helo_name: str
    envelope_from: str
    envelope_to: list[str]
    subject: str
    message_id: str
    raw: bytes
    received_at: datetime


@dataclass(frozen=True)
class CapturedSummary:
    """A stored captured message as listings show it; `raw` is filled only when one message is read."""

    captured_message_id: int
    session_id: str
    envelope_from: str
    envelope_to: list[str]
    subject: str
    message_id: str
    received_at: datetime
    size_bytes: int
    raw: bytes = b""


@dataclass(frozen=True)
class CapturedPage:
    """Which captured messages a listing asks for: newest first, older than `before_id` when set."""

    limit: int
    before_id: int | None


def captured_page(page_size: int, page_token: str) -> CapturedPage:
    """The page a ListCapturedMessages request asks for; the token is the last id of the previous page."""
    violations = Violations()
    if page_size < 0:
        violations.add("page_size", INVALID_PAGE_SIZE, "page_size must not be negative")
    before_id = None
    if page_token:
        if not (page_token.isascii() and page_token.isdigit() and len(page_token) <= 19):
            violations.add("page_token", INVALID_PAGE_TOKEN, "page_token is not one this service returned")
        else:
            before_id = int(page_token)
    violations.raise_if_any()
    limit = min(page_size or DEFAULT_CAPTURED_PAGE_SIZE, MAX_CAPTURED_PAGE_SIZE)
    return CapturedPage(limit=limit, before_id=before_id)


def next_captured_page_token(page: CapturedPage, fetched_ids: Sequence[int]) -> str:
    """The token of the next page, given the ids fetched for this one (one more than the page when there is more)."""
    return str(fetched_ids[page.limit - 1]) if len(fetched_ids) > page.limit else ""
