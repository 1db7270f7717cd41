"""The public tag archive pages: a tag's sent campaigns (in Herald's page or the tag's own HTML template), a web view of each, and the tag's RSS feed.

The pages need no credentials. The translator reads the services with a system token of its
own (an admin principal), which sees every user's data, so the page code checks explicitly that
a campaign it shows is Sent and belongs to the tag's owner (and, for a web view, carries the tag;
the listing gets that from ListCampaigns' tag filter). The feed, /archive/tag/{tag_id}/rss, lists the
campaigns the archive page lists that are also published on RSS (translator/feed.py renders it).

A tag's TemplateURL is chosen by its owner, so fetching it is guarded (RULINGS 12): http(s)
only, a 3 s timeout for the whole fetch, 512 KiB at most, at most 3 redirects, each hop checked
again, and no loopback, private, link-local, multicast or reserved address unless the operator
sets HERALD_ALLOW_PRIVATE_URLS. Addresses are checked by the resolver the
connection itself uses, so a name cannot resolve to a public address for the check and to a
private one for the connection.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import html
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
import grpc
import structlog
from aiohttp import hdrs, web
from google.protobuf.message import Message
from herald.campaign.v1 import campaign_pb2, email_pb2
from herald.tag.v1 import tag_pb2
from yarl import URL

from services.common.personalization import render_personalization
from services.common.urlguard import GuardedResolver, address_allowed
from translator import feed
from translator.commands import Stubs
from translator.identity import IdentityStore

log = structlog.get_logger()
T = TypeVar("T")

# Where a template says the campaign list goes (matched case-insensitively).
PLACEHOLDER = "%Archive:Campaigns%"
_PLACEHOLDER_RE = re.compile(re.escape(PLACEHOLDER), re.IGNORECASE)
TEMPLATE_TIMEOUT_SECONDS = 3.0
TEMPLATE_MAX_BYTES = 512 * 1024
TEMPLATE_MAX_REDIRECTS = 3
TEMPLATE_CACHE_SECONDS = 60.0
_TEMPLATE_CACHE_ENTRIES = 1000
_TEMPLATE_TYPES = ("text/html", "application/xhtml+xml")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The newest this many sent campaigns are listed on the page, and this many of those published on RSS in the feed.
ARCHIVE_LIMIT = 500
FEED_LIMIT = 50
_SERVICE_TIMEOUT_SECONDS = 10.0
_UNAVAILABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_NOT_FOUND = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})
_MAX_ID = 2**63 - 1

# Archive pages and web views show HTML that users (and their template hosts) wrote: no script
# runs, no form posts, no plugin loads; images, styles and fonts may come from anywhere, as in email.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline' http: https:; "
    "font-src http: https: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# A feed reader may keep the feed but asks again each time (a 304 when its ETag still matches), so a
# campaign that leaves the feed (unpublished, untagged, deleted) leaves every reader's next fetch.
FEED_CACHE_CONTROL = "no-cache"
# The email shown in a web view's frame: no script and no same-origin access, even without the page's CSP;
# links open outside the frame (with a <base target="_blank"> the frame's document gets).
WEB_VIEW_SANDBOX = "allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation"
_DOCTYPE_RE = re.compile(r"\A\s*<!doctype[^>]*>", re.IGNORECASE)
_HEAD_END_RE = re.compile(r"</head\s*>", re.IGNORECASE)


# --- template fetching -------------------------------------------------------------------------------------


class TemplateUnusable(Exception):
    """A tag's template cannot be used; the message says why (it is logged, never shown to visitors)."""


def check_template_target(url: URL, *, allow_private: bool) -> None:
    """Refuses a URL (the first or a redirect's) that is not http(s) with a host, or names a refused address.

    Names are checked by GuardedResolver when connecting; an address in the URL never reaches a resolver.
    """
    if url.scheme not in ("http", "https") or not url.host:
        raise TemplateUnusable(f"not an absolute http(s) URL: {url}")
    try:
        address = ipaddress.ip_address(url.host)
    except ValueError:
        return
    if not address_allowed(address, allow_private=allow_private):
        raise TemplateUnusable(f"the non-public address {address} is not allowed")


async def _html_body(response: aiohttp.ClientResponse) -> str:
    """The response's HTML as text, or TemplateUnusable when it is not a usable HTML document."""
    if response.status != 200:
        raise TemplateUnusable(f"HTTP status {response.status}")
    if response.content_type not in _TEMPLATE_TYPES:
        raise TemplateUnusable(f"content type {response.content_type} is not HTML")
    # Compressed bodies are refused rather than inflated: a small body could expand past any cap.
    encoding = response.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise TemplateUnusable(f"content encoding {encoding} is not accepted")
    if response.content_length is not None and response.content_length > TEMPLATE_MAX_BYTES:
        raise TemplateUnusable(f"{response.content_length} bytes is more than {TEMPLATE_MAX_BYTES}")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > TEMPLATE_MAX_BYTES:
            raise TemplateUnusable(f"more than {TEMPLATE_MAX_BYTES} bytes")
    charset = response.charset or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return body.decode(charset, errors="replace")


@dataclass(frozen=True)
class _Fetched:
    expires: float
    template: str | None


class TemplateFetcher:
    """Fetches tag templates under the guards above, and remembers each answer (or failure) for 60 s."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[str, _Fetched] = {}
        self._in_flight: dict[str, asyncio.Task[_Fetched]] = {}

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: aiohttp sessions belong to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=GuardedResolver(allow_private=self.allow_private), limit=32
                ),
                timeout=aiohttp.ClientTimeout(total=TEMPLATE_TIMEOUT_SECONDS),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                headers={hdrs.USER_AGENT: "Herald-Archive/1", hdrs.ACCEPT_ENCODING: "identity"},
            )
        return self._session

    async def close(self) -> None:
        for task in self._in_flight.values():
            task.cancel()
        if self._session is not None:
            await self._session.close()

    async def template(self, url: str) -> str | None:
        """The template at `url` (it contains the placeholder), or None when it cannot be used.

        Why it cannot is logged once per fetch, not on every page view the cached failure answers.
        """
        cached = self._cache.get(url)
        if cached is None or cached.expires <= time.monotonic():
            task = self._in_flight.get(url)
            if task is None:
                # Concurrent page views of one tag share one fetch.
                task = asyncio.create_task(self._fetched(url))
                self._in_flight[url] = task
                task.add_done_callback(lambda _: self._in_flight.pop(url, None))
            cached = await asyncio.shield(task)
        return cached.template

    async def _fetched(self, url: str) -> _Fetched:
        try:
            template = await self._fetch(url)
            if not _PLACEHOLDER_RE.search(template):
                raise TemplateUnusable(f"the template does not contain {PLACEHOLDER}")
            fetched = _Fetched(time.monotonic() + TEMPLATE_CACHE_SECONDS, template)
        except TemplateUnusable as exc:
            log.warning("archive template unusable; the built-in page is served", url=url, reason=str(exc))
            fetched = _Fetched(time.monotonic() + TEMPLATE_CACHE_SECONDS, None)
        if len(self._cache) >= _TEMPLATE_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[url] = fetched
        return fetched

    async def _fetch(self, url: str) -> str:
        try:
            target = URL(url)
            async with asyncio.timeout(TEMPLATE_TIMEOUT_SECONDS):
                for _ in range(TEMPLATE_MAX_REDIRECTS + 1):
                    check_template_target(target, allow_private=self.allow_private)
                    async with self._client().get(target, allow_redirects=False) as response:
                        if response.status not in _REDIRECT_STATUSES:
                            return await _html_body(response)
                        location = response.headers.get(hdrs.LOCATION)
                        if not location:
                            raise TemplateUnusable(f"redirect without a Location from {target}")
                        target = target.join(URL(location))
        except TimeoutError as exc:
            raise TemplateUnusable(f"no complete answer within {TEMPLATE_TIMEOUT_SECONDS} s") from exc
        except (aiohttp.ClientError, ValueError, UnicodeError) as exc:
            raise TemplateUnusable(f"{type(exc).__name__}: {exc}") from exc
        raise TemplateUnusable(f"more than {TEMPLATE_MAX_REDIRECTS} redirects")


def render_into_template(template: str, campaign_list: str) -> str:
    """The template with the campaign list wherever it says %Archive:Campaigns%."""
    return _PLACEHOLDER_RE.sub(lambda _: campaign_list, template)


# --- HTML --------------------------------------------------------------------------------------------------


def _document(title: str, body: str, head: str = "") -> str:
    """A page of Herald's own; `head` is markup added to its <head>."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;"
        "color:#222}h1{font-size:1.5rem}.herald-archive{list-style:none;padding:0}"
        ".herald-archive li{display:flex;justify-content:space-between;gap:1rem;padding:.5rem 0;"
        "border-bottom:1px solid #ddd}.herald-archive time,.herald-sent{color:#666;white-space:nowrap}"
        ".herald-content{display:block;width:100%;height:80vh;border:1px solid #ddd}"
        ".herald-plain{white-space:pre-wrap}</style>"
        f"{head}</head><body>{body}</body></html>\n"
    )


def feed_link(title: str, url: str) -> str:
    """The <link> in a page's <head> by which browsers and readers find the tag's feed."""
    return (
        f'<link rel="alternate" type="application/rss+xml" title="{html.escape(title)}" href="{html.escape(url)}">'
    )


def with_head_markup(template: str, markup: str) -> str:
    """A tag's template with `markup` at the end of its <head>; unchanged when it has no </head>."""
    return _HEAD_END_RE.sub(lambda end: markup + end.group(), template, count=1)


@dataclass(frozen=True)
class ArchiveEntry:
    """One sent campaign as the archive lists it."""

    name: str
    send_date: str
    url: str


def campaign_list_html(entries: list[ArchiveEntry]) -> str:
    """The list that the built-in page shows and templates receive at the placeholder; everything escaped."""
    if not entries:
        return '<p class="herald-archive-empty">No campaigns have been sent yet.</p>'
    items = "".join(
        f'<li><a href="{html.escape(entry.url)}">{html.escape(entry.name)}</a>'
        f'<time datetime="{html.escape(entry.send_date)}">{html.escape(entry.send_date)}</time></li>'
        for entry in entries
    )
    return f'<ul class="herald-archive">{items}</ul>'


def tag_archive_url(public_url: str, tag_id: int) -> str:
    """The address of a tag's archive page."""
    return f"{public_url}/archive/tag/{tag_id}"


def archive_title(tag_name: str) -> str:
    """The archive page's title, and its feed's."""
    return f"Archive: {tag_name}"


def builtin_page(tag_name: str, campaign_list: str, head: str = "") -> str:
    return _document(archive_title(tag_name), f"<h1>{html.escape(tag_name)}</h1>{campaign_list}", head)


def _links_open_outside(body: str) -> str:
    """An HTML body whose links open outside the web view's frame: a <base target> after its doctype, if any.

    Placed before <html>, the parser still puts it in <head> and the body keeps its rendering mode.
    """
    doctype = _DOCTYPE_RE.match(body)
    at = doctype.end() if doctype else 0
    return body[:at] + '<base target="_blank">' + body[at:]


@dataclass(frozen=True)
class ArchiveLink:
    """The way back from a web view to a tag archive that lists the campaign."""

    url: str
    title: str


@dataclass(frozen=True)
class WebView:
    """What a web view shows around the email: its title, send date and the ways back to the archives."""

    title: str
    # Empty while the campaign has not started sending: the page then says nothing about a date.
    send_date: str
    archives: tuple[ArchiveLink, ...] = ()
    head: str = ""


def web_view_page(view: WebView, *, html_body: str = "", plain_text: str = "") -> str:
    """The web view: a header (title, send date, link back) above the email.

    An HTML body is shown in a sandboxed frame of its own (srcdoc), so that its styles cannot restyle the
    page and its markup cannot reach it; a plain-text one in the page, escaped.
    """
    back = "".join(
        f'<p><a href="{html.escape(link.url)}" class="herald-back">&larr; {html.escape(link.title)}</a></p>'
        for link in view.archives
    )
    sent = (
        f'<p class="herald-sent">Sent <time datetime="{html.escape(view.send_date)}">'
        f"{html.escape(view.send_date)}</time></p>"
        if view.send_date
        else ""
    )
    header = f"<header>{back}<h1>{html.escape(view.title)}</h1>{sent}</header>"
    if html_body:
        content = (
            f'<iframe class="herald-content" title="{html.escape(view.title)}" sandbox="{WEB_VIEW_SANDBOX}" '
            f'referrerpolicy="no-referrer" srcdoc="{html.escape(_links_open_outside(html_body))}"></iframe>'
        )
    else:
        content = f'<div class="herald-plain">{html.escape(plain_text)}</div>'
    return _document(view.title, f"{header}<main>{content}</main>", view.head)


def _page(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)


def web_view_response(view: WebView, *, html_body: str = "", plain_text: str = "") -> web.Response:
    """The web view page as an answer, with the archive pages' headers."""
    return _page(web_view_page(view, html_body=html_body, plain_text=plain_text))


def not_found_page() -> web.Response:
    return _page(_document("Not found", "<h1>Not found</h1><p>There is no such archive page.</p>"), 404)


def unavailable_page() -> web.Response:
    body = _document("Unavailable", "<h1>Temporarily unavailable</h1><p>Please try again in a moment.</p>")
    response = _page(body, 503)
    response.headers["Retry-After"] = "5"
    return response


def _positive_id(text: str) -> int | None:
    """A path segment as an id: ASCII digits only, 1 to 2**63 - 1."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= _MAX_ID else None


def _send_time(campaign: campaign_pb2.Campaign) -> datetime | None:
    return campaign.send_time.ToDatetime(tzinfo=UTC) if campaign.HasField("send_time") else None


def send_date(campaign: campaign_pb2.Campaign) -> str:
    """The day the campaign started sending (UTC), as pages show it; empty before."""
    sent = _send_time(campaign)
    return sent.strftime("%Y-%m-%d") if sent is not None else ""


def _content_email_id(campaign: campaign_pb2.Campaign) -> int:
    """The email a web view shows: the campaign's own, or for an A/B campaign without one its first variation's."""
    return campaign.email_id or (campaign.variations[0].email_id if campaign.variations else 0)


def _tag_changed(tag: tag_pb2.Tag) -> datetime:
    return (tag.update_time if tag.HasField("update_time") else tag.create_time).ToDatetime(tzinfo=UTC)


def etag(body: bytes) -> str:
    """A strong ETag: the same bytes, the same tag."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str, tag: str) -> bool:
    """Whether an If-None-Match header names `tag` (compared weakly, as RFC 9110 says for this header), or is *."""
    candidates = [candidate.strip() for candidate in if_none_match.split(",")]
    return "*" in candidates or tag in (candidate.removeprefix("W/") for candidate in candidates)


def feed_response(request: web.Request, document: str) -> web.Response:
    """The feed with its ETag; 304 without a body when the reader already has these bytes."""
    body = document.encode("utf-8")
    headers = {**_PAGE_HEADERS, hdrs.ETAG: etag(body), hdrs.CACHE_CONTROL: FEED_CACHE_CONTROL}
    if etag_matches(request.headers.get(hdrs.IF_NONE_MATCH, ""), headers[hdrs.ETAG]):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/rss+xml", charset="utf-8", headers=headers)


# --- pages -------------------------------------------------------------------------------------------------


class _NotShown(Exception):
    """The page asked for does not exist, or may not be shown; answered 404."""


class ArchivePages:
    """The aiohttp handlers of the archive pages and the feed."""

    def __init__(self, identity: IdentityStore, stubs: Stubs, public_url: str, templates: TemplateFetcher) -> None:
        self._identity = identity
        self._tags = stubs.tag
        self._campaigns = stubs.campaign
        self._emails = stubs.email
        self._public_url = public_url
        self._templates = templates

    async def _call(self, method: Callable[..., Awaitable[T]], request: Message) -> T:
        metadata = (("authorization", f"Bearer {self._identity.system_token()}"),)
        return await method(request, metadata=metadata, timeout=_SERVICE_TIMEOUT_SECONDS, wait_for_ready=True)

    async def _answer(self, page: Awaitable[web.Response]) -> web.Response:
        try:
            return await page
        except _NotShown:
            return not_found_page()
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _NOT_FOUND:
                return not_found_page()
            if exc.code() in _UNAVAILABLE:
                log.warning("archive page unavailable", error=exc.details())
                return unavailable_page()
            raise

    def archive_url(self, tag_id: int) -> str:
        return tag_archive_url(self._public_url, tag_id)

    def feed_url(self, tag_id: int) -> str:
        return f"{self._public_url}/archive/tag/{tag_id}/rss"

    def web_view_url(self, tag_id: int, campaign_id: int) -> str:
        return f"{self._public_url}/archive/tag/{tag_id}/campaign/{campaign_id}"

    def _feed_link(self, tag: tag_pb2.Tag) -> str:
        return feed_link(archive_title(tag.name), self.feed_url(tag.tag_id))

    def _personalization(self, tag: tag_pb2.Tag, campaign: campaign_pb2.Campaign) -> dict[str, str]:
        """What a web view (and the feed) fills in: it has no subscriber, so their tags take their fallbacks
        or vanish, link tags (unsubscribe included) too, except the web view's own address."""
        return {
            "Campaign:CampaignID": str(campaign.campaign_id),
            "Campaign:Name": campaign.name,
            "Link:WebBrowser": self.web_view_url(tag.tag_id, campaign.campaign_id),
        }

    def _title(self, email: email_pb2.Email, campaign: campaign_pb2.Campaign, values: dict[str, str]) -> str:
        """A sent campaign's public title: its email's subject as subscribers saw it, else the campaign's name."""
        subject = feed.one_line(render_personalization(email.subject, values, html_escape=False))
        return subject or campaign.name

    async def _tag(self, request: web.Request) -> tag_pb2.Tag:
        tag_id = _positive_id(request.match_info["tag_id"])
        if tag_id is None:
            raise _NotShown
        tag: tag_pb2.Tag = await self._call(self._tags.GetTag, tag_pb2.GetTagRequest(tag_id=tag_id))
        return tag

    async def _sent_campaigns(
        self, tag: tag_pb2.Tag, *, limit: int, publish_on_rss: bool | None = None
    ) -> list[campaign_pb2.Campaign]:
        """The tag's sent campaigns, newest first; with publish_on_rss=True only those published on RSS."""
        listed: campaign_pb2.ListCampaignsResponse = await self._call(
            self._campaigns.ListCampaigns,
            campaign_pb2.ListCampaignsRequest(
                tag_ids=[tag.tag_id],
                statuses=[campaign_pb2.CAMPAIGN_STATUS_SENT],
                owner_user_id=tag.owner_user_id,
                order_by=campaign_pb2.CAMPAIGN_ORDER_FIELD_SEND_TIME,
                descending=True,
                page_size=limit,
                publish_on_rss=publish_on_rss,
            ),
        )
        # The system token sees every user's campaigns: the owner, status and RSS setting are checked
        # again here so that a public page can never show what the filters were meant to exclude.
        return [
            campaign
            for campaign in listed.campaigns
            if campaign.owner_user_id == tag.owner_user_id
            and campaign.status == campaign_pb2.CAMPAIGN_STATUS_SENT
            and (publish_on_rss is None or campaign.publish_on_rss == publish_on_rss)
        ]

    async def _emails_by_id(self, email_ids: list[int], owner_user_id: int) -> dict[int, email_pb2.Email]:
        """The owner's emails among `email_ids` (deleted ones are missing), in one call."""
        if not email_ids:
            return {}
        listed: email_pb2.ListEmailsResponse = await self._call(
            self._emails.ListEmails, email_pb2.ListEmailsRequest(email_ids=email_ids)
        )
        return {email.email_id: email for email in listed.emails if email.owner_user_id == owner_user_id}

    async def tag_page(self, request: web.Request) -> web.Response:
        """GET /archive/tag/{tag_id}: the tag's sent campaigns, newest first."""
        return await self._answer(self._tag_page(request))

    async def _tag_page(self, request: web.Request) -> web.Response:
        tag = await self._tag(request)
        campaigns = await self._sent_campaigns(tag, limit=ARCHIVE_LIMIT)
        entries = [
            ArchiveEntry(campaign.name, send_date(campaign), self.web_view_url(tag.tag_id, campaign.campaign_id))
            for campaign in campaigns
        ]
        campaign_list = campaign_list_html(entries)
        template = await self._templates.template(tag.archive_template_url) if tag.archive_template_url else None
        if template is not None:
            return _page(render_into_template(with_head_markup(template, self._feed_link(tag)), campaign_list))
        return _page(builtin_page(tag.name, campaign_list, self._feed_link(tag)))

    async def feed(self, request: web.Request) -> web.Response:
        """GET /archive/tag/{tag_id}/rss: the tag's sent campaigns published on RSS, newest first, as RSS 2.0."""
        return await self._answer(self._feed(request))

    async def _feed(self, request: web.Request) -> web.Response:
        tag = await self._tag(request)
        campaigns = await self._sent_campaigns(tag, limit=FEED_LIMIT, publish_on_rss=True)
        content_ids = {campaign.campaign_id: _content_email_id(campaign) for campaign in campaigns}
        emails = await self._emails_by_id(sorted({i for i in content_ids.values() if i}), tag.owner_user_id)
        items: list[feed.FeedItem] = []
        for campaign in campaigns:
            email = emails.get(content_ids[campaign.campaign_id])
            if email is None:
                continue  # without content there is no web view to link to
            values = self._personalization(tag, campaign)
            items.append(
                feed.FeedItem(
                    title=self._title(email, campaign, values),
                    link=self.web_view_url(tag.tag_id, campaign.campaign_id),
                    guid=f"herald-campaign-{campaign.campaign_id}",
                    published=_send_time(campaign),
                    excerpt=feed.excerpt(
                        preheader=render_personalization(email.preheader_text, values, html_escape=False),
                        plain=render_personalization(email.plain_content, values, html_escape=False),
                        html_body=render_personalization(email.html_content, values, html_escape=True),
                    ),
                )
            )
        # What the feed shows changes when the tag does (its name) or a campaign is sent.
        changes = [_tag_changed(tag), *(item.published for item in items if item.published is not None)]
        channel = feed.Channel(
            title=archive_title(tag.name),
            link=self.archive_url(tag.tag_id),
            feed_url=self.feed_url(tag.tag_id),
            description=f"Campaigns sent under the tag {tag.name}.",
            last_build=max(changes),
        )
        return feed_response(request, feed.render_feed(channel, items))

    async def campaign_page(self, request: web.Request) -> web.Response:
        """GET /archive/tag/{tag_id}/campaign/{campaign_id}: the content of a sent campaign carrying the tag."""
        return await self._answer(self._campaign_page(request))

    async def _campaign_page(self, request: web.Request) -> web.Response:
        campaign_id = _positive_id(request.match_info["campaign_id"])
        if campaign_id is None:
            raise _NotShown
        tag = await self._tag(request)
        campaign: campaign_pb2.Campaign = await self._call(
            self._campaigns.GetCampaign, campaign_pb2.GetCampaignRequest(campaign_id=campaign_id)
        )
        if campaign.owner_user_id != tag.owner_user_id or campaign.status != campaign_pb2.CAMPAIGN_STATUS_SENT:
            raise _NotShown
        tagged: tag_pb2.BatchGetCampaignTagsResponse = await self._call(
            self._tags.BatchGetCampaignTags, tag_pb2.BatchGetCampaignTagsRequest(campaign_ids=[campaign_id])
        )
        if not any(t.tag_id == tag.tag_id for entry in tagged.campaign_tags for t in entry.tags):
            raise _NotShown
        email_id = _content_email_id(campaign)
        if not email_id:
            raise _NotShown
        email: email_pb2.Email = await self._call(
            self._emails.GetEmail, email_pb2.GetEmailRequest(email_id=email_id)
        )
        values = self._personalization(tag, campaign)
        view = WebView(
            title=self._title(email, campaign, values),
            send_date=send_date(campaign),
            archives=(ArchiveLink(self.archive_url(tag.tag_id), archive_title(tag.name)),),
            head=self._feed_link(tag),
        )
        if email.html_content:
            return _page(
                web_view_page(view, html_body=render_personalization(email.html_content, values, html_escape=True))
            )
        if email.plain_content:
            return _page(
                web_view_page(
                    view, plain_text=render_personalization(email.plain_content, values, html_escape=False)
                )
            )
        raise _NotShown


def add_routes(app: web.Application, identity: IdentityStore, stubs: Stubs, public_url: str) -> None:
    """Serves the archive pages and feeds on `app`; the template fetcher closes with it."""
    templates = TemplateFetcher(allow_private=identity.settings.allow_private_urls)
    pages = ArchivePages(identity, stubs, public_url, templates)

    async def close(_: web.Application) -> None:
        await templates.close()

    app.on_cleanup.append(close)
    app.router.add_get("/archive/tag/{tag_id}", pages.tag_page)
    app.router.add_get("/archive/tag/{tag_id}/rss", pages.feed)
    app.router.add_get("/archive/tag/{tag_id}/campaign/{campaign_id}", pages.campaign_page)
