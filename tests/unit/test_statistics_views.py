"""Which statistics view the translator asks for: the breakdowns only when campaign.get or campaigns.get renders them."""

from __future__ import annotations

import pytest
from herald.campaign.v1 import campaign_pb2

from translator.commands.campaign import Extras, statistics_view_of

TOTALS = campaign_pb2.STATISTICS_VIEW_TOTALS
FULL = campaign_pb2.STATISTICS_VIEW_FULL


@pytest.mark.parametrize(
    ("extras", "view"),
    [
        # A plain campaign.get answers only CampaignThroughput, which the totals give.
        (Extras(domains=True), TOTALS),
        (Extras(tags=True, domains=True), TOTALS),
        # RetrieveStatistics renders RecipientDomains unless RetrieveRecipientDomains is false.
        (Extras(statistics=True, domains=True), FULL),
        (Extras(statistics=True, domains=False), TOTALS),
        # SplitABTestStatistics renders the per-variation figures, with or without the rest.
        (Extras(variation_statistics=True), FULL),
        (Extras(statistics=True, variation_statistics=True), FULL),
    ],
)
def test_the_breakdowns_are_asked_for_only_when_they_are_rendered(
    extras: Extras, view: campaign_pb2.StatisticsView.ValueType
) -> None:
    assert statistics_view_of(extras) == view
