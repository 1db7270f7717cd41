"""The /mail pages' HTML, built from hostile messages: nothing the sender wrote reaches the page unescaped."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

from aiohttp import web
from google.protobuf import timestamp_pb2
from herald.delivery.v1 import delivery_pb2

from services.common.config import Settings
from translator import mail

RECEIVED = timestamp_pb2.Timestamp(seconds=1_767_225_600)  # 2026-01-01 00:00:00 UTC


def captured(raw: bytes, subject: str = "", envelope_from: str = "a@example.com") -> delivery_pb2.CapturedMessage:
    return delivery_pb2.CapturedMessage(
        captured_message_id=7,
        envelope_from=envelope_from,
        envelope_to=["b@example.com"],
        subject=subject,
        receive_time=RECEIVED,
        size_bytes=len(raw),
        raw_message=raw,
    )


def test_an_html_part_cannot_break_out_of_its_frame() -> None:
    raw = (
        b"Subject: =?utf-8?q?=3Cscript=3Ealert(1)=3C/script=3E?=\r\n"
        b'X-Evil: "><img src=x onerror=alert(2)>\r\n'
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b'</iframe><script>alert(3)</script><p onclick="x">&amp;</p>\r\n'
    )
    page = mail.message_page(captured(raw, subject="<script>alert(1)</script>"))
    assert "<script>" not in page and "<img" not in page
    assert page.count("<iframe") == 1 and page.count("</iframe>") == 1
    frame = re.search(r'srcdoc="([^"]*)"', page)
    assert frame is not None
    assert "</iframe><script>alert(3)</script>" in html.unescape(frame.group(1))
    assert html.escape('"><img src=x onerror=alert(2)>') in page


def test_a_message_in_an_unknown_charset_is_still_shown() -> None:
    raw = b"Subject: odd\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n\r\nsome <text> \xff\r\n"
    page = mail.message_page(captured(raw, subject="odd"))
    assert "some &lt;text&gt;" in page


def test_undecodable_headers_are_shown_as_they_arrived() -> None:
    raw = b'Subject: =?x-bogus?q?broken?=\r\nTo: "unterminated <b@example.com\r\n\r\nbody\r\n'
    page = mail.message_page(captured(raw))
    assert "body" in page
    assert "unterminated" in page


def test_the_listing_escapes_every_field_and_links_by_id() -> None:
    listed = delivery_pb2.ListCapturedMessagesResponse(
        captured_messages=[captured(b"", subject='<b>"hi"</b>', envelope_from="<x>@example.com")],
        total_size=1,
        next_page_token="7",
    )
    page = mail.list_page(listed)
    assert "<b>" not in page and "&lt;b&gt;&quot;hi&quot;&lt;/b&gt;" in page
    assert "&lt;x&gt;@example.com" in page
    assert 'href="/mail/7"' in page and 'href="/mail?page_token=7"' in page
    assert "2026-01-01 00:00:00 UTC" in page


def test_without_the_capture_there_are_no_mail_pages() -> None:
    app = web.Application()
    identity = SimpleNamespace(settings=Settings(mail_capture=False))
    mail.add_routes(app, identity, stubs=None)  # type: ignore[arg-type]
    assert not [r for r in app.router.resources() if r.canonical.startswith("/mail")]
    mail.add_routes(
        app, SimpleNamespace(settings=Settings(mail_capture=True)), stubs=SimpleNamespace(delivery=None)
    )  # type: ignore[arg-type]
    assert {r.canonical for r in app.router.resources()} >= {"/mail", "/mail/{captured_message_id}"}
