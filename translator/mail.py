"""The /mail pages: what the local mail capture received, listed newest first and shown one message at a time.

They exist only when `herald run` started the capture (no SMTP_URL, HERALD_MAIL_CAPTURE=true); with
a real relay there is nothing to show and the paths answer 404. The capture holds every user's
mail, so the pages are a development tool for the machine's owner, read with the translator's
own admin token.

A message's HTML is the sender's: it is shown in an iframe built from `srcdoc`, sandboxed without
scripts, same-origin access or form submission, under a Content-Security-Policy that allows no
script anywhere on the page (a srcdoc frame inherits it). Every other value is escaped.
"""

from __future__ import annotations

import email.policy
import html
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TypeVar

import grpc
import structlog
from aiohttp import web
from google.protobuf.message import Message
from herald.delivery.v1 import delivery_pb2

from translator.commands import Stubs
from translator.identity import IdentityStore

log = structlog.get_logger()
T = TypeVar("T")

PAGE_SIZE = 50
_SERVICE_TIMEOUT_SECONDS = 10.0
_MAX_ID = 2**63 - 1
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline' http: https:; "
    "font-src http: https: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The frame may open a link in a new tab; it may not run scripts, submit forms or reach this page.
_FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}"
    "h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}a{color:#0b57d0}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.35rem .6rem;"
    "border-bottom:1px solid #e3e3e3}th{font-weight:600;color:#555;white-space:nowrap}.fields th{width:14rem}"
    ".list td:first-child{white-space:nowrap;color:#666}.muted{color:#666}.note{background:#f4f6fb;"
    "padding:.6rem .8rem;border-radius:.3rem}td.value{word-break:break-all;font-family:ui-monospace,monospace;"
    "font-size:.85rem}iframe{width:100%;height:36rem;border:1px solid #ccc;border-radius:.3rem;resize:vertical;"
    "background:#fff}pre{white-space:pre-wrap;background:#f7f7f7;padding:1rem;border-radius:.3rem;"
    "font-size:.9rem}nav{margin:1rem 0}"
)


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_document(title, body),
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=_PAGE_HEADERS,
    )


def _received(message: delivery_pb2.CapturedMessage) -> str:
    return message.receive_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def list_page(listed: delivery_pb2.ListCapturedMessagesResponse) -> str:
    """The listing: time, envelope sender and recipients, subject linking to the message; escaped."""
    rows = "".join(
        "<tr>"
        f"<td>{_escape(_received(m))}</td>"
        f"<td>{_escape(m.envelope_from or '<>')}</td>"
        f"<td>{_escape(', '.join(m.envelope_to))}</td>"
        f'<td><a href="/mail/{m.captured_message_id}">{_escape(m.subject or "(no subject)")}</a></td>'
        "</tr>"
        for m in listed.captured_messages
    )
    table = (
        '<table class="list"><thead><tr><th>Received</th><th>From</th><th>To</th><th>Subject</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
        if rows
        else '<p class="muted">No mail has been captured yet. Send a campaign and it appears here.</p>'
    )
    older = (
        f'<nav><a href="/mail?page_token={_escape(listed.next_page_token)}">Older messages &rarr;</a></nav>'
        if listed.next_page_token
        else ""
    )
    count = f"{listed.total_size} message{'s' if listed.total_size != 1 else ''}"
    return _document(
        "Captured mail",
        "<h1>Captured mail</h1>"
        '<p class="note">SMTP_URL is not set, so Herald delivers to its local mail capture: nothing '
        f"leaves this machine. {_escape(count)}, newest first.</p>{table}{older}",
    )


def _header_value(message: EmailMessage, name: str, raw: str) -> str:
    """A header decoded (RFC 2047 words and all), or as it arrived when it cannot be decoded."""
    try:
        return str(message.policy.header_fetch_parse(name, raw))
    except (ValueError, TypeError, IndexError, LookupError):
        return raw


def _part_text(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError):
        # An unknown or wrong charset: the bytes as UTF-8, damaged characters replaced.
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or not isinstance(part, EmailMessage):
        return None
    return _part_text(part)


def message_page(captured: delivery_pb2.CapturedMessage) -> str:
    """One message: envelope, every header, the HTML part in a sandboxed frame, the text part; escaped."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(captured.raw_message)
    assert isinstance(parsed, EmailMessage)
    envelope = (
        f"<tr><th>Received</th><td>{_escape(_received(captured))}</td></tr>"
        f"<tr><th>MAIL FROM</th><td>{_escape(captured.envelope_from or '<>')}</td></tr>"
        f"<tr><th>RCPT TO</th><td>{_escape(', '.join(captured.envelope_to))}</td></tr>"
        f"<tr><th>Size</th><td>{captured.size_bytes} bytes</td></tr>"
    )
    headers = "".join(
        f'<tr><th>{_escape(name)}</th><td class="value">{_escape(_header_value(parsed, name, str(raw)))}</td></tr>'
        for name, raw in parsed.raw_items()
    )
    html_part = _body(parsed, "html")
    text_part = _body(parsed, "plain")
    sections = [
        f'<nav><a href="/mail">&larr; All captured mail</a> · <a href="/mail/{captured.captured_message_id}/raw">'
        "Raw message</a></nav>",
        f"<h1>{_escape(captured.subject or '(no subject)')}</h1>",
        f'<h2>Envelope</h2><table class="fields">{envelope}</table>',
        f'<h2>Headers</h2><table class="fields">{headers}</table>',
    ]
    if html_part is not None:
        sections.append(
            "<h2>HTML</h2>"
            f'<iframe title="HTML part" sandbox="{_FRAME_SANDBOX}" referrerpolicy="no-referrer" '
            f'srcdoc="{_escape(html_part)}"></iframe>'
        )
    if text_part is not None:
        sections.append(f"<h2>Text</h2><pre>{_escape(text_part)}</pre>")
    if html_part is None and text_part is None:
        sections.append('<p class="muted">The message has no text or HTML part.</p>')
    return _document(captured.subject or "Captured message", "".join(sections))


def _positive_id(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= _MAX_ID else None


def _not_found() -> web.Response:
    return _page("Not found", '<h1>Not found</h1><p><a href="/mail">All captured mail</a></p>', 404)


class MailPages:
    """The aiohttp handlers of /mail, /mail/{id} and /mail/{id}/raw."""

    def __init__(self, identity: IdentityStore, stubs: Stubs) -> None:
        self._identity = identity
        self._delivery = stubs.delivery

    async def _call(self, method: Callable[..., Awaitable[T]], request: Message) -> T:
        metadata = (("authorization", f"Bearer {self._identity.system_token()}"),)
        return await method(request, metadata=metadata, timeout=_SERVICE_TIMEOUT_SECONDS, wait_for_ready=True)

    async def _answer(self, page: Awaitable[web.Response]) -> web.Response:
        try:
            return await page
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return _not_found()
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                log.warning("mail pages: delivery unavailable", error=exc.details())
                response = _page(
                    "Unavailable", "<h1>Temporarily unavailable</h1><p>Try again in a moment.</p>", 503
                )
                response.headers["Retry-After"] = "5"
                return response
            raise

    async def listing(self, request: web.Request) -> web.Response:
        """GET /mail: the newest captured messages, PAGE_SIZE at a time."""

        async def page() -> web.Response:
            listed: delivery_pb2.ListCapturedMessagesResponse = await self._call(
                self._delivery.ListCapturedMessages,
                delivery_pb2.ListCapturedMessagesRequest(
                    page_size=PAGE_SIZE, page_token=request.query.get("page_token", "")
                ),
            )
            return web.Response(
                text=list_page(listed), content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
            )

        return await self._answer(page())

    async def _message(self, request: web.Request) -> delivery_pb2.CapturedMessage | None:
        captured_message_id = _positive_id(request.match_info["captured_message_id"])
        if captured_message_id is None:
            return None
        captured: delivery_pb2.CapturedMessage = await self._call(
            self._delivery.GetCapturedMessage,
            delivery_pb2.GetCapturedMessageRequest(captured_message_id=captured_message_id),
        )
        return captured

    async def message(self, request: web.Request) -> web.Response:
        """GET /mail/{id}: one message rendered."""

        async def page() -> web.Response:
            captured = await self._message(request)
            if captured is None:
                return _not_found()
            return web.Response(
                text=message_page(captured), content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
            )

        return await self._answer(page())

    async def raw(self, request: web.Request) -> web.Response:
        """GET /mail/{id}/raw: the message exactly as received, as plain text."""

        async def page() -> web.Response:
            captured = await self._message(request)
            if captured is None:
                return _not_found()
            return web.Response(
                body=captured.raw_message, content_type="text/plain", charset="utf-8", headers=_PAGE_HEADERS
            )

        return await self._answer(page())


def add_routes(app: web.Application, identity: IdentityStore, stubs: Stubs) -> None:
    """Serves the /mail pages on `app` when the local mail capture is in use (HERALD_MAIL_CAPTURE)."""
    if not identity.settings.mail_capture:
        return
    pages = MailPages(identity, stubs)
    app.router.add_get("/mail", pages.listing)
    app.router.add_get("/mail/{captured_message_id}", pages.message)
    app.router.add_get("/mail/{captured_message_id}/raw", pages.raw)
