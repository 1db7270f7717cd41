"""Split tests: checking the settings CreateSplitTest stores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.campaign.domain.model import Unrecognized, Winner
from services.common.errors import DomainError, ErrorKind, FieldViolation

MAX_TEST_DURATION_HOURS = 720


@dataclass(frozen=True)
class SplitTestSettings:
    test_size_percent: int
    test_duration_hours: int
    winner: Winner


def check_split_test(
    campaign_id: int, test_size_percent: int, test_duration_hours: int, winner: Winner | Unrecognized | None
) -> tuple[SplitTestSettings | None, list[FieldViolation]]:
    """The settings to store and every problem with the request (the campaign's existence aside); `winner`
    is None when the caller gave none."""
    violations: list[FieldViolation] = []
    if campaign_id <= 0:
        violations.append(FieldViolation("campaign_id", "CAMPAIGN_ID_REQUIRED", "campaign_id is required"))
    if test_size_percent == 0:
        violations.append(
            FieldViolation("test_size_percent", "TEST_SIZE_REQUIRED", "test_size_percent is required")
        )
    elif not 1 <= test_size_percent <= 99:
        violations.append(
            FieldViolation("test_size_percent", "TEST_SIZE_INVALID", "test_size_percent must lie between 1 and 99")
        )
    if test_duration_hours == 0:
        violations.append(
            FieldViolation("test_duration_hours", "TEST_DURATION_REQUIRED", "test_duration_hours is required")
        )
    elif not 1 <= test_duration_hours <= MAX_TEST_DURATION_HOURS:
        violations.append(
            FieldViolation(
                "test_duration_hours",
                "TEST_DURATION_INVALID",
                f"test_duration_hours must lie between 1 and {MAX_TEST_DURATION_HOURS}",
            )
        )
    if winner is None:
        violations.append(FieldViolation("winner", "WINNER_REQUIRED", "winner is required"))
    elif isinstance(winner, Unrecognized):
        violations.append(FieldViolation("winner", "WINNER_INVALID", f"{winner} is not a winner rule"))
    if violations or not isinstance(winner, Winner):
        return None, violations
    return SplitTestSettings(test_size_percent, test_duration_hours, winner), []


def split_test_failure(violations: Sequence[FieldViolation], missing_campaign_id: int | None) -> DomainError:
    """INVALID naming every bad field (and the missing campaign beside them), or NOT_FOUND when that is all."""
    items = list(violations)
    if missing_campaign_id is not None:
        items.append(
            FieldViolation("campaign_id", "CAMPAIGN_NOT_FOUND", f"campaign {missing_campaign_id} not found")
        )
    kind = ErrorKind.INVALID if violations else ErrorKind.NOT_FOUND
    metadata = {"campaign_id": str(missing_campaign_id)} if missing_campaign_id is not None else {}
    return DomainError(kind, items[0].reason, items[0].description, items, metadata)
