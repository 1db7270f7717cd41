"""Rules of an owner's suppression list: which addresses a call suppresses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.audience.domain._checks import normalise_email
from services.audience.domain._reasons import EMAIL_ADDRESS_INVALID, EMAIL_ADDRESS_REQUIRED
from services.common.errors import Violations

MAX_SUPPRESSIONS_PER_CALL = 100_000


def suppression_keys(addresses: Sequence[str]) -> list[str]:
    """The keys of the addresses to suppress; every invalid address is named."""
    violations = Violations()
    if not addresses:
        violations.add("email_addresses", EMAIL_ADDRESS_REQUIRED, "email_addresses is required")
    if len(addresses) > MAX_SUPPRESSIONS_PER_CALL:
        violations.add(
            "email_addresses", EMAIL_ADDRESS_INVALID, f"at most {MAX_SUPPRESSIONS_PER_CALL} addresses per call"
        )
    keys: list[str] = []
    for i, address in enumerate(addresses[:MAX_SUPPRESSIONS_PER_CALL]):
        try:
            keys.append(normalise_email(address)[1])
        except ValueError as exc:
            violations.add(f"email_addresses[{i}]", EMAIL_ADDRESS_INVALID, f"{address[:100]!r}: {exc}")
    violations.raise_if_any()
    return unique_ids_str(keys)


def unique_ids_str(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
