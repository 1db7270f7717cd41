"""A campaign's statistics from delivery's (services/campaign/convert.py) to the legacy answer: every counter reaches it."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from herald.campaign.v1 import campaign_pb2
from herald.delivery.v1 import delivery_pb2

from services.campaign import convert
from translator.commands.campaign.render import Extras, render_with_extras

M = TypeVar("M", bound=Message)


def counters(descriptor: Descriptor) -> list[str]:
    """The int64 figures of a statistics message (ids, the campaign's computed duration and the main send's figures,
    which only the throughput is computed from, left out)."""
    return [
        field.name
        for field in descriptor.fields
        if field.type == FieldDescriptor.TYPE_INT64
        and not field.name.endswith("_id")
        and field.name != "duration_seconds"
        and not field.name.startswith("main_send_")
    ]


def numbered(message: M, start: int) -> M:
    """The message with its counters set to start, start + 1, …"""
    for offset, name in enumerate(counters(message.DESCRIPTOR)):
        setattr(message, name, start + offset)
    return message


def figures(message: Message) -> dict[str, int]:
    return {name: getattr(message, name) for name in counters(message.DESCRIPTOR)}


def delivery_statistics(start: int) -> delivery_pb2.CampaignStatistics:
    return numbered(
        delivery_pb2.CampaignStatistics(
            campaign_id=start,
            variations=[numbered(delivery_pb2.VariationStatistics(email_id=7), start)],
            domains=[numbered(delivery_pb2.DomainStatistics(domain="example.com"), start)],
        ),
        start,
    )


def test_every_counter_of_delivery_is_a_counter_of_the_campaign_statistics() -> None:
    stats = delivery_statistics(1)

    converted = convert.statistics_to_proto(stats)

    assert "total_deferred" in figures(converted)
    assert figures(converted) == figures(stats)
    assert figures(converted.variations[0]) == figures(stats.variations[0])
    assert figures(converted.domains[0]) == figures(stats.domains[0])


def test_every_counter_is_summed_over_campaigns() -> None:
    first, second = delivery_statistics(1), delivery_statistics(100)

    total = convert.total_statistics([first, second])

    assert figures(total) == {name: value + figures(second)[name] for name, value in figures(first).items()}
    [variation] = total.variations
    assert variation.total_deferred == first.variations[0].total_deferred + second.variations[0].total_deferred
    assert figures(variation) == {
        name: value + figures(second.variations[0])[name] for name, value in figures(first.variations[0]).items()
    }
    [domain] = total.domains
    assert figures(domain) == {
        name: value + figures(second.domains[0])[name] for name, value in figures(first.domains[0]).items()
    }


def test_the_legacy_answer_shows_total_deferred_beside_total_failed_wherever_it_shows_failed() -> None:
    campaign = campaign_pb2.Campaign(campaign_id=5, statistics=convert.statistics_to_proto(delivery_statistics(1)))
    statistics = campaign.statistics

    row = render_with_extras(campaign, Extras(statistics=True, variation_statistics=True, domains=True))

    assert (row["TotalFailed"], row["TotalDeferred"]) == (statistics.total_failed, statistics.total_deferred)
    [by_domain] = row["RecipientDomains"]
    [by_variation] = row["SplitABTestStatistics"]
    assert by_domain["TotalDeferred"] == statistics.domains[0].total_deferred > 0
    assert by_variation["TotalDeferred"] == statistics.variations[0].total_deferred > 0


def test_the_throughput_is_the_main_sends_not_the_tail_of_retries() -> None:
    stats = delivery_statistics(1)
    stats.total_sent, stats.main_send_total_sent = 1000, 800
    stats.first_send_time.FromSeconds(1_000_000)
    # The main send took 10 s; deferred recipients were delivered until an hour later.
    stats.main_send_last_send_time.FromSeconds(1_000_010)
    stats.last_send_time.FromSeconds(1_003_600)

    converted = convert.statistics_to_proto(stats)

    assert converted.total_sent == 1000
    assert (converted.emails_per_second, converted.duration_seconds) == (80.0, 10)
    # Summed over campaigns: the main sends' messages over the span of any first send to any main send's last.
    total = convert.total_statistics([stats, stats])
    assert (total.emails_per_second, total.duration_seconds) == (160.0, 10)
