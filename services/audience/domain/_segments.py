"""Rules of segments: a new segment's fields and rules, and the segments its rules may name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.audience import rules as segment_rules
from services.audience.domain._checks import MAX_NAME
from services.audience.domain._reasons import (
    LIST_ID_REQUIRED,
    RANDOMNESS_AUDIENCE_SIZE_INVALID,
    SEGMENT_NAME_REQUIRED,
    SEGMENT_NAME_TOO_LONG,
    SEGMENT_NOT_FOUND,
    SEGMENT_OPERATOR_INVALID,
    SEGMENT_OPERATOR_REQUIRED,
)
from services.audience.domain._records import NewSegment
from services.common.errors import DomainError, Violations, not_found


def validate_new_segment(
    *, list_id: int, name: str, operator: str, raw_rules: list[Any], randomness: bool, audience_size: int
) -> NewSegment:
    violations = Violations()
    if list_id <= 0:
        violations.add("segment.list_id", LIST_ID_REQUIRED, "segment.list_id is required")
    clean_name = name.strip()
    if not clean_name:
        violations.add("segment.name", SEGMENT_NAME_REQUIRED, "segment.name is required")
    elif len(clean_name) > MAX_NAME or "\x00" in clean_name:
        violations.add("segment.name", SEGMENT_NAME_TOO_LONG, f"segment.name has at most {MAX_NAME} characters")
    clean_operator = operator.strip().lower()
    if not clean_operator:
        violations.add("segment.operator", SEGMENT_OPERATOR_REQUIRED, "segment.operator is required")
    elif clean_operator not in (segment_rules.AND, segment_rules.OR):
        violations.add("segment.operator", SEGMENT_OPERATOR_INVALID, "segment.operator must be and or or")
    if audience_size < 0:
        violations.add(
            "segment.randomness_audience_size",
            RANDOMNESS_AUDIENCE_SIZE_INVALID,
            "segment.randomness_audience_size must not be negative",
        )
    criteria = segment_rules.Criteria()
    try:
        criteria = segment_rules.parse_criteria(raw_rules, where="segment.rules")
    except DomainError as exc:
        violations.items.extend(exc.violations)
    violations.raise_if_any()
    return NewSegment(
        list_id=list_id,
        name=clean_name,
        operator=clean_operator,
        rules=raw_rules,
        criteria=criteria,
        randomness=randomness,
        randomness_audience_size=audience_size,
    )


def check_segment_references(
    criteria: segment_rules.Criteria, segments_of_list: Mapping[int, object], where: str = "segment.rules"
) -> None:
    """A new segment may refer only to existing segments of its own list."""
    missing = sorted(criteria.segment_ids() - set(segments_of_list))
    if missing:
        raise segment_rules.rules_error(
            f"{where} refers to segments that are not segments of the list: {', '.join(map(str, missing))}", where
        )


def segment_not_found(segment_id: int, where: str = "segment_id") -> DomainError:
    return not_found(SEGMENT_NOT_FOUND, f"segment {segment_id} not found", where, segment_id=str(segment_id))
