"""Domain errors: a reason in UPPER_SNAKE, a kind, and the offending fields; no transport knowledge here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ErrorKind(enum.Enum):
    INVALID = "invalid"  # the request is malformed
    NOT_FOUND = "not_found"  # missing, or another user's
    CONFLICT = "conflict"  # would duplicate something that exists
    PRECONDITION = "precondition"  # valid request, wrong state (e.g. status machine)
    PERMISSION = "permission"  # the principal may not do this
    UNAVAILABLE = "unavailable"  # a dependency could not be reached


@dataclass(frozen=True)
class FieldViolation:
    field: str
    reason: str
    description: str


@dataclass
class DomainError(Exception):
    """Raised by domain and store code; api layers turn it into their transport's error."""

    kind: ErrorKind
    reason: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def invalid(reason: str, message: str, field_name: str) -> DomainError:
    return DomainError(ErrorKind.INVALID, reason, message, [FieldViolation(field_name, reason, message)])


def not_found(reason: str, message: str, field_name: str = "", **metadata: str) -> DomainError:
    violations = [FieldViolation(field_name, reason, message)] if field_name else []
    return DomainError(ErrorKind.NOT_FOUND, reason, message, violations, dict(metadata))


def conflict(reason: str, message: str, field_name: str = "") -> DomainError:
    violations = [FieldViolation(field_name, reason, message)] if field_name else []
    return DomainError(ErrorKind.CONFLICT, reason, message, violations)


def precondition(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(ErrorKind.PRECONDITION, reason, message, [], dict(metadata))


class Violations:
    """Collects every bad field of a request so that one error names them all."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field_name: str, reason: str, description: str) -> None:
        self.items.append(FieldViolation(field_name, reason, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            first = self.items[0]
            raise DomainError(ErrorKind.INVALID, first.reason, first.description, list(self.items))
