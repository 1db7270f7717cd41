"""Delivery rules, pure and synchronous: recipient statuses and domains, statistics requests and how figures add up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.common.errors import Violations

# A statistics request names at most this many campaigns (campaigns.get asks for one page at a time).
MAX_CAMPAIGN_IDS = 10_000
# Per-domain statistics keep the domains with the most recipients; the long tail is left out.
MAX_DOMAINS_PER_CAMPAIGN = 100

# The statuses of a queue row, as stored.
PENDING = "Pending"
SENDING = "Sending"
SENT = "Sent"
FAILED = "Failed"
DROPPED = "Dropped"
RECIPIENT_STATUSES = (PENDING, SENDING, SENT, FAILED, DROPPED)

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
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None


@dataclass(frozen=True)
class EventCounts:
    """Opens and clicks of one campaign: every hit, and distinct recipients."""

    opens: int = 0
    unique_opens: int = 0
    clicks: int = 0
    unique_clicks: int = 0


@dataclass(frozen=True)
class VariationFigures:
    email_id: int
    total_recipients: int
    sent: int
    failed: int
    unique_opens: int
    unique_clicks: int


@dataclass(frozen=True)
class DomainFigures:
    domain: str
    total_recipients: int
    sent: int
    failed: int


@dataclass(frozen=True)
class CampaignStatistics:
    """Everything delivery reports about one campaign; all zeros when nothing was queued."""

    campaign_id: int
    total_recipients: int = 0
    sent: int = 0
    failed: int = 0
    events: EventCounts = field(default_factory=EventCounts)
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None
    variations: list[VariationFigures] = field(default_factory=list)
    domains: list[DomainFigures] = field(default_factory=list)


def campaign_statistics(
    campaign_ids: Sequence[int],
    run_totals: Mapping[int, int],
    counts: Mapping[int, RecipientCounts],
    events: Mapping[int, EventCounts],
    variations: Mapping[int, list[VariationFigures]],
    domains: Mapping[int, list[DomainFigures]],
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
                events=events.get(campaign_id, EventCounts()),
                first_sent_at=count.first_sent_at,
                last_sent_at=count.last_sent_at,
                variations=variations.get(campaign_id, []),
                domains=domains.get(campaign_id, []),
            )
        )
    return statistics
