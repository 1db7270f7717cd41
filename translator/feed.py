"""The RSS 2.0 document of a tag archive's feed: its channel and items as XML, every text escaped, plus the excerpts.

Rendering is pure (no I/O) so that hostile subjects and bodies are tested without Herald running;
translator/archive.py gathers the campaigns and serves the result.
"""

from __future__ import annotations

import email.utils
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from xml.sax.saxutils import escape, quoteattr

# An item's description is the start of the email's text, cut at a word boundary.
EXCERPT_CHARACTERS = 300
# XML 1.0 cannot carry C0 controls other than tab, newline and carriage return, lone surrogates or
# U+FFFE/U+FFFF; C1 controls (and DEL) it can, but they are never meant as text. All are dropped.
_NOT_XML_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# Plain-text elements (titles, the channel's description) write &, < and > as hexadecimal character
# references: the same text to an XML parser, and the form the RSS Advisory Board's Best Practices Profile
# recommends, since aggregators differ on whether those elements hold HTML.
_PLAIN_TEXT_REFERENCES = str.maketrans({"&": "&#x26;", "<": "&#x3C;", ">": "&#x3E;"})
# Elements whose text a reader of the body does not see: it is left out of an excerpt.
_HIDDEN_ELEMENTS = frozenset({"title", "style", "script", "template"})
# Invisible characters that emails pad their preview text with (soft hyphen, zero-width joiners, ...).
_INVISIBLE = re.compile("[\u00ad\u034f\u200b-\u200f\u2060\ufeff]")


@dataclass(frozen=True)
class Channel:
    """The feed as a whole: named after the tag archive it follows."""

    title: str
    # The archive page.
    link: str
    # The feed's own URL (atom:link rel="self").
    feed_url: str
    description: str
    last_build: datetime


@dataclass(frozen=True)
class FeedItem:
    """One campaign published on RSS."""

    title: str
    # The campaign's web view.
    link: str
    # Stable for the campaign's lifetime; not a URL (isPermaLink="false").
    guid: str
    # When the campaign was sent; None leaves pubDate out.
    published: datetime | None
    # Plain text; the description carries it HTML-escaped, since readers take a description as HTML.
    excerpt: str


def xml_text(text: str) -> str:
    """Text as XML character data: characters XML cannot carry dropped, then &, < and > escaped.

    `>` is escaped too, so `]]>` never appears in the output.
    """
    return escape(_NOT_XML_TEXT.sub("", text))


def xml_plain_text(text: str) -> str:
    """Plain text as XML character data: characters XML cannot carry dropped, &, < and > as hexadecimal references."""
    return _NOT_XML_TEXT.sub("", text).translate(_PLAIN_TEXT_REFERENCES)


def one_line(text: str) -> str:
    """The text with its characters XML cannot carry dropped and every run of whitespace made one space."""
    return " ".join(_NOT_XML_TEXT.sub("", text).split())


def rfc822(instant: datetime) -> str:
    """An instant as RSS dates are written (RFC 822 with a four-digit year), in GMT."""
    return email.utils.format_datetime(instant.astimezone(UTC), usegmt=True)


def _element(name: str, text: str) -> str:
    return f"<{name}>{xml_text(text)}</{name}>"


def _plain_element(name: str, text: str) -> str:
    return f"<{name}>{xml_plain_text(one_line(text))}</{name}>"


def _item(item: FeedItem) -> str:
    parts = [
        _plain_element("title", item.title),
        _element("link", item.link),
        f'<guid isPermaLink="false">{xml_text(item.guid)}</guid>',
    ]
    if item.published is not None:
        parts.append(_element("pubDate", rfc822(item.published)))
    if item.excerpt:
        parts.append(_element("description", html.escape(one_line(item.excerpt), quote=False)))
    return "<item>" + "".join(parts) + "</item>\n"


def render_feed(channel: Channel, items: Sequence[FeedItem]) -> str:
    """The feed as an RSS 2.0 document in UTF-8, its items in the order given."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">\n<channel>\n'
        + _plain_element("title", channel.title)
        + _element("link", channel.link)
        + _plain_element("description", channel.description)
        + f'<atom:link href={quoteattr(_NOT_XML_TEXT.sub("", channel.feed_url))} rel="self" type="application/rss+xml"/>'
        + _element("lastBuildDate", rfc822(channel.last_build))
        + "\n"
        + "".join(_item(item) for item in items)
        + "</channel>\n</rss>\n"
    )


# --- excerpts ----------------------------------------------------------------------------------------------


class _VisibleText(HTMLParser):
    """Collects the text a reader of an HTML body sees, a space at every tag so that words do not run together."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_ELEMENTS:
            self._hidden.append(tag)
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._hidden:
            # Closes the innermost open hidden element of that name (and whatever was left open inside it).
            while self._hidden and self._hidden.pop() != tag:
                pass
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(body: str) -> str:
    """The visible text of an HTML body, its whitespace collapsed."""
    parser = _VisibleText()
    parser.feed(body)
    parser.close()
    return one_line("".join(parser.parts))


def shorten(text: str, limit: int = EXCERPT_CHARACTERS) -> str:
    """At most `limit` characters of the text, whitespace collapsed and invisible padding dropped, cut after a
    whole word and marked with … when it is longer."""
    text = one_line(_INVISIBLE.sub("", text))
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut and not text[limit - 1].isspace():
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def excerpt(*, preheader: str, plain: str, html_body: str) -> str:
    """An item's description: the preheader when there is one, else the start of the plain text, else of the HTML's text.

    The texts come with their personalization already rendered.
    """
    for text in (preheader, plain):
        if text.strip():
            return shorten(text)
    return shorten(html_to_text(html_body)) if html_body else ""
