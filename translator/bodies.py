"""Read a legacy request's parameters from its query string and body, whatever encoding the client chose.

The legacy server (PHP) read a JSON body whatever its Content-Type said, and a form's first 1,000
fields (max_input_vars). Bytes that cannot be read as either are the client's to fix: UnreadableBody,
which the translator answers 100000 with HTTP 400, never a fault of its own.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from translator.params import BodyError, holds_lone_surrogate, parse_form, parse_json_body

__all__ = ["MAX_BODY", "MAX_FORM_FIELDS", "UnreadableBody", "read_params", "urlencoded_fields"]

log = structlog.get_logger()

MAX_BODY = 16 * 1024 * 1024
MAX_FORM_FIELDS = 1000
"""Form fields read from one body (PHP's default max_input_vars); the rest are dropped and logged."""

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class UnreadableBody(Exception):
    """The request's parameters cannot be read: `text` says why, for the 100000 answer.

    `close_connection`: the rest of the body cannot be read either, so the connection must not be
    kept alive for another request.
    """

    def __init__(self, text: str, *, close_connection: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.close_connection = close_connection


def _printable(text: str, limit: int = 200) -> str:
    # Parser messages can quote the client's bytes; the answer and the log get them as ASCII.
    return text.encode("ascii", "backslashreplace").decode("ascii")[:limit]


async def read_params(request: web.Request) -> dict[str, object]:
    """Body parameters (a JSON object or form fields) over query-string ones, every key lower-cased.

    Raises UnreadableBody, and HTTPRequestEntityTooLarge past MAX_BODY.
    """
    merged: dict[str, object] = {key.lower(): value for key, value in request.query.items()}
    if request.method == "POST":
        merged.update(await _body_params(request))
    if holds_lone_surrogate(merged):
        # A JSON body with one was refused already; this catches forms and query strings in odd charsets.
        raise UnreadableBody("Unreadable request: a parameter holds an unpaired UTF-16 surrogate")
    return merged


async def _body_params(request: web.Request) -> dict[str, object]:
    content_type = request.content_type
    if content_type == MULTIPART:
        return parse_form(await _multipart_fields(request))
    try:
        body = await request.read()
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # A body that does not follow its Content-Encoding (gzip that is not gzip) or its chunking.
        # Marked as read to its end, or aiohttp would try to drain it after the answer and log the
        # same error as unhandled; the connection closes after the answer instead.
        request.content.feed_eof()
        text = f"Unreadable request body: {_printable(' '.join(str(exc).split()))}"
        raise UnreadableBody(text, close_connection=True) from exc
    if not body.strip():
        return {}
    charset = request.charset
    if content_type == URLENCODED and not body.lstrip().startswith(b"{"):
        return parse_form(urlencoded_fields(body, charset))
    # Whatever else the Content-Type says (none, text/plain, application/xml, ...), the body is JSON;
    # so is a "form" that is a JSON object, as `curl -d '{...}'` sends one.
    try:
        return parse_json_body(body, charset)
    except BodyError as exc:
        if content_type == URLENCODED:
            return parse_form(urlencoded_fields(body, charset))
        raise UnreadableBody(f"Invalid JSON in request body: {exc}") from exc


def urlencoded_fields(body: bytes, charset: str | None) -> list[tuple[str, str]]:
    """The first MAX_FORM_FIELDS name/value pairs of a urlencoded body, decoded with its charset.

    Bytes a value cannot be decoded from become U+FFFD (as a browser shows them); an unknown charset
    makes the body unreadable.
    """
    encoding = charset or "utf-8"
    pieces = [piece for piece in body.strip().split(b"&") if piece]
    _note_dropped(len(pieces) - MAX_FORM_FIELDS)
    fields: list[tuple[str, str]] = []
    try:
        for piece in pieces[:MAX_FORM_FIELDS]:
            name, _, value = piece.partition(b"=")
            fields.append((_form_text(name, encoding), _form_text(value, encoding)))
    except (LookupError, ValueError) as exc:
        raise UnreadableBody(f"Unreadable form body: unknown charset {encoding[:40]!a}") from exc
    return fields


def _form_text(raw: bytes, encoding: str) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode(encoding, "replace")


async def _multipart_fields(request: web.Request) -> list[tuple[str, str]]:
    """The first MAX_FORM_FIELDS named parts of a multipart/form-data body; file parts count as text."""
    fields: list[tuple[str, str]] = []
    dropped = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise UnreadableBody("Unreadable multipart body: a part is itself multipart")
            data = await part.read(decode=True)
            if request.content.total_bytes > MAX_BODY:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content.total_bytes)
            if part.name is None:
                continue  # PHP skips a part without a name
            if len(fields) >= MAX_FORM_FIELDS:
                dropped += 1
                continue
            # A part's own charset, else the body's, else UTF-8; undecodable bytes become U+FFFD.
            charset = part.get_charset(default=request.charset or "utf-8")
            fields.append((part.name, bytes(data).decode(charset, "replace")))
    except (UnreadableBody, web.HTTPException):
        raise
    except Exception as exc:
        # Whatever aiohttp's parser raises on these bytes (no boundary or a wrong one, a truncated
        # part, a malformed part header, an unknown charset or transfer encoding) is about the
        # client's body, not a fault of Herald's.
        raise UnreadableBody(f"Unreadable multipart body: {_printable(str(exc))}") from exc
    _note_dropped(dropped)
    return fields


def _note_dropped(dropped: int) -> None:
    if dropped > 0:
        log.warning("form fields dropped", kept=MAX_FORM_FIELDS, dropped=dropped)
