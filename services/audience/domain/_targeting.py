"""Rules of targeting: included and excluded sources, the rules bundle, whose sources a spec names, stream chunks."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.audience import rules as segment_rules
from services.audience.domain._checks import unique_ids
from services.audience.domain._reasons import (
    CHUNK_SIZE_INVALID,
    LIST_NOT_FOUND,
    RULE_TYPE_UNSUPPORTED,
    RULES_BUNDLE_INVALID,
    SEGMENT_NOT_FOUND,
    TARGETING_INVALID,
)
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations

DEFAULT_CHUNK = 5_000
MAX_CHUNK = 50_000


@dataclass(frozen=True)
class Source:
    """A list, or one of its segments (segment_id 0 = the whole list)."""

    list_id: int
    segment_id: int = 0


@dataclass(frozen=True)
class Criterion:
    """One criterion of a rules bundle: subscribers of the list matching the rules."""

    list_id: int
    operator: str
    criteria: segment_rules.Criteria


@dataclass(frozen=True)
class Bundle:
    operator: str
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True)
class Targeting:
    """Who receives: included sources (narrowed by the bundle) or the bundle alone, minus excluded ones."""

    included: tuple[Source, ...] = ()
    excluded: tuple[Source, ...] = ()
    bundle: Bundle | None = None

    def list_ids(self) -> list[int]:
        ids = [s.list_id for s in self.included] + [s.list_id for s in self.excluded]
        if self.bundle is not None:
            ids += [c.list_id for c in self.bundle.criteria]
        return unique_ids(ids)


def _bundle_error(message: str, where: str = "rules_bundle") -> DomainError:
    return DomainError(
        ErrorKind.INVALID, RULES_BUNDLE_INVALID, message, [FieldViolation(where, RULES_BUNDLE_INVALID, message)]
    )


def _whole_number(value: object) -> int | None:
    """A Struct number (always a double) or a digit string as an int, when it is a whole positive number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0 < value < 2**53:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 18:
        number = int(value)
        return number if number > 0 else None
    return None


def parse_bundle(raw: Mapping[str, Any]) -> Bundle | None:
    """{"operator": "and"|"or", "criteria": [{"list_id", "operator", "rules"}]}; an empty object is no bundle.

    Keys are read case-insensitively, as the legacy dispatcher lower-cased them. A malformed bundle
    is RULES_BUNDLE_INVALID (never an empty audience); an unsupported rule type keeps its own reason.
    """
    if not raw:
        return None
    bundle = {str(k).lower(): v for k, v in raw.items()}
    unknown = set(bundle) - {"operator", "criteria"}
    if unknown:
        raise _bundle_error(f"rules_bundle has unknown keys: {', '.join(sorted(unknown))}")
    operator = bundle.get("operator", segment_rules.AND)
    if not isinstance(operator, str) or operator.strip().lower() not in (segment_rules.AND, segment_rules.OR):
        raise _bundle_error("rules_bundle.operator must be and or or", "rules_bundle.operator")
    raw_criteria = bundle.get("criteria")
    if not isinstance(raw_criteria, list) or not raw_criteria:
        raise _bundle_error("rules_bundle.criteria must be a non-empty array", "rules_bundle.criteria")
    criteria: list[Criterion] = []
    for i, raw_criterion in enumerate(raw_criteria):
        where = f"rules_bundle.criteria[{i}]"
        if not isinstance(raw_criterion, Mapping):
            raise _bundle_error(f"{where} must be an object with list_id, operator and rules", where)
        criterion = {str(k).lower(): v for k, v in raw_criterion.items()}
        list_id = _whole_number(criterion.get("list_id", criterion.get("listid")))
        if list_id is None:
            raise _bundle_error(f"{where}.list_id must be a list id", f"{where}.list_id")
        criterion_operator = criterion.get("operator", segment_rules.AND)
        if not isinstance(criterion_operator, str) or criterion_operator.strip().lower() not in (
            segment_rules.AND,
            segment_rules.OR,
        ):
            raise _bundle_error(f"{where}.operator must be and or or", f"{where}.operator")
        try:
            parsed = segment_rules.parse_criteria(criterion.get("rules", []), where=f"{where}.rules")
        except DomainError as exc:
            if exc.reason == RULE_TYPE_UNSUPPORTED:
                raise
            raise _bundle_error(exc.message, f"{where}.rules") from exc
        criteria.append(Criterion(list_id, criterion_operator.strip().lower(), parsed))
    return Bundle(operator.strip().lower(), tuple(criteria))


def validate_targeting(
    included: Sequence[tuple[int, int]], excluded: Sequence[tuple[int, int]], bundle: Mapping[str, Any]
) -> Targeting:
    violations = Violations()
    for where, sources in (("included", included), ("excluded", excluded)):
        for i, (list_id, segment_id) in enumerate(sources):
            if list_id <= 0 or segment_id < 0:
                violations.add(
                    f"{where}[{i}]",
                    TARGETING_INVALID,
                    f"{where}[{i}] needs a list id and a segment id (0 = whole list)",
                )
    violations.raise_if_any()
    return Targeting(
        included=tuple(dict.fromkeys(Source(list_id, segment_id) for list_id, segment_id in included)),
        excluded=tuple(dict.fromkeys(Source(list_id, segment_id) for list_id, segment_id in excluded)),
        bundle=parse_bundle(bundle),
    )


def unowned_sources(
    targeting: Targeting, owned_list_ids: Iterable[int], segment_lists: Mapping[int, int]
) -> list[FieldViolation]:
    """Every list a spec names that is not among the owner's, and every segment that is not one of its list's
    (`segment_lists`: segment id -> list id, for the owner's lists), including the segments a criterion's
    segments rules name; one violation each, in the order the spec names them."""
    owned = set(owned_list_ids)
    found: list[FieldViolation] = []

    def check(where: str, list_id: int, segment_ids: Iterable[int]) -> None:
        if list_id not in owned:
            found.append(FieldViolation(f"{where}.list_id", LIST_NOT_FOUND, f"list {list_id} not found"))
            return
        for segment_id in segment_ids:
            if segment_lists.get(segment_id) != list_id:
                found.append(
                    FieldViolation(f"{where}.segment_id", SEGMENT_NOT_FOUND, f"segment {segment_id} not found")
                )

    for name, sources in (("included", targeting.included), ("excluded", targeting.excluded)):
        for i, source in enumerate(sources):
            check(f"{name}[{i}]", source.list_id, [source.segment_id] if source.segment_id else [])
    for i, criterion in enumerate(targeting.bundle.criteria if targeting.bundle is not None else ()):
        check(f"rules_bundle.criteria[{i}]", criterion.list_id, sorted(criterion.criteria.segment_ids()))
    return found


def sources_not_found(violations: Sequence[FieldViolation]) -> DomainError:
    """NOT_FOUND naming every list and segment of a spec that is not the owner's."""
    first = violations[0]
    return DomainError(ErrorKind.NOT_FOUND, first.reason, first.description, list(violations))


def chunk_size(requested: int) -> int:
    if requested < 0 or requested > MAX_CHUNK:
        raise DomainError(
            ErrorKind.INVALID,
            CHUNK_SIZE_INVALID,
            f"chunk_size must be 0 (default {DEFAULT_CHUNK}) to {MAX_CHUNK}",
            [FieldViolation("chunk_size", CHUNK_SIZE_INVALID, "chunk_size is out of range")],
        )
    return requested or DEFAULT_CHUNK
