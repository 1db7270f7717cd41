"""Rendering campaign messages: one template per email of a run, parsed once, rendered per recipient into RFC 5322 bytes.

Per message the work is the personalization of subject and bodies (tags already located), the
signed unsubscribe link (and, when the email has them, the web view and report-abuse links), the
signed return path (one HMAC: the envelope sender and the X-Herald-Token header carry the same
token), and — when the email asks for it — the open pixel and tracked links; the
headers that are the same for every recipient are encoded once per template.
"""

from __future__ import annotations

import binascii
import email.utils
import html
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from services.common.opt_in_links import OptInLinks
from services.common.personalization import (
    HashedIds,
    Personalization,
    legacy_instant,
    list_values,
    parse_personalization,
    render_personalization,
)
from services.common.return_path import PREFIX, ReturnPaths
from services.common.tracking import TrackedRecipient, TrackingLinks
from services.delivery import sending

_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""", re.IGNORECASE)
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_UTM_FIELDS = ("source", "medium", "campaign", "term", "content")
# Headers that carry the return-path token to a provider's webhooks, by HERALD_RELAY_PROVIDER (the token
# is lowercase letters and digits, so it needs no quoting). Every message also has X-Herald-Token; SES
# reports the envelope sender itself (mail.source).
TOKEN_HEADER = "X-Herald-Token"
PROVIDER_TOKEN_HEADERS: Mapping[str, tuple[str, ...]] = {
    "none": (),
    "ses": (),
    "sendgrid": ('X-SMTPAPI: {{"unique_args": {{"herald_token": "{token}"}}}}',),
    "postmark": ("X-PM-Metadata-herald_token: {token}",),
}


@dataclass(frozen=True)
class Recipient:
    """One claimed queue row, as rendering needs it."""

    recipient_id: int
    email_address: str
    first_name: str
    last_name: str
    subscriber_id: int
    list_id: int
    custom_fields: Mapping[str, str] | None
    email_id: int | None
    # Queued only when the run's content names their tags (`uses_subscription_tags`): None / "" otherwise.
    subscription_time: datetime | None = None
    subscription_ip: str = ""
    opt_in_time: datetime | None = None


# The Subscriber: tags whose values are carried with each queued recipient only when the content names them.
SUBSCRIPTION_TAGS = frozenset({"subscriber:subscriptiondate", "subscriber:subscriptionip", "subscriber:optindate"})


def _used_tags(content: Mapping[str, Any]) -> set[str]:
    """The tags (`ns:field`, case-folded) an email snapshot's subject, pre-header and bodies name."""
    return {
        tag.key.casefold()
        for name in ("subject", "preheader_text", "html", "plain")
        for tag in parse_personalization(str(content.get(name) or "")).tags
    }


def uses_subscription_tags(emails: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether any email of a run names SubscriptionDate, SubscriptionIP or OptInDate (queueing then carries them)."""
    return any(SUBSCRIPTION_TAGS & _used_tags(snapshot) for snapshot in emails.values())


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One recipient's message: its Message-ID, its envelope sender (the signed return path) and its bytes."""

    message_id: str
    return_path: str
    data: bytes


def email_snapshot(email: Any) -> dict[str, Any]:
    """What a run keeps of an email (an EmailService Email message), as JSON."""
    content_type = {1: "HTML", 2: "Plain", 3: "Both"}.get(int(email.content_type), "HTML")
    return {
        "email_id": email.email_id,
        "subject": email.subject,
        "preheader_text": email.preheader_text,
        "from_name": email.from_name,
        "from_email": email.from_email,
        "reply_to_name": email.reply_to_name,
        "reply_to_email": email.reply_to_email,
        "html": email.html_content,
        "plain": email.plain_content,
        "content_type": content_type,
        "open_tracking": email.open_tracking,
        "link_tracking": email.link_tracking,
        "utm": {
            "enabled": email.utm.enabled,
            **{name: getattr(email.utm, name) for name in _UTM_FIELDS},
        },
    }


def _header_text(value: str) -> str:
    """A header value: no line breaks (a subscriber's name must not add headers), encoded when not ASCII."""
    value = " ".join(value.replace("\r", " ").replace("\n", " ").split())
    if value.isascii() and len(value) < 900:
        return value
    return Header(value, "utf-8", maxlinelen=76).encode()


def _address_header(name: str, address: str) -> str:
    name = " ".join(name.replace("\r", " ").replace("\n", " ").split())
    if not name:
        return address
    if name.isascii():
        return email.utils.formataddr((name, address))
    return f"{Header(name, 'utf-8').encode()} <{address}>"


def _quoted_printable(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(body, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


def _with_utm(url: str, utm: Mapping[str, str]) -> str:
    """The URL with the email's UTM parameters added (those it already has are kept)."""
    parts = urlsplit(url)
    existing = dict(parse_qsl(parts.query, keep_blank_values=True))
    added = {f"utm_{k}": v for k, v in utm.items() if v and f"utm_{k}" not in existing}
    if not added:
        return url
    query = parts.query + ("&" if parts.query else "") + urlencode(added)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class _Clock:
    """The Date header, formatted once per second rather than per message."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True)
        return self._value


_CLOCK = _Clock()
# Return-path tokens a template keeps between MAIL FROM and rendering: far more than the sends in flight.
_MAX_KEPT_TOKENS = 10_000


class MessageTemplate:
    """One email of a run, ready to render for any of its recipients."""

    def __init__(
        self,
        content: Mapping[str, Any],
        *,
        campaign_id: int,
        campaign_name: str,
        links: TrackingLinks,
        return_paths: ReturnPaths,
        public_url: str,
        unsubscribe_mailto: str = "",
        relay_provider: str = "none",
        opt_in_links: OptInLinks | None = None,
        lists: Mapping[str, Mapping[str, str]] | None = None,
        hashed_ids: HashedIds | None = None,
    ) -> None:
        self.campaign_id = campaign_id
        # A double opt-in confirmation email: its confirm and reject links instead of an unsubscribe link.
        self._opt_in_links = opt_in_links if content.get("opt_in") else None
        self.campaign_name = campaign_name
        self._links = links
        self._return_paths = return_paths
        self._return_path_domain = "@" + return_paths.domain
        self._token_headers = (f"{TOKEN_HEADER}: {{token}}", *PROVIDER_TOKEN_HEADERS[relay_provider])
        self._public_prefix = public_url.rstrip("/") + "/t/"
        self._mailto = unsubscribe_mailto
        self.sender: str = content["from_email"]
        domain = self.sender.rpartition("@")[2] or "herald.local"
        self._id_domain = domain
        content_type = content.get("content_type", "HTML")
        html_text: str = content.get("html", "") if content_type in ("HTML", "Both") else ""
        plain_text: str = content.get("plain", "") if content_type in ("Plain", "Both") else ""
        if not html_text and not plain_text:
            # An email whose type names a part it does not have still sends the part it has.
            html_text, plain_text = content.get("html", ""), content.get("plain", "")
        preheader = content.get("preheader_text", "")
        if html_text and preheader:
            hidden = (
                '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
                f"{html.escape(preheader)}</div>"
            )
            opened = _BODY_OPEN.search(html_text)
            html_text = (
                html_text[: opened.end()] + hidden + html_text[opened.end() :] if opened else hidden + html_text
            )
        self._subject = content.get("subject", "")
        self._subject_tags: Personalization = parse_personalization(self._subject)
        self._html = html_text
        self._html_tags = parse_personalization(html_text)
        self._plain = plain_text
        self._plain_tags = parse_personalization(plain_text)
        used = {
            tag.key.casefold()
            for parsed in (self._subject_tags, self._html_tags, self._plain_tags)
            for tag in parsed.tags
        }
        # Signed only when the email has the tag: each is one more HMAC per message. A run that is no
        # campaign (a confirmation email, a preview) has no web view to show: the tags render empty.
        campaign = not sending.is_opt_in_run(campaign_id)
        self._email_id = int(content.get("email_id") or 0)
        self._web_view = "link:webbrowser" in used and campaign
        self._report_abuse = "link:reportabuse" in used and campaign
        # The List: values of each recipient's list as it was when the run was queued (the content's "lists").
        self._lists = {int(list_id): list_values(int(list_id), found) for list_id, found in (lists or {}).items()}
        # A confirmation email goes to an Opt-In Pending subscriber; a campaign's recipients are streamed
        # Subscribed only (AudienceService.StreamRecipients).
        self._status = "Subscribed" if campaign else "Opt-In Pending"
        self._dates = SUBSCRIPTION_TAGS & used
        self._hashed_ids = hashed_ids if "subscriber:hashedsubscriberid" in used else None
        # A confirmation email or a preview belongs to no campaign: its run id and internal name are not shown.
        self._campaign_values = (
            {
                "Campaign:CampaignID": str(campaign_id),
                "Campaign:HashedCampaignID": hashed_ids.campaign(campaign_id) if hashed_ids is not None else "",
                "Campaign:Name": campaign_name,
            }
            if campaign
            else {}
        )
        utm = content.get("utm") or {}
        self._utm = {k: str(utm.get(k, "")) for k in _UTM_FIELDS} if utm.get("enabled") else {}
        self._track_opens = bool(html_text) and bool(content.get("open_tracking"))
        self._track_links = bool(html_text) and bool(content.get("link_tracking"))
        self._rewrite_links = bool(self._utm) or self._track_links
        reply_to = content.get("reply_to_email", "")
        static = [f"From: {_address_header(content.get('from_name', ''), self.sender)}"]
        if reply_to:
            static.append(f"Reply-To: {_address_header(content.get('reply_to_name', ''), reply_to)}")
        static.append("MIME-Version: 1.0")
        static.append(f"X-Herald-Campaign: {campaign_id}")
        self._static_headers = "\r\n".join(static)
        self._boundary = f"=_herald_{uuid.uuid4().hex}"
        # Return-path tokens signed for MAIL FROM (return_path) and not yet put into their message (render): one
        # HMAC per message, not two. A recipient refused at the envelope is never rendered: the map is bounded.
        self._tokens: dict[int, str] = {}

    def values(self, recipient: Recipient, unsubscribe_url: str) -> dict[str, str]:
        """The personalization values of one recipient (keys `Namespace:Field`)."""
        subscribed = bool(recipient.subscriber_id)
        values = {
            "Subscriber:EmailAddress": recipient.email_address,
            "Subscriber:FirstName": recipient.first_name,
            "Subscriber:LastName": recipient.last_name,
            "Subscriber:SubscriberID": str(recipient.subscriber_id),
            "Subscriber:Status": self._status if subscribed else "",
            "Subscriber:SubscriptionIP": recipient.subscription_ip,
            **self._campaign_values,
            "Link:Unsubscribe": unsubscribe_url,
        }
        found = self._lists.get(recipient.list_id)
        if found is not None:
            values.update(found)
        else:
            values["List:ListID"] = str(recipient.list_id) if recipient.list_id else ""
        if self._dates:
            values["Subscriber:SubscriptionDate"] = legacy_instant(recipient.subscription_time)
            values["Subscriber:OptInDate"] = legacy_instant(recipient.opt_in_time)
        if self._hashed_ids is not None and subscribed:
            values["Subscriber:HashedSubscriberID"] = self._hashed_ids.subscriber(recipient.subscriber_id)
        for key, value in (recipient.custom_fields or {}).items():
            values[f"Subscriber:CustomField{key}" if key.isdigit() else f"Subscriber:{key}"] = value
        return values

    def _html_body(self, values: Mapping[str, str], tracked: TrackedRecipient) -> str:
        text = render_personalization(self._html, values, html_escape=True, parsed=self._html_tags)
        if self._rewrite_links:

            def rewrite(match: re.Match[str]) -> str:
                url = html.unescape(match.group(3))
                if url.startswith(self._public_prefix):
                    return match.group(0)  # Herald's own links (unsubscribe) stay as they are
                if self._utm:
                    url = _with_utm(url, self._utm)
                if self._track_links:
                    url = self._links.click(tracked, url)
                return f"{match.group(1)}{match.group(2)}{html.escape(url)}{match.group(2)}"

            text = _LINK.sub(rewrite, text)
        if self._track_opens:
            pixel = (
                f'<img src="{self._links.open_pixel(tracked)}" width="1" height="1" alt="" '
                'style="display:block;border:0;width:1px;height:1px">'
            )
            closing = _BODY_CLOSE.search(text)
            text = text[: closing.start()] + pixel + text[closing.start() :] if closing else text + pixel
        return text

    def return_path(self, recipient: Recipient) -> str:
        """The address the recipient's message is sent from (MAIL FROM), as `render` puts it in the message."""
        token = self._return_paths.token(self.campaign_id, recipient.recipient_id)
        if len(self._tokens) >= _MAX_KEPT_TOKENS:
            self._tokens.clear()
        self._tokens[recipient.recipient_id] = token
        return PREFIX + token + self._return_path_domain

    def render(self, recipient: Recipient) -> RenderedMessage:
        """The message of one recipient, with the return path it is sent from (the visible From stays the user's)."""
        tracked = TrackedRecipient(
            self.campaign_id, recipient.recipient_id, recipient.list_id, recipient.subscriber_id
        )
        subscribed = bool(recipient.list_id and recipient.subscriber_id)
        unsubscribe_url = self._links.unsubscribe(tracked) if subscribed and self._opt_in_links is None else ""
        values = self.values(recipient, unsubscribe_url)
        if self._web_view:
            values["Link:WebBrowser"] = self._links.web_view(tracked, self._email_id)
        if self._report_abuse and subscribed:
            values["Link:ReportAbuse"] = self._links.report_abuse(tracked)
        if self._opt_in_links is not None and subscribed:
            values["Link:Confirm"] = self._opt_in_links.confirm(recipient.list_id, recipient.subscriber_id)
            values["Link:Reject"] = self._opt_in_links.reject(recipient.list_id, recipient.subscriber_id)
        message_id = f"<{self.campaign_id}.{recipient.recipient_id}.{uuid.uuid4().hex[:20]}@{self._id_domain}>"
        subject = render_personalization(self._subject, values, html_escape=False, parsed=self._subject_tags)
        headers = [
            self._static_headers,
            f"To: {recipient.email_address}",
            f"Subject: {_header_text(subject)}",
            f"Date: {_CLOCK.date()}",
            f"Message-ID: {message_id}",
        ]
        token = self._tokens.pop(recipient.recipient_id, None) or self._return_paths.token(
            self.campaign_id, recipient.recipient_id
        )
        headers.extend(header.format(token=token) for header in self._token_headers)
        return_path = PREFIX + token + self._return_path_domain
        if unsubscribe_url:
            targets = f"<{unsubscribe_url}>"
            if self._mailto:
                token = unsubscribe_url.rsplit("/", 1)[1]
                targets += f", <mailto:{self._mailto}?subject=unsubscribe%20{token}>"
            headers.append(f"List-Unsubscribe: {targets}")
            headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        parts: list[bytes] = []
        if self._plain:
            plain = render_personalization(self._plain, values, html_escape=False, parsed=self._plain_tags)
            parts.append(
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                + _quoted_printable(plain)
            )
        if self._html:
            parts.append(
                b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                + _quoted_printable(self._html_body(values, tracked))
            )
        head = "\r\n".join(headers).encode("utf-8")
        if len(parts) == 1:
            return RenderedMessage(message_id, return_path, head + b"\r\n" + parts[0] + b"\r\n")
        boundary = self._boundary.encode()
        body = (
            b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + boundary + b"--\r\n"
        )
        content_type = f'Content-Type: multipart/alternative; boundary="{self._boundary}"'.encode()
        return RenderedMessage(message_id, return_path, head + b"\r\n" + content_type + b"\r\n\r\n" + body)
