"""Pure tests of split tests in the send pipeline: the request carries them, the test group's size, the winner's choice."""

from __future__ import annotations

import json

import pytest

from services.campaign import sending as campaign_sending
from services.campaign.domain import (
    Campaign,
    SplitTest,
    Variation,
    Winner,
)
from services.common import events
from services.common.events import UndecodableEvent
from services.delivery import sending
from services.delivery.sending import HIGHEST_OPEN_RATE, MOST_UNIQUE_CLICKS, SplitTestFigures
from tests.unit.campaign_factory import NOW, SIGNER, as_delivery_reads_it, campaign


def ab_campaign(**changes: object) -> Campaign:
    """A campaign with two variations and a split test choosing by unique clicks."""
    ab = {
        "variations": (Variation(21, 50), Variation(22, 50)),
        "split_test": SplitTest(5, 7, 20, 6, Winner.MOST_UNIQUE_CLICKS),
    }
    return campaign(**{**ab, **changes})


# --- the send request -----------------------------------------------------------------------------------------


def test_the_send_request_carries_the_split_test_to_delivery() -> None:
    start = campaign_sending.start_sending(ab_campaign(), campaign_sending.SendProgress(), NOW)
    request = as_delivery_reads_it(start)
    assert request.split_test == sending.SplitTest(20, 6, MOST_UNIQUE_CLICKS)
    assert request.effective_split_test() == request.split_test
    assert request.email_ids() == [21, 22]

    plain = campaign_sending.start_sending(ab_campaign(split_test=None), campaign_sending.SendProgress(), NOW)
    assert as_delivery_reads_it(plain).split_test is None


def test_a_split_test_without_two_variations_sends_to_everybody_at_once() -> None:
    no_variations = ab_campaign(variations=())
    request = as_delivery_reads_it(
        campaign_sending.start_sending(no_variations, campaign_sending.SendProgress(), NOW)
    )
    assert request.split_test is not None and request.effective_split_test() is None
    one_email = ab_campaign(variations=(Variation(21, 50), Variation(21, 50)))
    request = as_delivery_reads_it(campaign_sending.start_sending(one_email, campaign_sending.SendProgress(), NOW))
    assert request.effective_split_test() is None


@pytest.mark.parametrize(
    "split_test",
    [
        {"test_size_percent": 0, "test_duration_hours": 1, "winner": "WINNER_HIGHEST_OPEN_RATE"},
        {"test_size_percent": 101, "test_duration_hours": 1, "winner": "WINNER_HIGHEST_OPEN_RATE"},
        {"test_size_percent": 20, "test_duration_hours": 1, "winner": HIGHEST_OPEN_RATE},
        {"test_size_percent": 20, "test_duration_hours": 1},
        "20%",
    ],
)
def test_a_malformed_split_test_makes_the_request_undecodable(split_test: object) -> None:
    payload = {"campaign_id": 7, "owner_user_id": 3, "occurrence": 1, "split_test": split_test}
    with pytest.raises(UndecodableEvent):
        events.CAMPAIGN_SEND_REQUESTED.decode(SIGNER.signed(json.dumps(payload).encode()), SIGNER)


# --- the test group ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipients", "percent", "expected"),
    [
        (50, 20, 10),
        (1000, 15, 150),
        (10, 25, 3),  # 2.5 rounds half up
        (7, 10, 1),  # 0.7 rounds to 1
        (3, 10, 1),  # 0.3 would be nobody: at least one
        (1, 20, 1),  # the test group is everybody: sent at once
        (40, 99, 40),  # 39.6 rounds to everybody
        (0, 20, 0),
    ],
)
def test_the_test_group_is_test_size_percent_rounded_half_up_and_never_empty(
    recipients: int, percent: int, expected: int
) -> None:
    assert sending.split_test_group_size(recipients, percent) == expected


# --- the winner --------------------------------------------------------------------------------------------------


def figures(email_id: int, sent: int, opens: int = 0, clicks: int = 0) -> SplitTestFigures:
    return SplitTestFigures(email_id=email_id, sent=sent, unique_opens=opens, unique_clicks=clicks)


def test_the_highest_open_rate_wins_not_the_most_opens() -> None:
    # 4 of 5 (80 %) beats 6 of 10 (60 %).
    test_group = [figures(21, 10, opens=6), figures(22, 5, opens=4)]
    assert sending.split_test_winner(HIGHEST_OPEN_RATE, [21, 22], test_group) == 22


def test_the_most_unique_clicks_win_whatever_the_opens() -> None:
    test_group = [figures(21, 10, opens=9, clicks=2), figures(22, 10, opens=1, clicks=3), figures(23, 10)]
    assert sending.split_test_winner(MOST_UNIQUE_CLICKS, [21, 22, 23], test_group) == 22


@pytest.mark.parametrize("rule", [HIGHEST_OPEN_RATE, MOST_UNIQUE_CLICKS])
def test_without_opens_or_clicks_the_variation_listed_first_wins(rule: str) -> None:
    test_group = [figures(21, 10), figures(22, 10)]
    assert sending.split_test_winner(rule, [22, 21], test_group) == 22
    assert sending.split_test_winner(rule, [21, 22], test_group) == 21


def test_a_tie_goes_to_the_variation_listed_first() -> None:
    # 3 of 6 and 5 of 10 are the same rate.
    test_group = [figures(21, 6, opens=3, clicks=4), figures(22, 10, opens=5, clicks=4), figures(23, 10, opens=1)]
    assert sending.split_test_winner(HIGHEST_OPEN_RATE, [23, 22, 21], test_group) == 22
    assert sending.split_test_winner(MOST_UNIQUE_CLICKS, [23, 22, 21], test_group) == 22


def test_a_variation_nobody_was_sent_to_has_no_open_rate() -> None:
    # Nothing sent (all failed, or a variation with no test recipient): a rate of 0, never a division by zero.
    test_group = [figures(21, 0), figures(22, 4, opens=1)]
    assert sending.split_test_winner(HIGHEST_OPEN_RATE, [21, 22, 23], test_group) == 22
    assert sending.split_test_winner(HIGHEST_OPEN_RATE, [21, 23], []) == 21
