"""Pure tests of services.delivery.domain: statistics requests, recipient domains and how figures add up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.errors import DomainError, ErrorKind
from services.delivery import domain
from services.delivery.domain import CampaignStatistics, DomainFigures, EventCounts, RecipientCounts


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("Ann@Example.COM", "example.com"),
        ("  bob@mail.example.org ", "mail.example.org"),
        ('"odd@quoted"@example.net', "example.net"),
        ("no-at-sign", ""),
    ],
)
def test_the_recipient_domain_is_the_lower_cased_part_after_the_last_at(address: str, expected: str) -> None:
    assert domain.recipient_domain(address) == expected


def test_a_statistics_request_keeps_distinct_ids_in_request_order() -> None:
    assert domain.validate_statistics_request([5, 3, 5, 1]) == [5, 3, 1]
    assert domain.validate_statistics_request([]) == []


def test_more_than_ten_thousand_ids_is_too_many() -> None:
    assert len(domain.validate_statistics_request(list(range(domain.MAX_CAMPAIGN_IDS)))) == domain.MAX_CAMPAIGN_IDS
    with pytest.raises(DomainError) as raised:
        domain.validate_statistics_request(list(range(domain.MAX_CAMPAIGN_IDS + 1)))
    assert raised.value.kind is ErrorKind.INVALID
    assert [(v.field, v.reason) for v in raised.value.violations] == [("campaign_ids", "TOO_MANY_CAMPAIGNS")]


def test_every_requested_campaign_gets_an_entry_and_the_fixed_total_wins_over_the_row_count() -> None:
    sent_at = datetime(2025, 6, 1, tzinfo=UTC)
    counts = {
        1: RecipientCounts(total=4, sent=2, failed=1, deferred=1, first_sent_at=sent_at, last_sent_at=sent_at),
        2: RecipientCounts(total=4, sent=4),
    }
    domains = {1: [DomainFigures("example.com", 4, 2, 1, 1)]}
    events = {1: EventCounts(opens=5, unique_opens=2)}

    entries = domain.campaign_statistics([2, 9, 1], {2: 10}, counts, events, {}, domains)

    assert [e.campaign_id for e in entries] == [2, 9, 1]
    assert (entries[0].total_recipients, entries[0].sent) == (10, 4)
    assert entries[1] == CampaignStatistics(campaign_id=9)
    assert (entries[2].total_recipients, entries[2].failed, entries[2].deferred) == (4, 1, 1)
    assert entries[2].events.unique_opens == 2
    assert entries[2].domains == domains[1] and entries[2].first_sent_at == sent_at
