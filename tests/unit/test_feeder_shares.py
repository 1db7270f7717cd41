"""How the feeder (services/delivery/feeder.py) splits the room in the batch stream among the campaigns it feeds."""

from __future__ import annotations

from services.delivery.feeder import _shares


def test_the_room_is_split_evenly_and_the_first_runs_get_the_odd_batches() -> None:
    assert _shares([(1, 100), (2, 100), (3, 100)], 10) == {1: 4, 2: 3, 3: 3}


def test_a_run_with_fewer_batches_left_leaves_the_rest_to_the_others() -> None:
    assert _shares([(1, 2), (2, 100)], 10) == {1: 2, 2: 8}


def test_no_run_gets_more_than_it_has_left_even_with_room_to_spare() -> None:
    assert _shares([(1, 2), (2, 3)], 50) == {1: 2, 2: 3}


def test_a_single_batch_of_room_goes_to_the_first_run_only() -> None:
    assert _shares([(7, 5), (3, 5)], 1) == {7: 1}
