"""Tag rules, pure and synchronous: name normalisation and validation, request checks and the tag service's errors."""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import DomainError, ErrorKind, FieldViolation, Violations, conflict, not_found

MAX_TAG_NAME_LENGTH = 255
MAX_TEMPLATE_URL_LENGTH = 2000
_PUNCTUATION_ALLOWED = frozenset(" -_")

# Reasons the translator maps to legacy codes; they are part of the service's contract.
TAG_NAME_REQUIRED = "TAG_NAME_REQUIRED"
TAG_NAME_EMPTY = "TAG_NAME_EMPTY"
TAG_NAME_INVALID = "TAG_NAME_INVALID"
TAG_ID_REQUIRED = "TAG_ID_REQUIRED"
TAG_IDS_REQUIRED = "TAG_IDS_REQUIRED"
CAMPAIGN_IDS_REQUIRED = "CAMPAIGN_IDS_REQUIRED"
CAMPAIGN_IDS_INVALID = "CAMPAIGN_IDS_INVALID"
TAG_NOT_FOUND = "TAG_NOT_FOUND"
TAG_ALREADY_EXISTS = "TAG_ALREADY_EXISTS"
CAMPAIGN_NOT_FOUND = "CAMPAIGN_NOT_FOUND"
CAMPAIGN_SERVICE_UNAVAILABLE = "CAMPAIGN_SERVICE_UNAVAILABLE"
TEMPLATE_URL_INVALID = "TEMPLATE_URL_INVALID"


@dataclass(frozen=True)
class Tag:
    tag_id: int
    owner_user_id: int
    name: str
    create_time: datetime
    update_time: datetime
    # Absolute http(s) URL of the archive page's HTML template; "" for the built-in page.
    archive_template_url: str = ""


def normalise_tag_name(raw: str) -> str:
    """The name as stored: NFC (so a decomposed "é" counts as the letter it shows) and trimmed."""
    return unicodedata.normalize("NFC", raw).strip()


def tag_name_key(name: str) -> str:
    """What names are compared by: case-folded, so "News", "NEWS" and "news" are the same tag.

    Computed here rather than with SQL lower(), whose result depends on the database's locale.
    """
    return unicodedata.normalize("NFC", normalise_tag_name(name).casefold())


def is_valid_tag_name(name: str) -> bool:
    """Letters (any script), decimal digits, spaces, hyphens and underscores; at most 255 characters."""
    if not name or len(name) > MAX_TAG_NAME_LENGTH:
        return False
    previous_is_base = False
    for char in name:
        category = unicodedata.category(char)
        if category.startswith("M"):
            # A combining mark (Devanagari vowel signs, accents NFC cannot compose) belongs to
            # the letter or digit before it; on its own it is not a letter.
            if not previous_is_base:
                return False
            continue
        previous_is_base = category.startswith("L") or category == "Nd"
        if not previous_is_base and char not in _PUNCTUATION_ALLOWED:
            return False
    return True


def check_tag_name(raw: str, violations: Violations) -> str:
    """Adds the name's violation, if any, and returns the normalised name."""
    name = normalise_tag_name(raw)
    if raw == "":
        violations.add("name", TAG_NAME_REQUIRED, "name is required")
    elif name == "":
        violations.add("name", TAG_NAME_EMPTY, "name is empty after trimming whitespace")
    elif not is_valid_tag_name(name):
        violations.add(
            "name",
            TAG_NAME_INVALID,
            f"name may contain only letters, digits, spaces, hyphens and underscores, "
            f"at most {MAX_TAG_NAME_LENGTH} characters",
        )
    return name


def _check_tag_id(tag_id: int, violations: Violations) -> None:
    if tag_id <= 0:
        violations.add("tag_id", TAG_ID_REQUIRED, "tag_id is required")


def validate_new_tag_name(raw: str) -> str:
    """The name a new tag gets, or an INVALID error."""
    violations = Violations()
    name = check_tag_name(raw, violations)
    violations.raise_if_any()
    return name


def validate_rename(tag_id: int, raw: str) -> str:
    """The new name of a tag being renamed; every bad field is reported together."""
    violations = Violations()
    _check_tag_id(tag_id, violations)
    name = check_tag_name(raw, violations)
    violations.raise_if_any()
    return name


def validate_tag_id(tag_id: int) -> None:
    violations = Violations()
    _check_tag_id(tag_id, violations)
    violations.raise_if_any()


def validate_tag_ids(tag_ids: Sequence[int]) -> list[int]:
    """The distinct ids of a delete; ids that cannot exist are simply never found."""
    violations = Violations()
    if not tag_ids:
        violations.add("tag_ids", TAG_IDS_REQUIRED, "tag_ids is required")
    violations.raise_if_any()
    return unique_ids(tag_ids)


def is_valid_template_url(url: str) -> bool:
    """An absolute http or https URL with a host, at most 2000 characters, free of spaces and control characters."""
    if not url or len(url) > MAX_TEMPLATE_URL_LENGTH:
        return False
    # urlsplit tolerates spaces and control characters that no client would send on the wire.
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in url):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        # .port raises ValueError for a port that is not a number up to 65535.
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and port_ok


def validate_archive_template(tag_id: int, url: str) -> str:
    """The template URL to store ("" clears it); every bad field is reported together."""
    violations = Violations()
    _check_tag_id(tag_id, violations)
    if url and not is_valid_template_url(url):
        violations.add(
            "archive_template_url",
            TEMPLATE_URL_INVALID,
            f"archive_template_url must be empty or an absolute http(s) URL with a host, "
            f"at most {MAX_TEMPLATE_URL_LENGTH} characters",
        )
    violations.raise_if_any()
    return url


def validate_assignment(tag_id: int, campaign_ids: Sequence[int]) -> list[int]:
    """The distinct campaign ids of an assign or unassign; every bad field is reported together."""
    violations = Violations()
    _check_tag_id(tag_id, violations)
    if not campaign_ids:
        violations.add("campaign_ids", CAMPAIGN_IDS_REQUIRED, "campaign_ids is required")
    elif any(campaign_id <= 0 for campaign_id in campaign_ids):
        violations.add("campaign_ids", CAMPAIGN_IDS_INVALID, "campaign_ids must be positive")
    violations.raise_if_any()
    return unique_ids(campaign_ids)


def unique_ids(ids: Iterable[int]) -> list[int]:
    """The ids without repeats, in the order first given."""
    return list(dict.fromkeys(ids))


def tag_not_found(tag_id: int) -> DomainError:
    return not_found(TAG_NOT_FOUND, f"tag {tag_id} not found", "tag_id", tag_id=str(tag_id))


def tag_already_exists(name: str) -> DomainError:
    return conflict(TAG_ALREADY_EXISTS, f"a tag named {name!r} already exists", "name")


def campaigns_not_found(campaign_ids: Sequence[int], message: str = "") -> DomainError:
    """One violation on campaign_ids naming every missing campaign (metadata campaign_ids: "3,4")."""
    ids = ", ".join(str(i) for i in campaign_ids)
    description = message or f"campaigns not found: {ids}"
    return DomainError(
        ErrorKind.NOT_FOUND,
        CAMPAIGN_NOT_FOUND,
        description,
        [FieldViolation("campaign_ids", CAMPAIGN_NOT_FOUND, description)],
        {"campaign_ids": ",".join(str(i) for i in campaign_ids)} if campaign_ids else {},
    )


def ids_named_in(texts: Iterable[str], candidates: Sequence[int]) -> list[int]:
    """The candidates that some text names as a whole number, in candidate order (for downstream error texts)."""
    named = {int(number) for text in texts for number in re.findall(r"[0-9]+", text)}
    return [candidate for candidate in candidates if candidate in named]


def campaign_service_unavailable(message: str) -> DomainError:
    return DomainError(
        ErrorKind.UNAVAILABLE, CAMPAIGN_SERVICE_UNAVAILABLE, f"campaign service unavailable: {message}"
    )
