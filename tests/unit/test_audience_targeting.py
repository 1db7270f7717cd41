"""Which lists and segments of a targeting spec are not the owner's (RULINGS 15), judged without a database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.audience import domain
from services.common.errors import ErrorKind


def _spec(
    included: Sequence[tuple[int, int]] = (),
    excluded: Sequence[tuple[int, int]] = (),
    bundle: dict[str, Any] | None = None,
) -> domain.Targeting:
    return domain.validate_targeting(included, excluded, bundle or {})


OWNED = [1, 2]
SEGMENTS = {10: 1, 20: 2}  # segment -> its list


def _problems(spec: domain.Targeting) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in domain.unowned_sources(spec, OWNED, SEGMENTS)]


def test_owned_lists_and_their_own_segments_pass() -> None:
    assert _problems(_spec(included=[(1, 0), (2, 20)], excluded=[(1, 10)])) == []


def test_every_foreign_list_and_segment_is_named_in_order() -> None:
    spec = _spec(included=[(1, 0), (3, 0), (1, 20)], excluded=[(4, 0), (2, 99)])
    assert _problems(spec) == [
        ("included[1].list_id", "LIST_NOT_FOUND"),
        ("included[2].segment_id", "SEGMENT_NOT_FOUND"),
        ("excluded[0].list_id", "LIST_NOT_FOUND"),
        ("excluded[1].segment_id", "SEGMENT_NOT_FOUND"),
    ]


def test_bundle_criteria_and_their_segments_rules_are_checked() -> None:
    rule = {"type": "segments", "operator": "belongs to", "value": 20}
    bundle = {
        "operator": "and",
        "criteria": [
            {"list_id": 5, "operator": "and", "rules": []},
            {"list_id": 1, "operator": "and", "rules": [[rule]]},
            {"list_id": 2, "operator": "and", "rules": [[rule]]},
        ],
    }
    assert _problems(_spec(bundle=bundle)) == [
        ("rules_bundle.criteria[0].list_id", "LIST_NOT_FOUND"),
        ("rules_bundle.criteria[1].segment_id", "SEGMENT_NOT_FOUND"),
    ]


def test_not_found_error_names_every_problem() -> None:
    spec = _spec(included=[(3, 0), (4, 0)])
    error = domain.sources_not_found(domain.unowned_sources(spec, OWNED, SEGMENTS))
    assert (error.kind, error.reason, len(error.violations)) == (ErrorKind.NOT_FOUND, "LIST_NOT_FOUND", 2)
