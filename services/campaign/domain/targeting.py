"""Who receives a campaign and what: targeting (lists, segments, rules), auto-resend and A/B variations."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from services.campaign.domain.model import AutoResend, Targeting, Variation, text_violation
from services.common.errors import FieldViolation

MIN_VARIATIONS = 2
MAX_VARIATIONS = 5
MAX_AUTO_RESEND_WAIT_DAYS = 365
_RULES_OPERATORS = ("and", "or")


def _is_positive_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, float) and math.isfinite(value) and value.is_integer() and value > 0


def _json_problem(value: object) -> str | None:
    """Why a JSON-compatible value cannot be stored as jsonb (NUL in a string, a non-finite number), or None."""
    if isinstance(value, str):
        return "strings must not contain NUL characters" if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "numbers must be finite"
    if isinstance(value, Mapping):
        for key, item in value.items():
            problem = _json_problem(key) or _json_problem(item)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = _json_problem(item)
            if problem:
                return problem
    return None


def rules_bundle_problem(bundle: Mapping[str, Any]) -> str | None:
    """What is wrong with the envelope of a RulesJsonBundle, or None; the audience service judges the rules."""
    operator = bundle.get("operator")
    if not isinstance(operator, str) or operator.lower() not in _RULES_OPERATORS:
        return 'rules_bundle needs an "operator" of "and" or "or"'
    criteria = bundle.get("criteria")
    if not isinstance(criteria, list):
        return 'rules_bundle needs a "criteria" list'
    for index, criterion in enumerate(criteria):
        if not isinstance(criterion, Mapping):
            return f"criteria[{index}] must be an object"
        if not _is_positive_integer(criterion.get("list_id")):
            return f"criteria[{index}] needs a positive integer list_id"
    return _json_problem(bundle)


def _integral_numbers(value: Any) -> Any:
    """The value with whole floats turned into ints: protobuf's Struct carries every number as a double."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {key: _integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(item) for item in value]
    return value


def validate_targeting(targeting: Targeting) -> tuple[Targeting, list[FieldViolation]]:
    """The targeting to store (sources without duplicates; an empty bundle means no rules) and its problems."""
    violations: list[FieldViolation] = []
    for name, sources in (("included", targeting.included), ("excluded", targeting.excluded)):
        if any(source.list_id <= 0 or source.segment_id < 0 for source in sources):
            violations.append(
                FieldViolation(
                    f"targeting.{name}",
                    "TARGETING_INVALID",
                    f"targeting.{name} needs positive list ids and segment ids of 0 (whole list) or more",
                )
            )
    bundle: Mapping[str, Any] | None = None
    if targeting.rules_bundle:
        problem = rules_bundle_problem(targeting.rules_bundle)
        if problem:
            violations.append(FieldViolation("targeting.rules_bundle", "RULES_BUNDLE_INVALID", problem))
        else:
            bundle = _integral_numbers(targeting.rules_bundle)
    normalized = Targeting(
        included=tuple(dict.fromkeys(targeting.included)),
        excluded=tuple(dict.fromkeys(targeting.excluded)),
        rules_bundle=bundle,
    )
    return normalized, violations


def validate_auto_resend(auto_resend: AutoResend) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    low = 1 if auto_resend.enabled else 0
    if not low <= auto_resend.wait_days <= MAX_AUTO_RESEND_WAIT_DAYS:
        violations.append(
            FieldViolation(
                "auto_resend.wait_days",
                "AUTO_RESEND_WAIT_DAYS_INVALID",
                f"auto_resend.wait_days must lie between {low} and {MAX_AUTO_RESEND_WAIT_DAYS}",
            )
        )
    if auto_resend.enabled and not auto_resend.subject.strip():
        violations.append(
            FieldViolation(
                "auto_resend.subject", "AUTO_RESEND_SUBJECT_REQUIRED", "an enabled auto-resend needs a subject"
            )
        )
    if auto_resend.enabled and not auto_resend.preheader_text.strip():
        violations.append(
            FieldViolation(
                "auto_resend.preheader_text",
                "AUTO_RESEND_PREHEADER_REQUIRED",
                "an enabled auto-resend needs a preheader_text",
            )
        )
    for name in ("subject", "preheader_text"):
        problem = text_violation(getattr(auto_resend, name), f"auto_resend.{name}")
        if problem:
            violations.append(problem)
    return violations


def validate_variations(variations: Sequence[Variation]) -> list[FieldViolation]:
    """Problems of an A/B test's variations; an empty list (no A/B test) has none."""
    if not variations:
        return []

    def violation(reason: str, message: str) -> FieldViolation:
        return FieldViolation("variations", reason, message)

    violations: list[FieldViolation] = []
    if len(variations) < MIN_VARIATIONS:
        violations.append(
            violation("VARIATIONS_TOO_FEW", f"an A/B test needs at least {MIN_VARIATIONS} variations")
        )
    if len(variations) > MAX_VARIATIONS:
        violations.append(
            violation("VARIATIONS_TOO_MANY", f"an A/B test takes at most {MAX_VARIATIONS} variations")
        )
    incomplete = [i for i, v in enumerate(variations) if v.email_id == 0 or v.weight == 0]
    if incomplete:
        violations.append(
            violation("VARIATION_FIELDS_REQUIRED", f"variations {incomplete} need an email_id and a weight")
        )
    negative = [i for i, v in enumerate(variations) if v.email_id < 0 or v.weight < 0]
    email_ids = [v.email_id for v in variations if v.email_id > 0]
    if negative:
        violations.append(violation("VARIATION_VALUE_INVALID", f"variations {negative} have a negative value"))
    elif len(set(email_ids)) != len(email_ids):
        violations.append(violation("VARIATION_VALUE_INVALID", "two variations name the same email_id"))
    weights = [v.weight for v in variations]
    total = sum(weights)
    # Judged only on positive weights, where a share means something; integer arithmetic avoids rounding.
    if all(weight > 0 for weight in weights) and any(weight * 100 < total for weight in weights):
        violations.append(
            violation("VARIATION_SHARE_TOO_SMALL", "every variation must get at least 1% of the recipients")
        )
    return violations
