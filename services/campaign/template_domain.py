"""Template rules without I/O: the template record, creation and update checks, ownership and list pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.campaign.domain.listing import list_owner_scope
from services.campaign.email_domain import check_text
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations, invalid

# The fields a request may set, by their Template (and Email) names; text limits and tag rules are an email's.
# An email in Template mode copies all but the name (email_domain.TEMPLATE_CONTENT).
FIELDS = ("name", "subject", "preheader_text", "html_content", "plain_content")
ALL_FIELDS = "*"

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# A real token is a dozen characters; refusing long ones bounds the work spent decoding junk.
MAX_PAGE_TOKEN_LENGTH = 64
_TOKEN_PREFIX = "after:"


@dataclass(frozen=True)
class Template:
    """Reusable email content, owned by exactly one user."""

    template_id: int
    owner_user_id: int
    name: str = ""
    subject: str = ""
    preheader_text: str = ""
    html_content: str = ""
    plain_content: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class TemplateUpdate:
    """A checked update request: what to change (by field name), and what was wrong with the request itself."""

    template_id: int
    changes: Mapping[str, str]
    violations: tuple[FieldViolation, ...] = ()


@dataclass(frozen=True)
class TemplatePage:
    """Which templates a list request asks for: those after `after_id`, at most `size` of them."""

    after_id: int
    size: int


# --- ownership and ids --------------------------------------------------------------------------------------


def owner_scope(principal: Principal) -> int | None:
    """The owner every query of this principal is limited to; None for an admin, who sees every user's."""
    return None if principal.is_admin else principal.user_id


def owner_of_new_template(principal: Principal) -> int:
    """A template belongs to exactly one user, so an admin (who is no user) cannot create one."""
    if principal.is_admin:
        raise DomainError(
            ErrorKind.PERMISSION,
            "ADMIN_CANNOT_OWN_TEMPLATES",
            "an admin cannot own templates; create them with the user's credentials",
        )
    return principal.user_id


def list_owner(principal: Principal, owner_user_id: int) -> int | None:
    """The owner a listing is limited to: an admin may name any user (0: everyone); a user only themself."""
    return list_owner_scope(principal, owner_user_id, "templates")


def validate_template_id(template_id: int, field_name: str = "template_id") -> None:
    if template_id <= 0:
        raise invalid("TEMPLATE_ID_REQUIRED", f"{field_name} must be a positive template id", field_name)


def template_not_found(template_id: int) -> DomainError:
    """The answer for a template that does not exist and for another user's alike, so neither is told apart."""
    message = f"template {template_id} not found"
    return DomainError(
        ErrorKind.NOT_FOUND,
        "TEMPLATE_NOT_FOUND",
        message,
        [FieldViolation("template_id", "TEMPLATE_NOT_FOUND", message)],
        {"template_id": str(template_id)},
    )


# --- content ------------------------------------------------------------------------------------------------


def _checked_changes(values: Mapping[str, object], violations: Violations) -> dict[str, str]:
    """The good values by field name (the name trimmed); what is wrong with the others goes to `violations`."""
    changes: dict[str, str] = {}
    for path, value in values.items():
        if path not in FIELDS:
            violations.add("update_mask", "UPDATE_MASK_INVALID", f"{path!r} is not a field of a template")
            continue
        text = value if isinstance(value, str) else ""
        if check_text(path, text, violations):
            changes[path] = text.strip() if path == "name" else text
    return changes


def result_violations(template: Template) -> list[FieldViolation]:
    """What makes a template unusable: no name, or nothing to send."""
    violations = Violations()
    if not template.name:
        violations.add("name", "TEMPLATE_NAME_REQUIRED", "name is required")
    if not template.html_content.strip() and not template.plain_content.strip():
        violations.add(
            "html_content", "TEMPLATE_CONTENT_REQUIRED", "a template needs html_content or plain_content"
        )
    return violations.items


def new_template(owner_user_id: int, values: Mapping[str, object]) -> Template:
    """The template to create from its field values, or INVALID naming every problem."""
    violations = Violations()
    changes = _checked_changes(values, violations)
    return _checked_result(_with(Template(template_id=0, owner_user_id=owner_user_id), changes), violations.items)


def update_paths(mask: Sequence[str], set_fields: Iterable[str]) -> list[str]:
    """The fields an update changes: the mask's, every field for "*", or the fields set when the mask is empty
    (AIP-134). Paths that name no field are kept, for the update to refuse."""
    if not mask:
        return [path for path in FIELDS if path in set(set_fields)]
    if ALL_FIELDS in mask:
        return list(FIELDS)
    return list(dict.fromkeys(mask))


def prepare_update(template_id: int, values: Mapping[str, object]) -> TemplateUpdate:
    """Checks what an update request says on its own (values by update-mask path) and keeps the good changes.
    What depends on the stored template (a name and some content left) is checked by `updated_template`."""
    violations = Violations()
    if template_id <= 0:
        violations.add(
            "template.template_id", "TEMPLATE_ID_REQUIRED", "template.template_id must be a positive template id"
        )
    changes = _checked_changes(values, violations)
    return TemplateUpdate(template_id, changes, tuple(violations.items))


def updated_template(update: TemplateUpdate, current: Template | None) -> Template:
    """The template after the update, or the error naming every problem of the request and of the result.

    A request with bad fields is INVALID even for a template that is not found; NOT_FOUND otherwise.
    """
    problems = list(update.violations)
    if current is None:
        if problems:
            raise _invalid(problems)
        raise template_not_found(update.template_id)
    return _checked_result(_with(current, update.changes), problems)


def _with(template: Template, changes: Mapping[str, str]) -> Template:
    # Every key is one of FIELDS (_checked_changes keeps no other), all of them text fields.
    return replace(template, **changes)  # type: ignore[arg-type]


def _checked_result(template: Template, problems: Sequence[FieldViolation]) -> Template:
    """The template, or INVALID naming the request's problems and the result's; a field already named for a bad
    value is not named again for being empty (the bad value was not taken)."""
    bad_fields = {violation.field for violation in problems}
    everything = [*problems, *(v for v in result_violations(template) if v.field not in bad_fields)]
    if everything:
        raise _invalid(everything)
    return template


def _invalid(violations: Sequence[FieldViolation]) -> DomainError:
    first = violations[0]
    return DomainError(ErrorKind.INVALID, first.reason, first.description, list(violations))


# --- list pages ---------------------------------------------------------------------------------------------


def page_of(page_size: int, page_token: str) -> TemplatePage:
    """The page a list request asks for (AIP-158): 0 means the default size, more than the maximum the maximum;
    a negative size or a token this service did not issue is INVALID."""
    violations = Violations()
    if page_size < 0:
        violations.add("page_size", "PAGE_SIZE_INVALID", "page_size must not be negative")
    after_id = _after_id(page_token) if page_token else 0
    if after_id is None:
        violations.add("page_token", "PAGE_TOKEN_INVALID", "page_token is not a token this service issued")
    violations.raise_if_any()
    size = min(page_size, MAX_PAGE_SIZE) if page_size > 0 else DEFAULT_PAGE_SIZE
    return TemplatePage(after_id or 0, size)


def next_page_token(last_template_id: int) -> str:
    """The token of the page after the one that ended with this template. Keyset, not offset: templates
    created or deleted between pages neither repeat nor skip the others."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{last_template_id}".encode()).decode().rstrip("=")


def _after_id(token: str) -> int | None:
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        return None
    try:
        text = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    digits = text.removeprefix(_TOKEN_PREFIX)
    if not text.startswith(_TOKEN_PREFIX) or not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits) if int(digits) > 0 else None
