"""Email content rules without I/O: the email record, update validation per scope, and personalization tags."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email

from services.campaign.domain import Unrecognized
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations
from services.common.personalization import NAMESPACES as NAMESPACES
from services.common.personalization import Helper as Helper
from services.common.personalization import Personalization as Personalization
from services.common.personalization import Tag as Tag
from services.common.personalization import TagError as TagError
from services.common.personalization import parse_personalization as parse_personalization
from services.common.personalization import personalization_problems as personalization_problems
from services.common.personalization import render_personalization as render_personalization

if TYPE_CHECKING:  # template_domain checks its texts with this module's rules, so it imports this one
    from services.campaign.template_domain import Template

# At most this many emails per ListEmails with ids (the legacy emails.get limit).
MAX_LISTED_IDS = 100

# Text limits in characters. Bodies stay far below the 64 MiB gRPC message limit even with four of them
# in one Email at four bytes per character.
MAX_SHORT_TEXT = 255
MAX_LINE_TEXT = 1000
MAX_URL = 2048
MAX_BODY = 2_000_000


class ContentType(enum.StrEnum):
    """Which parts an email carries; the values are the legacy names, stored as they are."""

    HTML = "HTML"
    PLAIN = "Plain"
    BOTH = "Both"


class EmailMode(enum.StrEnum):
    """How the email was made; the values are the legacy names, stored as they are."""

    EMPTY = "Empty"
    EDITOR = "Editor"
    TEMPLATE = "Template"
    IMPORT = "Import"
    UNLAYER = "Unlayer"
    STRIPO = "Stripo"


class ValidateScope(enum.StrEnum):
    """What an update is validated for (the legacy ValidateScope values)."""

    OPT_IN = "OptIn"
    CAMPAIGN = "Campaign"
    AUTO_RESPONDER = "AutoResponder"


@dataclass(frozen=True)
class Utm:
    """UTM parameters added to an email's links when enabled."""

    enabled: bool = False
    source: str = ""
    medium: str = ""
    campaign: str = ""
    term: str = ""
    content: str = ""
    merge_tags: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "source": self.source,
            "medium": self.medium,
            "campaign": self.campaign,
            "term": self.term,
            "content": self.content,
            "merge_tags": self.merge_tags,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, object]) -> Utm:
        def text(key: str) -> str:
            item = value.get(key, "")
            return item if isinstance(item, str) else ""

        return cls(
            enabled=value.get("enabled") is True,
            source=text("source"),
            medium=text("medium"),
            campaign=text("campaign"),
            term=text("term"),
            content=text("content"),
            merge_tags=value.get("merge_tags") is True,
        )


@dataclass(frozen=True)
class Email:
    """One email's content, owned by exactly one user."""

    email_id: int
    owner_user_id: int
    name: str = ""
    subject: str = ""
    preheader_text: str = ""
    from_name: str = ""
    from_email: str = ""
    reply_to_name: str = ""
    reply_to_email: str = ""
    html_content: str = ""
    plain_content: str = ""
    content_type: ContentType = ContentType.HTML
    mode: EmailMode = EmailMode.EMPTY
    fetch_url: str = ""
    fetch_plain_url: str = ""
    template_id: int = 0
    image_embedding: bool = False
    is_email_template: bool = False
    extra_content1: str = ""
    extra_content2: str = ""
    open_tracking: bool = True
    link_tracking: bool = True
    utm: Utm = field(default_factory=Utm)
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --- ownership and ids --------------------------------------------------------------------------------------


def owner_scope(principal: Principal) -> int | None:
    """The owner every query of this principal is limited to; None for an admin, who sees every user's."""
    return None if principal.is_admin else principal.user_id


def owner_of_new_email(principal: Principal) -> int:
    """An email belongs to exactly one user, so an admin (who is no user) cannot create one."""
    if principal.is_admin:
        raise DomainError(
            ErrorKind.PERMISSION,
            "ADMIN_CANNOT_OWN_EMAILS",
            "an admin cannot own emails; create them with the user's credentials",
        )
    return principal.user_id


def validate_email_id(email_id: int, field_name: str = "email_id") -> None:
    if email_id <= 0:
        raise DomainError(
            ErrorKind.INVALID,
            "EMAIL_ID_REQUIRED",
            f"{field_name} must be a positive email id",
            [FieldViolation(field_name, "EMAIL_ID_REQUIRED", f"{field_name} must be a positive email id")],
        )


def email_not_found(email_id: int) -> DomainError:
    message = f"email {email_id} not found"
    return DomainError(
        ErrorKind.NOT_FOUND,
        "EMAIL_NOT_FOUND",
        message,
        [FieldViolation("email_id", "EMAIL_NOT_FOUND", message)],
        {"email_id": str(email_id)},
    )


def listed_email_ids(email_ids: Sequence[int]) -> list[int]:
    """The ids to list, without duplicates in first-given order; INVALID for a non-positive id or too many."""
    violations = Violations()
    if any(email_id <= 0 for email_id in email_ids):
        violations.add("email_ids", "EMAIL_IDS_INVALID", "email_ids must be positive email ids")
    distinct = list(dict.fromkeys(email_ids))
    if len(distinct) > MAX_LISTED_IDS:
        violations.add(
            "email_ids",
            "EMAIL_IDS_TOO_MANY",
            f"email_ids names more than {MAX_LISTED_IDS} emails ({len(distinct)})",
        )
    violations.raise_if_any()
    return distinct


# --- updates ------------------------------------------------------------------------------------------------

_UTM_TEXT = ("source", "medium", "campaign", "term", "content")
_TEXT_LIMITS: dict[str, int] = {
    "name": MAX_SHORT_TEXT,
    "subject": MAX_LINE_TEXT,
    "preheader_text": MAX_LINE_TEXT,
    "from_name": MAX_SHORT_TEXT,
    "from_email": MAX_SHORT_TEXT,
    "reply_to_name": MAX_SHORT_TEXT,
    "reply_to_email": MAX_SHORT_TEXT,
    "html_content": MAX_BODY,
    "plain_content": MAX_BODY,
    "fetch_url": MAX_URL,
    "fetch_plain_url": MAX_URL,
    "extra_content1": MAX_BODY,
    "extra_content2": MAX_BODY,
    **{f"utm.{name}": MAX_SHORT_TEXT for name in _UTM_TEXT},
}
_BOOLEANS = frozenset(
    {"image_embedding", "is_email_template", "open_tracking", "link_tracking", "utm.enabled", "utm.merge_tags"}
)
# Fields whose personalization tags are checked; link tags make sense only in a body.
_TAGGED_FIELDS: dict[str, bool] = {
    "subject": False,
    "preheader_text": True,
    "html_content": True,
    "plain_content": True,
}
_ADDRESS_REASONS = {"from_email": "FROM_EMAIL_INVALID", "reply_to_email": "REPLY_TO_EMAIL_INVALID"}
# The Email fields UpdateEmail changes (an omitted mask: those the request populates); "utm.<name>" changes one
# UTM setting, "utm" all of them.
UPDATABLE_PATHS = (
    *(path for path in _TEXT_LIMITS if "." not in path),
    *sorted(path for path in _BOOLEANS if "." not in path),
    "content_type",
    "mode",
    "template_id",
    "utm",
)
# Issue 14: settings whose behaviour Herald does not implement. Only their defaults ("" / false) are accepted, so
# a caller asking for the behaviour is told it will not happen rather than having the value stored and ignored.
UNSUPPORTED: dict[str, str] = {
    "fetch_url": "Herald fetches no content from URLs (send html_content)",
    "fetch_plain_url": "Herald fetches no content from URLs (send plain_content)",
    "image_embedding": "Herald does not embed images in messages",
    "is_email_template": "templates are TemplateService's (herald template)",
    "utm.merge_tags": "Herald does not personalize UTM values",
}


def _unsupported(path: str, violations: Violations) -> None:
    violations.add(path, "SETTING_UNSUPPORTED", f"{path} is not supported: {UNSUPPORTED[path]}; leave it unset")


@dataclass(frozen=True)
class EmailUpdate:
    """A checked update request: what to change, for which scope, and what was wrong with the request itself."""

    email_id: int
    scope: ValidateScope | None
    changes: Mapping[str, object]
    violations: tuple[FieldViolation, ...] = ()


def check_text(path: str, value: str, violations: Violations) -> bool:
    """True for a good value of the text field `path` (an Email field name, which templates share); False after
    recording what is wrong: NUL characters, too long, or a malformed personalization tag."""
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refusing it here keeps the failure a client error.
        violations.add(path, "TEXT_INVALID", f"{path} must not contain NUL characters")
        return False
    limit = _TEXT_LIMITS[path]
    if len(value) > limit:
        violations.add(path, "TEXT_TOO_LONG", f"{path} is longer than {limit} characters")
        return False
    allow_links = _TAGGED_FIELDS.get(path)
    if allow_links is not None:
        problems = personalization_problems(value, allow_links=allow_links)
        if problems:
            violations.add(path, "PERSONALIZATION_TAG_INVALID", f"{path}: {problems[0]}")
            return False
    return True


def _checked_value(path: str, value: object, violations: Violations) -> tuple[bool, object]:
    """(True, the value to store) or (False, None) after recording what is wrong with it."""
    if path in _TEXT_LIMITS:
        text = value if isinstance(value, str) else ""
        if not check_text(path, text, violations):
            return False, None
        if path in UNSUPPORTED and text.strip():
            _unsupported(path, violations)
            return False, None
        if path not in _ADDRESS_REASONS:
            return True, text
        # Stored as typed (trimmed): the validator's normal form lower-cases the local part, which mail
        # servers may treat as case-sensitive.
        address = text.strip()
        if address:
            try:
                validate_email(address, check_deliverability=False)
            except EmailNotValidError as exc:
                violations.add(path, _ADDRESS_REASONS[path], f"{path} is not a valid email address: {exc}")
                return False, None
        return True, address
    if path in _BOOLEANS:
        if path in UNSUPPORTED and value is True:
            _unsupported(path, violations)
            return False, None
        return True, value is True
    if path == "content_type":
        if not isinstance(value, ContentType):
            violations.add(path, "CONTENT_TYPE_INVALID", "content_type must be HTML, PLAIN or BOTH")
            return False, None
        return True, value
    if path == "mode":
        if not isinstance(value, EmailMode):
            violations.add(path, "MODE_INVALID", "mode must name an email mode")
            return False, None
        return True, value
    if path == "template_id":
        if not isinstance(value, int) or value < 0:
            violations.add(path, "TEMPLATE_ID_INVALID", "template_id must not be negative")
            return False, None
        return True, value
    if path == "utm" and isinstance(value, Utm):
        good = all([check_text(f"utm.{name}", getattr(value, name), violations) for name in _UTM_TEXT])
        if value.merge_tags:
            _unsupported("utm.merge_tags", violations)
            good = False
        return good, value if good else None
    violations.add("update_mask", "UPDATE_MASK_INVALID", f"{path!r} is not a field an update may change")
    return False, None


def prepare_update(
    email_id: int, validate_scope: ValidateScope | Unrecognized | None, values: Mapping[str, object]
) -> EmailUpdate:
    """Checks what an update request says on its own (values by update-mask path) and keeps the good changes.
    `validate_scope` is None when the caller gave none; content_type and mode values are ContentType and
    EmailMode, anything else (None: the caller named none this version knows) is refused.

    What depends on the stored email (content for the content type, UTM settings, the template) is checked
    by `updated_email` once the email is loaded, so that one answer can name every problem.
    """
    violations = Violations()
    if email_id <= 0:
        violations.add("email.email_id", "EMAIL_ID_REQUIRED", "email.email_id must be a positive email id")
    scope = validate_scope if isinstance(validate_scope, ValidateScope) else None
    if validate_scope is None:
        violations.add("validate_scope", "VALIDATE_SCOPE_REQUIRED", "validate_scope is required")
    elif isinstance(validate_scope, Unrecognized):
        violations.add("validate_scope", "VALIDATE_SCOPE_INVALID", f"{validate_scope} is not a validate scope")
    changes: dict[str, object] = {}
    for path, value in values.items():
        good, checked = _checked_value(path, value, violations)
        if good:
            changes[path] = checked
    return EmailUpdate(email_id, scope, changes, tuple(violations.items))


def _derived_content_type(email: Email) -> ContentType:
    """The content type that the bodies present imply; unchanged when neither is present."""
    has_html, has_plain = bool(email.html_content.strip()), bool(email.plain_content.strip())
    if has_html and has_plain:
        return ContentType.BOTH
    if has_html:
        return ContentType.HTML
    if has_plain:
        return ContentType.PLAIN
    return email.content_type


def merged_email(current: Email, changes: Mapping[str, object]) -> Email:
    """The email with the changes applied. Without an explicit content type, it follows the bodies sent."""
    top = {path: value for path, value in changes.items() if "." not in path}
    utm_parts = {path.removeprefix("utm."): value for path, value in changes.items() if path.startswith("utm.")}
    email = replace(current, **top)  # type: ignore[arg-type]
    if utm_parts:
        email = replace(email, utm=replace(email.utm, **utm_parts))  # type: ignore[arg-type]
    if "content_type" not in changes and ({"html_content", "plain_content"} & set(changes)):
        email = replace(email, content_type=_derived_content_type(email))
    return email


def result_violations(email: Email) -> list[FieldViolation]:
    """What makes an email unfit for sending. The same for every scope, since every scope sends the email to
    someone; the scope-specific legacy checks (unsubscribe and opt-in links, sender domains) follow user-group
    flags that Herald does not have."""
    violations = Violations()
    # Nothing fetches FetchURL / FetchPlainURL (issue 14: they are refused), so only a body counts, in every mode.
    has_html = bool(email.html_content.strip())
    has_plain = bool(email.plain_content.strip())
    if email.content_type in (ContentType.HTML, ContentType.BOTH) and not has_html:
        violations.add(
            "html_content", "EMAIL_CONTENT_REQUIRED", f"content type {email.content_type} needs HTML content"
        )
    if email.content_type in (ContentType.PLAIN, ContentType.BOTH) and not has_plain:
        violations.add(
            "plain_content", "EMAIL_CONTENT_REQUIRED", f"content type {email.content_type} needs plain content"
        )
    if email.mode is EmailMode.TEMPLATE and email.template_id <= 0:
        violations.add("template_id", "TEMPLATE_ID_REQUIRED", "Template mode needs a template_id")
    if email.utm.enabled:
        for name in ("source", "medium", "campaign"):
            if not getattr(email.utm, name).strip():
                violations.add(f"utm.{name}", f"UTM_{name.upper()}_REQUIRED", f"UTM tracking needs utm.{name}")
    return violations.items


def updated_email(update: EmailUpdate, current: Email | None, *, template: Template | None) -> Email:
    """The email after the update, or the error naming every problem of the request and of the result.

    `template` is the one `named_template_id` names, if the email's owner has it (None otherwise). In Template
    mode its content is copied in, but for the fields the update sets itself.
    A request with bad fields is INVALID even for an email that is not found; NOT_FOUND otherwise.
    """
    problems = list(update.violations)
    if current is None:
        if problems:
            raise _invalid(problems)
        raise email_not_found(update.email_id)
    result = merged_email(current, update.changes)
    template_id = named_template_id(update, current)
    if template_id:
        if template is None or not _is_template_of(template, template_id, current.owner_user_id):
            problems.append(_template_not_found(template_id))
        elif result.mode is EmailMode.TEMPLATE:
            result = with_template_content(result, template, keep=update.changes)
    problems += result_violations(result)
    if problems:
        raise _invalid(problems)
    return result


# --- templates ----------------------------------------------------------------------------------------------

# What Template mode copies from the template (services/campaign/template_domain.py).
TEMPLATE_CONTENT = ("subject", "preheader_text", "html_content", "plain_content")


def named_template_id(update: EmailUpdate, current: Email) -> int:
    """The template an update names, which must be one of the email owner's (0: none): the non-zero template_id
    it sets, or the email's own when it switches to Template mode without setting one."""
    template_id = update.changes.get("template_id")
    if isinstance(template_id, int) and template_id > 0:
        return template_id
    if update.changes.get("mode") is EmailMode.TEMPLATE and "template_id" not in update.changes:
        return current.template_id
    return 0


def with_template_content(email: Email, template: Template, keep: Collection[str] = ()) -> Email:
    """The email with the template's subject, pre-header and bodies (a copy: later template edits do not reach
    it), but for the fields in `keep`; the content type follows the bodies unless `keep` names it."""
    copied = {name: getattr(template, name) for name in TEMPLATE_CONTENT if name not in keep}
    result = replace(email, **copied)
    if "content_type" not in keep:
        result = replace(result, content_type=_derived_content_type(result))
    return result


def new_email(
    owner_user_id: int, mode: EmailMode | Unrecognized | None, template_id: int, *, template: Template | None
) -> Email:
    """The email CreateEmail makes: empty, or in Template mode a copy of the template's content. `template` is
    the one `template_id` names, if the owner has it (None otherwise). INVALID names every problem."""
    violations = Violations()
    if isinstance(mode, Unrecognized):
        violations.add("mode", "MODE_INVALID", "mode must name an email mode")
    if template_id < 0:
        violations.add("template_id", "TEMPLATE_ID_INVALID", "template_id must not be negative")
    elif template_id > 0 and (template is None or not _is_template_of(template, template_id, owner_user_id)):
        violations.items.append(_template_not_found(template_id))
    elif template_id == 0 and mode is EmailMode.TEMPLATE:
        violations.add("template_id", "TEMPLATE_ID_REQUIRED", "Template mode needs a template_id")
    violations.raise_if_any()
    email = Email(
        email_id=0,
        owner_user_id=owner_user_id,
        mode=mode if isinstance(mode, EmailMode) else EmailMode.EMPTY,
        template_id=template_id,
    )
    if template is not None and email.mode is EmailMode.TEMPLATE:
        email = with_template_content(email, template)
    return email


def _is_template_of(template: Template, template_id: int, owner_user_id: int) -> bool:
    return template.template_id == template_id and template.owner_user_id == owner_user_id


def _template_not_found(template_id: int) -> FieldViolation:
    # The same for a template nobody has and for another user's, so that neither can be told apart.
    return FieldViolation("template_id", "TEMPLATE_NOT_FOUND", f"template {template_id} not found")


def _invalid(violations: Sequence[FieldViolation]) -> DomainError:
    first = violations[0]
    return DomainError(ErrorKind.INVALID, first.reason, first.description, list(violations))


# --- personalization tags -----------------------------------------------------------------------------------

# The tag rules live in services/common/personalization.py, since delivery renders them too; they stay
# importable from here (see the imports above).


PREVIEW_SUBJECT_PREFIX = "[Test] "


def check_preview_request(email_id: int, email_address: str, list_id: int) -> str:
    """The address a preview goes to (trimmed), or the error naming every bad field of the request."""
    violations = Violations()
    if email_id <= 0:
        violations.add("email_id", "EMAIL_ID_REQUIRED", "email_id must be a positive email id")
    address = email_address.strip()
    if not address:
        violations.add("email_address", "EMAIL_ADDRESS_REQUIRED", "email_address is required")
    else:
        try:
            validate_email(address, check_deliverability=False)
        except EmailNotValidError as exc:
            violations.add("email_address", "EMAIL_ADDRESS_INVALID", f"email_address is not valid: {exc}")
    if list_id < 0:
        violations.add("list_id", "LIST_ID_INVALID", "list_id must not be negative")
    violations.raise_if_any()
    return address


def preview_violations(email: Email) -> list[FieldViolation]:
    """What keeps an email from being previewed: what keeps it from being sent, and a sender address."""
    violations = result_violations(email)
    if not email.from_email:
        violations.append(
            FieldViolation("from_email", "FROM_EMAIL_REQUIRED", "a preview needs the email's from_email")
        )
    return violations


def preview_failure(violations: Sequence[FieldViolation]) -> DomainError:
    first = violations[0]
    return DomainError(ErrorKind.PRECONDITION, first.reason, first.description, list(violations))
