"""The campaign service's events as it builds them from its domain (services/campaign/events.py)."""

from __future__ import annotations

from services.campaign import events


def test_deleted_campaigns_give_one_event_per_owner_with_ids_ascending() -> None:
    deletions = events.deleted_events([(9, 2), (3, 1), (5, 2), (4, 1)])
    assert [(e.owner_user_id, list(e.campaign_ids)) for e in deletions] == [(1, [3, 4]), (2, [5, 9])]


def test_nothing_deleted_gives_no_event() -> None:
    assert events.deleted_events([]) == []
