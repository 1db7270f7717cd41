"""Rules of mailing lists: a new list, its bundled confirmation email, list ids."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.audience.domain._checks import MAX_NAME, MAX_TEXT, check_text
from services.audience.domain._reasons import (
    CONFIRMATION_EMAIL_CONTENT_TYPE_INVALID,
    CONFIRMATION_EMAIL_FAILED,
    CONFIRMATION_EMAIL_FIELD_REQUIRED,
    CONFIRMATION_EMAIL_HTML_REQUIRED,
    CONFIRMATION_EMAIL_MODE_INVALID,
    CONFIRMATION_EMAIL_PLAIN_REQUIRED,
    CONFIRMATION_EMAIL_TEMPLATE_REQUIRED,
    LIST_ID_REQUIRED,
    LIST_NAME_REQUIRED,
    LIST_NAME_TOO_LONG,
    LIST_NOT_FOUND,
    OPT_IN_MODE_INVALID,
    TEXT_INVALID,
)
from services.audience.domain._records import NewList
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations, not_found

OPT_IN_MODES = ("Single", "Double")


def validate_new_list(new: NewList) -> NewList:
    violations = Violations()
    name = new.name.strip()
    if not name:
        violations.add("name", LIST_NAME_REQUIRED, "name is required")
    elif len(name) > MAX_NAME:
        violations.add("name", LIST_NAME_TOO_LONG, f"name is longer than {MAX_NAME} characters")
    elif "\x00" in name:
        violations.add("name", TEXT_INVALID, "name must not contain NUL characters")
    if new.opt_in_mode not in OPT_IN_MODES:
        violations.add("opt_in_mode", OPT_IN_MODE_INVALID, "opt_in_mode must be SINGLE or DOUBLE")
    for where, value in (
        ("description", new.description),
        ("sender_name", new.sender_name),
        ("sender_email_address", new.sender_email_address),
        ("sender_company", new.sender_company),
        ("sender_address", new.sender_address),
    ):
        check_text(value, where, MAX_TEXT if where in ("description", "sender_address") else MAX_NAME, violations)
    violations.raise_if_any()
    return NewList(
        name=name,
        description=new.description,
        opt_in_mode=new.opt_in_mode,
        sender_name=new.sender_name.strip(),
        sender_email_address=new.sender_email_address.strip(),
        sender_company=new.sender_company.strip(),
        sender_address=new.sender_address,
    )


@dataclass(frozen=True)
class ConfirmationEmail:
    """The legacy ConfirmationEmail object of list.create, as far as its checks need it."""

    subject: str
    from_name: str
    from_email: str
    content_type: str  # "HTML", "Plain", "Both", "" (not given) or "?" (not a content type)
    html_content: str
    plain_content: str
    mode: str  # an EmailMode name, "" (not given) or "?" (not a mode)
    template_id: int


def check_confirmation_email(email: ConfirmationEmail, violations: Violations) -> None:
    """The bundled confirmation email's own checks (legacy codes 21 to 26), every problem at once."""
    prefix = "confirmation_email."
    for name in ("subject", "from_name", "from_email"):
        if not getattr(email, name).strip():
            violations.add(prefix + name, CONFIRMATION_EMAIL_FIELD_REQUIRED, f"{prefix}{name} is required")
    if not email.content_type:
        violations.add(
            prefix + "content_type", CONFIRMATION_EMAIL_FIELD_REQUIRED, f"{prefix}content_type is required"
        )
    elif email.content_type not in ("HTML", "Plain", "Both"):
        violations.add(
            prefix + "content_type",
            CONFIRMATION_EMAIL_CONTENT_TYPE_INVALID,
            f"{prefix}content_type must be HTML, Plain or Both",
        )
    if email.content_type in ("HTML", "Both") and not email.html_content.strip():
        violations.add(
            prefix + "html_content",
            CONFIRMATION_EMAIL_HTML_REQUIRED,
            f"content type {email.content_type} needs {prefix}html_content",
        )
    if email.content_type in ("Plain", "Both") and not email.plain_content.strip():
        violations.add(
            prefix + "plain_content",
            CONFIRMATION_EMAIL_PLAIN_REQUIRED,
            f"content type {email.content_type} needs {prefix}plain_content",
        )
    if email.mode == "?":
        violations.add(prefix + "mode", CONFIRMATION_EMAIL_MODE_INVALID, f"{prefix}mode is not an email mode")
    elif email.mode == "Template" and email.template_id <= 0:
        violations.add(
            prefix + "template_id",
            CONFIRMATION_EMAIL_TEMPLATE_REQUIRED,
            f"Template mode needs {prefix}template_id",
        )


# %Link:Confirm% in the legacy syntax or {{ Link:Confirm }} / {{{ Link:Confirm }}} in the modern one.
_CONFIRM_LINK = re.compile(r"%Link:Confirm%|\{\{\{?\s*Link:Confirm\s*\}\}\}?")


def missing_confirm_link_parts(email: ConfirmationEmail) -> list[str]:
    """The parts the email sends ("html", "plain") that lack the confirm link: a confirmation email
    nobody can confirm would leave every subscriber pending for good."""
    parts = []
    if email.content_type in ("HTML", "Both") and not _CONFIRM_LINK.search(email.html_content):
        parts.append("html")
    if email.content_type in ("Plain", "Both") and not _CONFIRM_LINK.search(email.plain_content):
        parts.append("plain")
    return parts


def confirmation_email_failed(detail: str) -> DomainError:
    return DomainError(
        ErrorKind.PRECONDITION,
        CONFIRMATION_EMAIL_FAILED,
        f"the confirmation email could not be created, so the list was not created either: {detail}",
    )


def confirmation_template_not_found(template_id: int) -> DomainError:
    """The confirmation email names a template the caller does not have: the same code as naming none (26)."""
    message = f"confirmation_email.template_id: template {template_id} not found"
    return DomainError(
        ErrorKind.INVALID,
        CONFIRMATION_EMAIL_TEMPLATE_REQUIRED,
        message,
        [FieldViolation("confirmation_email.template_id", CONFIRMATION_EMAIL_TEMPLATE_REQUIRED, message)],
    )


def default_confirmation_email_name(list_id: int) -> str:
    return f"Confirmation email: {list_id}"


def validate_list_id(list_id: int, where: str = "list_id") -> None:
    if list_id <= 0:
        raise DomainError(
            ErrorKind.INVALID,
            LIST_ID_REQUIRED,
            f"{where} is required",
            [FieldViolation(where, LIST_ID_REQUIRED, f"{where} is required")],
        )


def list_not_found(list_id: int, where: str = "list_id") -> DomainError:
    return not_found(LIST_NOT_FOUND, f"list {list_id} not found", where, list_id=str(list_id))
