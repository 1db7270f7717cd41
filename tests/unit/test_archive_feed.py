"""The archive's RSS feed and web view as documents: escaping of hostile text, excerpts, RSS 2.0's required parts, ETags."""

from __future__ import annotations

import email.utils
import html
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import feedparser
import pytest
from hypothesis import given
from hypothesis import strategies as st

from translator import archive, feed

SENT = datetime(2025, 6, 3, 9, 30, tzinfo=UTC)
HOSTILE = [
    "<script>alert(1)</script>",
    "Tom & Jerry &amp; friends",
    "]]> after a CDATA end",
    "bell\x07 and escape\x1b[31m and NUL\x00 and DEL\x7f and C1\x85",
    "lone surrogate \ud800 and U+FFFE \ufffe",
    "\"quotes\" and 'apostrophes'",
    "<![CDATA[ inside ]]>",
    "line\nbreaks\r\nand\ttabs",
]


def channel(**overrides: object) -> feed.Channel:
    values: dict[str, object] = {
        "title": "Archive: newsletter",
        "link": "http://127.0.0.1:8080/archive/tag/7",
        "feed_url": "http://127.0.0.1:8080/archive/tag/7/rss",
        "description": "Campaigns sent under the tag newsletter.",
        "last_build": SENT,
    }
    values.update(overrides)
    return feed.Channel(**values)  # type: ignore[arg-type]


def item(**overrides: object) -> feed.FeedItem:
    values: dict[str, object] = {
        "title": "June letter",
        "link": "http://127.0.0.1:8080/archive/tag/7/campaign/3",
        "guid": "herald-campaign-3",
        "published": SENT,
        "excerpt": "What happened in June.",
    }
    values.update(overrides)
    return feed.FeedItem(**values)  # type: ignore[arg-type]


def expected_text(text: str) -> str:
    """What a reader sees of a title or excerpt: characters XML cannot carry dropped, whitespace collapsed."""
    return feed.one_line(text)


def check_rss_20(document: str) -> ET.Element:
    """What the RSS 2.0 specification requires, checked by hand (there is no packaged validator to run offline).

    Well-formed XML; <rss version="2.0"> with one <channel> holding title, link and description; every
    item has a title or a description; dates are RFC 822; a guid that is not a permalink says so.
    """
    root = ET.fromstring(document.encode("utf-8"))
    assert root.tag == "rss" and root.get("version") == "2.0"
    channels = root.findall("channel")
    assert len(channels) == 1
    rss_channel = channels[0]
    for required in ("title", "link", "description"):
        assert len(rss_channel.findall(required)) == 1, required
    for date in [*rss_channel.findall("lastBuildDate"), *rss_channel.findall("item/pubDate")]:
        assert email.utils.parsedate_to_datetime(date.text or "").tzinfo is not None, date.text
        assert (date.text or "").endswith(" GMT")
    for rss_item in rss_channel.findall("item"):
        assert rss_item.find("title") is not None or rss_item.find("description") is not None
        guid = rss_item.find("guid")
        if guid is not None and not (guid.text or "").startswith(("http://", "https://")):
            assert guid.get("isPermaLink") == "false"
    self_link = rss_channel.find("{http://www.w3.org/2005/Atom}link")
    assert self_link is not None and self_link.get("rel") == "self"
    assert self_link.get("type") == "application/rss+xml"
    return root


def test_a_feed_is_rss_20_with_its_channel_and_items() -> None:
    document = feed.render_feed(channel(), [item(), item(guid="herald-campaign-2", title="May letter")])

    check_rss_20(document)
    parsed = feedparser.parse(document.encode("utf-8"))
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "rss20"
    assert parsed.feed.title == "Archive: newsletter"
    assert parsed.feed.link == "http://127.0.0.1:8080/archive/tag/7"
    assert parsed.feed.updated_parsed[:6] == (2025, 6, 3, 9, 30, 0)
    assert [entry.title for entry in parsed.entries] == ["June letter", "May letter"]
    first = parsed.entries[0]
    assert first.link == "http://127.0.0.1:8080/archive/tag/7/campaign/3"
    assert (first.id, first.guidislink) == ("herald-campaign-3", False)
    assert first.published == "Tue, 03 Jun 2025 09:30:00 GMT"
    assert first.summary == "What happened in June."


def test_an_empty_feed_is_still_a_valid_channel() -> None:
    document = feed.render_feed(channel(), [])
    check_rss_20(document)
    parsed = feedparser.parse(document.encode("utf-8"))
    assert not parsed.bozo and parsed.entries == []


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_titles_and_excerpts_are_text_in_the_feed(hostile: str) -> None:
    document = feed.render_feed(channel(title=f"Archive: {hostile}"), [item(title=hostile, excerpt=hostile)])

    root = check_rss_20(document)
    assert "]]>" not in document and "<script" not in document
    if "<script>" in hostile:
        # Titles are plain text: &, < and > as hexadecimal references (the RSS Best Practices Profile).
        assert "<title>&#x3C;script&#x3E;alert(1)&#x3C;/script&#x3E;</title>" in document
    parsed = feedparser.parse(document.encode("utf-8"))
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.entries[0].title == expected_text(hostile)
    assert parsed.feed.title == expected_text(f"Archive: {hostile}")
    # A description is HTML to a reader: the excerpt is escaped text in it, never markup.
    description = root.findtext("channel/item/description")
    assert description == html.escape(expected_text(hostile), quote=False)
    assert html.unescape(parsed.entries[0].summary) == expected_text(hostile)


@given(st.text())
def test_any_text_survives_the_feed_as_the_same_text(text: str) -> None:
    document = feed.render_feed(channel(), [item(title=text, excerpt=text)])
    # A strict XML parser is the oracle: feedparser "repairs" text that looks like mis-decoded UTF-8 (Â¡).
    root = ET.fromstring(document.encode("utf-8"))
    assert (root.findtext("channel/item/title") or "") == expected_text(text)
    assert html.unescape(root.findtext("channel/item/description") or "") == expected_text(text)
    assert not feedparser.parse(document.encode("utf-8")).bozo


def test_urls_are_escaped_in_links_and_the_self_link() -> None:
    odd = 'http://example.com/a?b=1&c="2"<x>'
    document = feed.render_feed(channel(link=odd, feed_url=odd), [item(link=odd)])
    root = check_rss_20(document)
    assert root.findtext("channel/link") == odd
    assert root.findtext("channel/item/link") == odd
    assert root.find("channel/{http://www.w3.org/2005/Atom}link").get("href") == odd  # type: ignore[union-attr]


def test_dates_are_written_in_gmt_whatever_zone_they_come_in() -> None:
    in_new_york = SENT.astimezone(timezone(timedelta(hours=-4)))
    assert feed.rfc822(in_new_york) == "Tue, 03 Jun 2025 09:30:00 GMT"


def test_an_item_without_a_send_time_has_no_pub_date() -> None:
    root = check_rss_20(feed.render_feed(channel(), [item(published=None)]))
    assert root.find("channel/item/pubDate") is None


# --- excerpts ------------------------------------------------------------------------------------------------


def test_the_excerpt_is_the_preheader_else_the_plain_text_else_the_htmls_text() -> None:
    assert feed.excerpt(preheader="Preview", plain="Plain", html_body="<p>HTML</p>") == "Preview"
    assert feed.excerpt(preheader=" ", plain="Plain  text\n here", html_body="<p>HTML</p>") == "Plain text here"
    assert feed.excerpt(preheader="", plain="", html_body="<p>HTML</p>") == "HTML"
    assert feed.excerpt(preheader="", plain="", html_body="") == ""


def test_the_htmls_text_leaves_out_what_a_reader_does_not_see() -> None:
    body = (
        "<!DOCTYPE html><html><head><title>Title</title><style>p{color:red}</style>"
        "<script>var x = 1;</script></head><body><!--[if mso]>Outlook<![endif]-->"
        "<p>Hello&nbsp;<b>you</b>,</p><p>a&amp;b &lt;c&gt;</p><br>end&zwnj;&#847;</body></html>"
    )
    assert feed.html_to_text(body) == "Hello you , a&b <c> end\u200c\u034f"
    assert feed.excerpt(preheader="", plain="", html_body=body) == "Hello you , a&b <c> end"


def test_a_long_excerpt_is_cut_after_a_whole_word() -> None:
    text = "word " * 100
    shortened = feed.shorten(text, 30)
    assert len(shortened) <= 30 and shortened.endswith("word…")
    assert feed.shorten("x" * 50, 10) == "x" * 9 + "…"
    assert feed.shorten("short", 10) == "short"


# --- the web view and the archive page's <head> --------------------------------------------------------------


def test_the_web_view_frames_the_email_in_a_sandbox_below_its_title_date_and_way_back() -> None:
    view = archive.WebView(
        title="June <letter> & more",
        send_date="2025-06-03",
        archives=(archive.ArchiveLink("http://127.0.0.1:8080/archive/tag/7", "Archive: newsletter"),),
        head=archive.feed_link("Archive: newsletter", "http://127.0.0.1:8080/archive/tag/7/rss"),
    )
    body = '<!DOCTYPE html><html><body><p onclick="x()">Hi "you"</p><script>alert(1)</script></body></html>'

    page = archive.web_view_page(view, html_body=body)

    assert "<title>June &lt;letter&gt; &amp; more</title>" in page
    assert '<a href="http://127.0.0.1:8080/archive/tag/7" class="herald-back">' in page
    assert '<time datetime="2025-06-03">2025-06-03</time>' in page
    assert 'type="application/rss+xml"' in page
    assert f'sandbox="{archive.WEB_VIEW_SANDBOX}"' in page and "allow-scripts" not in page
    assert "allow-same-origin" not in page
    # The email is only in the srcdoc attribute, escaped; links in it open outside the frame.
    assert "<script>" not in page and "<p onclick" not in page
    srcdoc = page.split('srcdoc="', 1)[1].split('"', 1)[0]
    assert html.unescape(srcdoc) == '<!DOCTYPE html><base target="_blank">' + body[len("<!DOCTYPE html>") :]


def test_a_plain_text_web_view_shows_the_text_escaped() -> None:
    view = archive.WebView(
        title="T", send_date="2025-06-03", archives=(archive.ArchiveLink("http://a/", "Archive: a"),)
    )
    page = archive.web_view_page(view, plain_text="<b>not bold</b>\n& more")
    assert '<div class="herald-plain">&lt;b&gt;not bold&lt;/b&gt;\n&amp; more</div>' in page
    assert "<iframe" not in page


def test_a_web_view_links_back_to_each_archive_and_says_sent_only_with_a_date() -> None:
    archives = (
        archive.ArchiveLink("http://a/1", "Archive: <one>"),
        archive.ArchiveLink("http://a/2?x&y", "Archive: two"),
    )
    page = archive.web_view_page(archive.WebView(title="T", send_date="", archives=archives), plain_text="x")
    assert (
        '<header><p><a href="http://a/1" class="herald-back">&larr; Archive: &lt;one&gt;</a></p>'
        '<p><a href="http://a/2?x&amp;y" class="herald-back">&larr; Archive: two</a></p><h1>T</h1></header>'
    ) in page
    assert "Sent" not in page and "<time" not in page
    page = archive.web_view_page(archive.WebView(title="T", send_date="2025-06-03"), plain_text="x")
    assert '<header><h1>T</h1><p class="herald-sent">Sent <time datetime="2025-06-03">' in page
    assert "herald-back" not in page


def test_the_feed_link_is_escaped_and_added_to_a_templates_head() -> None:
    link = archive.feed_link('Archive: "x" <y>', "http://a/rss?x=1&y=2")
    assert link == (
        '<link rel="alternate" type="application/rss+xml" title="Archive: &quot;x&quot; &lt;y&gt;" '
        'href="http://a/rss?x=1&amp;y=2">'
    )
    template = "<html><HEAD><title>t</title></HEAD ><body>%Archive:Campaigns%</head></body></html>"
    assert archive.with_head_markup(template, "<L>") == (
        "<html><HEAD><title>t</title><L></HEAD ><body>%Archive:Campaigns%</head></body></html>"
    )
    assert (
        archive.with_head_markup("<body>%Archive:Campaigns%</body>", "<L>") == "<body>%Archive:Campaigns%</body>"
    )


def test_a_body_without_a_doctype_gets_its_base_target_first() -> None:
    view = archive.WebView(title="T", send_date="", archives=(archive.ArchiveLink("http://a/", "Archive: a"),))
    page = archive.web_view_page(view, html_body="<p>Hi</p>")
    assert html.escape('<base target="_blank"><p>Hi</p>') in page


# --- ETags ---------------------------------------------------------------------------------------------------


def test_etags_follow_the_bytes_and_if_none_match_is_compared_weakly() -> None:
    tag = archive.etag(b"one")
    assert tag == archive.etag(b"one") != archive.etag(b"two")
    assert tag.startswith('"') and tag.endswith('"')
    assert archive.etag_matches(tag, tag)
    assert archive.etag_matches(f'"other", W/{tag}', tag)
    assert archive.etag_matches("*", tag)
    assert not archive.etag_matches("", tag)
    assert not archive.etag_matches('"other"', tag)
