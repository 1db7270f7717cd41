"""Personalization tags in subjects and bodies: parsing them, checking them, and rendering them with a recipient's values.

The campaign service checks tags when content is saved; delivery renders them for every recipient
(parsing each text once per campaign, not once per message) and the translator's archive pages
render them for a web view.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import html
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

NAMESPACES = ("Subscriber", "User", "List", "Campaign", "Link")
_NAMESPACE_BY_FOLDED = {namespace.casefold(): namespace for namespace in NAMESPACES}


class Helper(enum.StrEnum):
    """A function applied to a tag's value: `{{urlEncode Subscriber:EmailAddress}}`."""

    URL_ENCODE = "urlEncode"
    UPPERCASE = "uppercase"


_HELPER_BY_FOLDED = {helper.value.casefold(): helper for helper in Helper}
_OPENER = re.compile(r"\{\{|%")
_LEGACY_OPENER = re.compile(r"%")
_FIELD = r"[A-Za-z0-9_.\-]+(?::[A-Za-z0-9_.\-]+)*"
_EXPRESSION = re.compile(
    r"""\s*
    (?:(?P<helper>[A-Za-z]+)\s+)?
    (?P<namespace>[A-Za-z]+):(?P<field>"""
    + _FIELD
    + r""")\s*
    (?:\|\s*(?:"(?P<double>(?:[^"\\]|\\.)*)"|'(?P<single>(?:[^'\\]|\\.)*)')\s*)?
    """,
    re.VERBOSE | re.DOTALL,
)
_LEGACY = re.compile(r"%(?P<namespace>[A-Za-z]+):(?P<field>[A-Za-z0-9_]+(?::[A-Za-z0-9_]+)*)%")
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True)
class Tag:
    """One personalization tag found in a text, at text[start:end]."""

    start: int
    end: int
    namespace: str
    field: str
    raw: bool = False
    helper: Helper | None = None
    fallback: str | None = None
    legacy: bool = False

    @property
    def key(self) -> str:
        """`Namespace:Field`, the key its value is looked up by."""
        return f"{self.namespace}:{self.field}"


@dataclass(frozen=True)
class TagError:
    """Something at text[start:end] that opens a tag but is not a valid one."""

    start: int
    end: int
    message: str


@dataclass(frozen=True)
class Personalization:
    """The tags of a text in order, and what looked like a tag but was not one."""

    tags: tuple[Tag, ...]
    errors: tuple[TagError, ...]


class _Closers:
    """Finds the next `}}` / `}}}` at or after a position, remembering the last answer.

    Without the memo, a text with many unclosed `{{` would be scanned once per opener (quadratic).
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._found: dict[str, int] = {}

    def find(self, closer: str, start: int) -> int:
        previous = self._found.get(closer)
        if previous is not None and (previous == -1 or previous >= start):
            return previous
        found = self._text.find(closer, start)
        self._found[closer] = found
        return found


def _modern_tag(text: str, start: int, closers: _Closers) -> Tag | TagError:
    raw = text.startswith("{{{", start)
    opener, closer = ("{{{", "}}}") if raw else ("{{", "}}")
    close = closers.find(closer, start + len(opener))
    if close == -1:
        return TagError(start, start + len(opener), f"{opener} is never closed with {closer}")
    end = close + len(closer)
    inner = text[start + len(opener) : close]
    snippet = text[start:end] if end - start <= 80 else text[start : start + 77] + "..."
    match = _EXPRESSION.fullmatch(inner)
    if match is None:
        return TagError(start, end, f"{snippet} is not a personalization tag")
    namespace = _NAMESPACE_BY_FOLDED.get(match["namespace"].casefold())
    if namespace is None:
        return TagError(start, end, f"unknown personalization namespace {match['namespace']!r} in {snippet}")
    helper = None
    if match["helper"] is not None:
        helper = _HELPER_BY_FOLDED.get(match["helper"].casefold())
        if helper is None:
            return TagError(start, end, f"unknown personalization helper {match['helper']!r} in {snippet}")
    quoted = match["double"] if match["double"] is not None else match["single"]
    fallback = None if quoted is None else _ESCAPED.sub(r"\1", quoted)
    return Tag(start, end, namespace, match["field"], raw=raw, helper=helper, fallback=fallback)


def parse_personalization(text: str) -> Personalization:
    """Finds the personalization tags of a subject or body; never raises.

    Modern tags: `{{ Ns:Field }}` (HTML-escaped when rendered), `{{{ Ns:Field }}}` (raw), an optional fallback
    `{{ Ns:Field | "default" }}` and an optional helper `{{urlEncode Ns:Field}}`. Every `{{` opens a tag, so an
    unclosed one, an unknown namespace or helper, or anything else between the braces is an error; a lone `}}`
    is ordinary text (nested CSS rules end that way). Legacy tags `%Ns:Field%` take no fallback or helper and
    count only with a known namespace: `%` is common in text and URLs (`50%`, `%3A`), so anything else is text.
    """
    tags: list[Tag] = []
    errors: list[TagError] = []
    closers = _Closers(text)
    openers = _OPENER
    position = 0
    while (opener := openers.search(text, position)) is not None:
        start = opener.start()
        if opener.group() == "%":
            legacy = _LEGACY.match(text, start)
            namespace = _NAMESPACE_BY_FOLDED.get(legacy["namespace"].casefold()) if legacy else None
            if legacy is None or namespace is None:
                position = start + 1
                continue
            tags.append(Tag(start, legacy.end(), namespace, legacy["field"], legacy=True))
            position = legacy.end()
            continue
        found = _modern_tag(text, start, closers)
        if isinstance(found, TagError):
            errors.append(found)
            if closers.find("}}", start) == -1:
                # No `}}` follows, so no later `{{` can close either: one error says it all.
                openers = _LEGACY_OPENER
        else:
            tags.append(found)
        position = found.end
    return Personalization(tuple(tags), tuple(errors))


# The link tags Herald renders (services/delivery/message.py); the legacy catalog's others (Forward,
# SubscriberArea, Suppression, SocialShare:<Net>) have no page behind them, so content naming them is refused
# rather than sent with the tag showing.
SUPPORTED_LINKS = frozenset({"unsubscribe", "webbrowser", "reportabuse", "confirm", "reject"})


# The List: and Campaign: fields delivery fills (services/delivery/message.py). Both namespaces are closed sets,
# so content naming another field of them, which could only ever render empty, is refused.
LIST_FIELDS = frozenset({"listid", "name", "sendername", "senderemailaddress", "sendercompany", "senderaddress"})
CAMPAIGN_FIELDS = frozenset({"campaignid", "hashedcampaignid", "name"})
_KNOWN_FIELDS = {"List": LIST_FIELDS, "Campaign": CAMPAIGN_FIELDS}
# User: tags name the account owner's profile, which lives in the translator's identity schema (no service reads
# it, and most of the fields the legacy catalog lists are not kept at all): content naming one is refused, with
# or without a fallback (docs/legacy-mapping.md, "Tags in content").
USER_TAGS_REFUSED = "User: tags are not supported (Herald keeps no account profile to fill them from)"


def _named(text: str, tags: list[Tag]) -> str:
    """The tags as written, each once, in order: one problem names them all, so one answer tells what to change."""
    return ", ".join(dict.fromkeys(text[tag.start : tag.end] for tag in tags))


def personalization_problems(text: str, *, allow_links: bool = True) -> list[str]:
    """What is wrong with the tags of a text, in order; empty when every tag is valid."""
    parsed = parse_personalization(text)
    problems = [(error.start, error.message) for error in parsed.errors]
    unsupported = [
        tag for tag in parsed.tags if tag.namespace == "Link" and tag.field.casefold() not in SUPPORTED_LINKS
    ]
    if allow_links and unsupported:
        problems.append((unsupported[0].start, f"unsupported link tags: {_named(text, unsupported)}"))
    users = [tag for tag in parsed.tags if tag.namespace == "User"]
    if users:
        problems.append((users[0].start, f"{USER_TAGS_REFUSED}: {_named(text, users)}"))
    unknown = [
        tag
        for tag in parsed.tags
        if tag.namespace in _KNOWN_FIELDS and tag.field.casefold() not in _KNOWN_FIELDS[tag.namespace]
    ]
    if unknown:
        problems.append((unknown[0].start, f"unknown personalization tags: {_named(text, unknown)}"))
    if not allow_links:
        problems += [
            (tag.start, f"link tag {text[tag.start : tag.end]} belongs in the body, not here")
            for tag in parsed.tags
            if tag.namespace == "Link"
        ]
    return [message for _, message in sorted(problems)]


def _lookup(values: Mapping[str, str]) -> dict[str, str]:
    return {key.casefold(): value for key, value in values.items()}


def render_personalization(
    text: str, values: Mapping[str, str], *, html_escape: bool, parsed: Personalization | None = None
) -> str:
    """The text with every tag replaced by its value from `values` (keyed `Ns:Field`, case-insensitively).

    A missing or empty value gives the tag's fallback, else "". With `html_escape` (an HTML body), values of
    `{{ }}` and legacy tags are HTML-escaped and `{{{ }}}` ones are not. What is not a valid tag stays as it is.
    Never raises. `parsed` (this text's `parse_personalization`) saves parsing again for every recipient.
    """
    parsed = parsed if parsed is not None else parse_personalization(text)
    if not parsed.tags:
        return text
    folded: dict[str, str] | None = None
    parts: list[str] = []
    position = 0
    for tag in parsed.tags:
        value = values.get(tag.key)
        if value is None:
            folded = folded if folded is not None else _lookup(values)
            value = folded.get(tag.key.casefold())
        parts.append(text[position : tag.start])
        parts.append(_rendered(tag, value, html_escape=html_escape))
        position = tag.end
    parts.append(text[position:])
    return "".join(parts)


def _rendered(tag: Tag, value: str | None, *, html_escape: bool) -> str:
    if not value:
        value = tag.fallback or ""
    if tag.helper is Helper.URL_ENCODE:
        value = urllib.parse.quote(value, safe="")
    elif tag.helper is Helper.UPPERCASE:
        value = value.upper()
    if html_escape and not tag.raw:
        value = html.escape(value, quote=True)
    return value


def legacy_instant(moment: datetime | None) -> str:
    """A date tag's value as the legacy API writes instants (`Y-m-d H:i:s`, UTC); "" when unset."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""


class HashedIds:
    """`Subscriber:HashedSubscriberID` and `Campaign:HashedCampaignID`: the id's HMAC-SHA256 under a key derived
    from the install's token secret, as 32 hex digits. Stable while the secret is; nobody without the secret
    can tell which id a hash stands for, or make the hash of another id (rotating the secret changes them all).
    """

    def __init__(self, token_secret: str) -> None:
        self._key = hmac.new(
            token_secret.encode(), b"herald personalization hashed id v1", hashlib.sha256
        ).digest()

    def _hashed(self, kind: bytes, value: int) -> str:
        return hmac.new(self._key, kind + b":" + str(value).encode(), hashlib.sha256).hexdigest()[:32]

    def subscriber(self, subscriber_id: int) -> str:
        return self._hashed(b"subscriber", subscriber_id)

    def campaign(self, campaign_id: int) -> str:
        return self._hashed(b"campaign", campaign_id)


def list_values(list_id: int, snapshot: Mapping[str, str] | None) -> dict[str, str]:
    """The `List:` values of a recipient's list: `snapshot` is what delivery keeps of it (`list_snapshot`), which
    names its list (a preview's row names none, list_id 0, but shows its sample subscriber's list)."""
    snapshot = snapshot or {}
    return {
        "List:ListID": snapshot.get("list_id") or (str(list_id) if list_id else ""),
        "List:Name": snapshot.get("name", ""),
        "List:SenderName": snapshot.get("sender_name", ""),
        "List:SenderEmailAddress": snapshot.get("sender_email_address", ""),
        "List:SenderCompany": snapshot.get("sender_company", ""),
        "List:SenderAddress": snapshot.get("sender_address", ""),
    }


def list_snapshot(found: object) -> dict[str, str]:
    """What a send keeps of a list (an AudienceService List message) for its `List:` tags, as JSON."""
    return {
        name: str(getattr(found, name))
        for name in ("list_id", "name", "sender_name", "sender_email_address", "sender_company", "sender_address")
    }
