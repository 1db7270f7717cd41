"""Checks every part of the audience shares: who owns what, email and IP addresses, text, id lists and pages."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from email_validator import EmailNotValidError, validate_email

from services.audience.domain._reasons import (
    ADMIN_CANNOT_OWN,
    EMAIL_ADDRESS_INVALID,
    EMAIL_ADDRESS_REQUIRED,
    PAGE_INVALID,
    TEXT_INVALID,
)
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations

MAX_NAME = 255
MAX_TEXT = 10_000
MAX_EMAIL_LENGTH = 254


def owner_scope(principal: Principal) -> int | None:
    """Whose data the caller may see and change: their own, or (None) everyone's for an admin."""
    return None if principal.is_admin else principal.user_id


def owner_of_new(principal: Principal, what: str) -> int:
    """Lists and suppressions belong to exactly one user, so an admin (who is no user) cannot own one."""
    if principal.is_admin:
        raise DomainError(
            ErrorKind.PERMISSION, ADMIN_CANNOT_OWN, f"an admin cannot own {what}; use the user's credentials"
        )
    return principal.user_id


def normalise_email(raw: str) -> tuple[str, str]:
    """The address as stored (email-validator's normal form, domain lower-cased) and its key; ValueError if invalid."""
    text = raw.strip()
    if not text or len(text) > MAX_EMAIL_LENGTH:
        raise ValueError("an email address has 1 to 254 characters")
    try:
        address = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    local, _, domain = address.rpartition("@")
    address = f"{local}@{domain.lower()}"
    return address, email_key(address)


def email_key(address: str) -> str:
    """What addresses are compared by: the whole address lower-cased."""
    return address.strip().lower()


def check_email(raw: str, violations: Violations, where: str = "email_address") -> tuple[str, str]:
    if not raw.strip():
        violations.add(where, EMAIL_ADDRESS_REQUIRED, f"{where} is required")
        return "", ""
    try:
        return normalise_email(raw)
    except ValueError as exc:
        violations.add(where, EMAIL_ADDRESS_INVALID, f"{where} is not a valid email address: {exc}")
        return "", ""


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def check_text(value: str, where: str, limit: int, violations: Violations) -> str:
    """The text as given; TEXT_INVALID in `violations` when it holds NUL or is longer than `limit`."""
    if "\x00" in value:
        violations.add(where, TEXT_INVALID, f"{where} must not contain NUL characters")
    elif len(value) > limit:
        violations.add(where, TEXT_INVALID, f"{where} is longer than {limit} characters")
    return value


def validate_ids(ids: Sequence[int], where: str, reason: str) -> list[int]:
    """The distinct ids of a delete; ids that cannot exist are simply never found."""
    if not ids:
        raise DomainError(
            ErrorKind.INVALID,
            reason,
            f"{where} is required",
            [FieldViolation(where, reason, f"{where} is required")],
        )
    return unique_ids(i for i in ids if i > 0)


def unique_ids(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def check_page(page_size: int, skip: int) -> None:
    violations = Violations()
    if page_size < 0:
        violations.add("page_size", PAGE_INVALID, "page_size must not be negative")
    if skip < 0:
        violations.add("skip", PAGE_INVALID, "skip must not be negative")
    violations.raise_if_any()
