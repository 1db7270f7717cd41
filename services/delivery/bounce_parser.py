"""Reading what comes back to the bounce receiver: RFC 3464 DSNs, plain-text bounces, ARF abuse reports (RFC 5965).

Pure and synchronous: a raw message in, what it reports out (`read_report`). The MIME parsing is the
standard library's `email` package, which copes with the malformed structure real bounces have; this
module only knows where each format keeps its fields. It parses with the compat32 policy: policy.default
builds a structured header object on every access (the parser itself reads each part's Content-Type a
dozen times), 1.5 ms of parsing per DSN against 0.1 ms. The few headers read here are unfolded, and
decoded (RFC 2047) where text matters. A multipart message is cut at its boundary here and its parts are
parsed one by one (`parse_message`): the parser compiles a regular expression for every boundary it
meets, and as every report has a boundary of its own, that was half the cost of parsing one.

Whom a report is about is never read from a DSN's or a plain-text bounce's body: the bounce receiver
knows it from the verified return path the report was sent to. An ARF report goes to a feedback
address instead, and names its recipient by the original message it includes: the X-Herald-Token
and Return-Path headers of that original (and the report's Original-Mail-From) are handed back as
candidates, which the receiver verifies like a return path.

What a report says about the delivery is raw: the enhanced status code (RFC 3463), the SMTP reply
code and the diagnostic text, for the one classifier in the delivery service to judge. A DSN's
'delayed' action is no bounce (the reporting server is still trying; a 'failed' DSN follows if it
gives up), nor are 'delivered', 'relayed' and 'expanded'.
"""

from __future__ import annotations

import base64
import binascii
import enum
import quopri
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser, Parser
from email.utils import getaddresses, parsedate_to_datetime
from itertools import pairwise

# How much of a report's human-readable text is searched for the SMTP reply, and the longest
# diagnostic handed on (a remote server's reply; RFC 5321 lines are at most 512 octets).
MAX_TEXT_CHARS = 64 * 1024
MAX_DIAGNOSTIC_CHARS = 1000
# Nested MIME parts followed at most this deep (a report is two levels; hostile mail may be thousands).
MAX_DEPTH = 8
# Feedback types (RFC 5965 §7.3) that are a recipient's complaint about the message. 'not-spam',
# 'auth-failure' (RFC 6591) and 'other' are not.
COMPLAINT_FEEDBACK_TYPES = frozenset({"abuse", "fraud", "virus"})
# A DSN recipient block with one of these actions is a bounce; 'delayed' and the successes are not.
FAILED_ACTIONS = frozenset({"failed"})
# An occurrence date outside this window of the reception is not believed (a wrong clock, a forgery).
MAX_PAST = timedelta(days=400)
MAX_FUTURE = timedelta(days=1)

_PARSER = Parser(policy=policy.compat32)
_HEADERS = HeaderParser(policy=policy.compat32)

_ENHANCED = r"[245]\.[0-7]\d{0,2}\.\d{1,3}"
# A reply code followed by an enhanced code of the same class: "550 5.1.1", "550-5.1.1", "#550 5.1.1".
_REPLY_AND_STATUS = re.compile(rf"(?<![\w.])([245]\d\d)[ -]+#?({_ENHANCED})(?![\w]|\.\d)")
# An enhanced code alone, where reports put one: at a line's start, after '#' or after "Status:".
_STATUS_ALONE = re.compile(rf"(?im)(?:^[ \t>]*#?|#|status:[ \t]*)({_ENHANCED})(?![\w]|\.\d)")
# A reply code alone: at a line's start (a quoted transcript) or after "said:", "error:", "reply:".
_REPLY_ALONE = re.compile(
    r"(?im)(?:^[ \t>]*#?|(?:said|error|reply|response)[^\n:]{0,40}:[ \t]*)([45]\d\d)(?:[ -]+|$)(?=\S|$)"
)
_STATUS_IN_FIELD = re.compile(rf"(?<![\d.])({_ENHANCED})(?![\d]|\.\d)")
_LEADING_REPLY = re.compile(r"^\s*#?([245]\d\d)(?![\d.])")
# Where a bounce's text stops and its copy of the original message starts.
_ORIGINAL_FOLLOWS = re.compile(
    r"(?im)^[ \t]*-{2,}.*?\b(copy of (the|your) message|original message|original headers|below this line"
    r"|message headers follow|headers of the original)"
)
_BOUNCE_SENDERS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon"})
_BOUNCE_SUBJECT = re.compile(
    r"(?i)undeliver|delivery (status|failure|failed|notification|problem|has failed)|returned mail"
    r"|failure notice|mail delivery failed|could not be delivered|non-?delivery|unable to deliver|bounced"
)
_BOUNCE_TEXT = re.compile(
    r"(?i)this is the qmail-send program|wasn't able to deliver|could not be delivered to one or more"
    r"|delivery to the following recipients? (has )?failed|permanent error|address(es)? failed"
    r"|message could not be delivered|undeliverable"
)
_TAGS = re.compile(r"<[^>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ReportSource(enum.Enum):
    """Which kind of report it was (BounceSource in the delivery contract)."""

    DSN = "dsn"
    PLAIN_TEXT = "plain_text"
    ARF = "arf"


@dataclass(frozen=True)
class Notice:
    """What one report says happened to the message: raw, for the classifier."""

    source: ReportSource
    status_code: str = ""
    reply_code: int = 0
    diagnostic: str = ""
    complaint: bool = False
    occurred_at: datetime | None = None
    # A DSN's Final-Recipient, for the logs only: the recipient is the one the return path names.
    final_recipient: str = ""


@dataclass(frozen=True)
class Reading:
    """A report read: the notice, or why there is none (an auto-reply, a 'delayed' DSN, ...)."""

    notice: Notice | None
    message_id: str = ""
    why_nothing: str = ""
    # ARF only: the included original's X-Herald-Token values and return-path addresses (its Return-Path
    # header and the report's Original-Mail-From), unverified.
    original_tokens: tuple[str, ...] = ()
    original_return_paths: tuple[str, ...] = ()


def read_report(raw: bytes, *, received_at: datetime | None = None) -> Reading:
    """What a message received at a return path or the feedback address reports."""
    message = parse_message(raw)
    received_at = received_at or datetime.now(UTC)
    message_id = clean(_header(message, "Message-ID"), 250)
    report_type = _content_type(message)
    if report_type == "multipart/report":
        kind = str(message.get_param("report-type") or "").lower()
        if kind == "delivery-status":
            return _read_dsn(message, message_id, received_at)
        if kind == "feedback-report":
            return _read_arf(message, message_id, received_at)
    # A report without its report-type, or wrapped in another multipart, is recognised by its part.
    for part in _parts(message):
        content_type = _content_type(part)
        if content_type == "message/delivery-status":
            return _read_dsn(message, message_id, received_at)
        if content_type == "message/feedback-report":
            return _read_arf(message, message_id, received_at)
    return _read_plain_text(message, message_id, received_at)


# --- RFC 3464 delivery status notifications ---------------------------------------------------------------


def _read_dsn(message: Message, message_id: str, received_at: datetime) -> Reading:
    status_part = next((p for p in _parts(message) if _content_type(p) == "message/delivery-status"), None)
    blocks = _field_blocks(status_part) if status_part is not None else []
    per_message = blocks[0] if blocks else None
    recipients = [block for block in blocks if _is_recipient_block(block)]
    if not recipients:
        # A report type without its status part: read as a plain-text bounce.
        return _read_plain_text(message, message_id, received_at)
    block = next((b for b in recipients if _gave_up(b)), None)
    if block is None:
        actions = sorted({_action(b) or "none" for b in recipients})
        return Reading(None, message_id, f"DSN action {', '.join(actions)}: not a bounce")
    status = _status_of(_field(block, "Status"))
    diagnostic = _diagnostic_text(_field(block, "Diagnostic-Code"))
    quoted = find_smtp_reply(diagnostic)
    reply_code = _reply_code_of(diagnostic) or (quoted.reply_code if quoted is not None else 0)
    quoted_status = _status_of(diagnostic)
    # A generic X.0.0 Status with a specific code of the same class in the remote reply: the specific one.
    if quoted_status and (not status or (_generic(status) and quoted_status[0] == status[0])):
        status = quoted_status
    if not diagnostic:
        # No Diagnostic-Code: the human-readable part may say what happened on the recipient's own line
        # ("<address>: 550 5.1.1 ...", as OpenSMTPD writes it), and quote the reply there or anywhere.
        text = _human_text(message)
        line = _recipient_line(text, _address_of_field(_field(block, "Final-Recipient")))
        if not status or _generic(status):
            found = find_smtp_reply(line) if line else find_smtp_reply(text)
            found_class = (found.status_code or str(found.reply_code or ""))[:1] if found is not None else ""
            if found is not None and found_class and (not status or found_class == status[0]):
                status, reply_code = found.status_code or status, found.reply_code
                diagnostic = found.diagnostic
        diagnostic = diagnostic or line
    if not status and not reply_code:
        found = find_smtp_reply(_human_text(message))
        if found is not None:
            status, reply_code = found.status_code, found.reply_code
            diagnostic = diagnostic or found.diagnostic
    occurred = (
        _date(_field(block, "Last-Attempt-Date"), received_at)
        or (_date(_field(per_message, "Arrival-Date"), received_at) if per_message is not None else None)
        or _date(_header(message, "Date"), received_at)
    )
    notice = Notice(
        ReportSource.DSN,
        status_code=status,
        reply_code=reply_code,
        diagnostic=clean(diagnostic or _excerpt(message), MAX_DIAGNOSTIC_CHARS),
        occurred_at=occurred,
        final_recipient=clean(_address_of_field(_field(block, "Final-Recipient")), 250),
    )
    return Reading(notice, message_id)


def _gave_up(block: Message) -> bool:
    """A recipient block that reports a failure: Action failed, or a 'delayed' one whose Status says the
    delivery time expired (X.4.7): OpenSMTPD 6.8 reports the end of its queue lifetime that way, and
    drops the message."""
    action = _action(block)
    if action in FAILED_ACTIONS:
        return True
    status = _status_of(_field(block, "Status"))
    return action == "delayed" and status[:1] in ("4", "5") and status[1:] == ".4.7"


def _generic(status: str) -> bool:
    """A Status that names only the class (X.0.0): the remote reply, when known, says more."""
    return status.endswith(".0.0")


def _recipient_line(text: str, address: str) -> str:
    """What the report's text says on the line that starts with `address` ("<address>: <reply>"), or ""."""
    if not address:
        return ""
    line = re.search(rf"(?im)^[ \t]*<?{re.escape(address)}>?:[ \t]*(\S.*)$", text)
    return line.group(1).strip() if line is not None else ""


def _is_recipient_block(block: Message) -> bool:
    return any(_field(block, name) for name in ("Final-Recipient", "Original-Recipient", "Action", "Status"))


def _action(block: Message) -> str:
    words = _field(block, "Action").lower().split()
    if words:
        return words[0]
    # Action is required; without it the status class says what happened.
    status = _status_of(_field(block, "Status"))
    return "failed" if status[:1] in ("4", "5") else "delivered" if status[:1] == "2" else ""


def _diagnostic_text(value: str) -> str:
    """A Diagnostic-Code without its type: "smtp; 550 5.1.1 ..." is "550 5.1.1 ..."."""
    kind, semicolon, text = value.partition(";")
    if semicolon and " " not in kind.strip():
        return text.strip()
    return value.strip()


def _address_of_field(value: str) -> str:
    """An address-type field ("rfc822; ada@example.com") without its type."""
    return _diagnostic_text(value)


def _field_blocks(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status or message/feedback-report part.

    The standard library parses a delivery-status part into one Message per block, and any other
    message/* part into one sub-message whose headers are the fields. A part sent with a transfer
    encoding (base64) is not parsed that way: it is decoded and read here."""
    payload = part.get_payload()
    blocks = [block for block in payload if isinstance(block, Message)] if isinstance(payload, list) else []
    if any(_is_recipient_block(block) or _field(block, "Feedback-Type") for block in blocks):
        return blocks
    text = _transfer_decoded(part)
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text)
    return [_HEADERS.parsestr(chunk.strip() + "\n") for chunk in chunks if chunk.strip()]


def _transfer_decoded(part: Message) -> str:
    """The text of a message/* part as it was sent, undoing a base64 or quoted-printable transfer encoding."""
    payload = part.get_payload()
    if isinstance(payload, list):
        text = "\n".join(_block_text(block) for block in payload if isinstance(block, Message))
    else:
        text = payload if isinstance(payload, str) else ""
    encoding = _header(part, "Content-Transfer-Encoding").lower()
    try:
        if encoding == "base64":
            compact = "".join(text.split())
            return base64.b64decode(compact + "=" * (-len(compact) % 4)).decode("utf-8", errors="replace")
        if encoding == "quoted-printable":
            return quopri.decodestring(text.encode("ascii", errors="replace")).decode("utf-8", errors="replace")
    except (ValueError, binascii.Error):
        return ""
    return text


def _block_text(block: Message) -> str:
    body = block.get_payload()
    return "".join(f"{key}: {value}\n" for key, value in block.raw_items()) + (
        body if isinstance(body, str) else ""
    )


# --- ARF abuse reports (RFC 5965) ------------------------------------------------------------------------


def _read_arf(message: Message, message_id: str, received_at: datetime) -> Reading:
    feedback_part = next((p for p in _parts(message) if _content_type(p) == "message/feedback-report"), None)
    blocks = _field_blocks(feedback_part) if feedback_part is not None else []
    fields = next((block for block in blocks if _field(block, "Feedback-Type")), None)
    feedback_type = _field(fields, "Feedback-Type").lower().split(";")[0].strip() if fields is not None else ""
    original = _included_original(message)
    tokens = tuple(_all_headers(original, "X-Herald-Token")) if original is not None else ()
    return_paths = (
        *(_addresses(_all_headers(original, "Return-Path")) if original is not None else ()),
        *(_addresses([_field(fields, "Original-Mail-From")]) if fields is not None else ()),
    )
    if feedback_type not in COMPLAINT_FEEDBACK_TYPES:
        return Reading(None, message_id, f"feedback type {feedback_type or 'missing'}: not a complaint")
    agent = _field(fields, "User-Agent") or _field(fields, "Reporting-MTA")
    notice = Notice(
        ReportSource.ARF,
        diagnostic=clean(f"{feedback_type} report" + (f" by {agent}" if agent else ""), MAX_DIAGNOSTIC_CHARS),
        complaint=True,
        occurred_at=_date(_field(fields, "Arrival-Date") or _field(fields, "Received-Date"), received_at)
        or _date(_header(message, "Date"), received_at),
    )
    return Reading(
        notice,
        message_id,
        original_tokens=tuple(clean(token, 100) for token in tokens if token.strip()),
        original_return_paths=tuple(clean(address, 250) for address in return_paths if address),
    )


def _included_original(message: Message) -> Message | None:
    """The original message (or its headers) a report includes, as a Message of its headers at least."""
    for part in _parts(message):
        content_type = _content_type(part)
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            return _HEADERS.parsestr(_decoded_text(part))
    return None


def _addresses(values: Sequence[str]) -> list[str]:
    return [address for _, address in getaddresses([value for value in values if value]) if "@" in address]


# --- plain-text bounces ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpReply:
    """An SMTP reply a bounce quotes."""

    reply_code: int
    status_code: str
    diagnostic: str


def find_smtp_reply(text: str) -> SmtpReply | None:
    """The first SMTP reply quoted in a bounce's text: reply code, enhanced code and the reply's text."""
    text = text[:MAX_TEXT_CHARS]
    both = _REPLY_AND_STATUS.search(text)
    if both is not None and both.group(1)[0] == both.group(2)[0]:
        return SmtpReply(int(both.group(1)), both.group(2), _reply_lines(text, both.start(1)))
    reply = _REPLY_ALONE.search(text)
    status = _STATUS_ALONE.search(text)
    if reply is None and status is None:
        return None
    starts = [match.start(1) for match in (reply, status) if match is not None]
    return SmtpReply(
        int(reply.group(1)) if reply is not None else 0,
        status.group(1) if status is not None else "",
        _reply_lines(text, min(starts)),
    )


def _reply_lines(text: str, start: int) -> str:
    """The reply from `start`: its line, and the lines of a multiline reply ("550-5.1.1 ...") after it,
    with the repeated codes dropped."""
    lines = text[start:].splitlines()
    first = lines[0].strip() if lines else ""
    code = first[:3]
    reply = [first.lstrip("#")]
    for line in lines[1:]:
        stripped = line.strip()
        if not (code.isdigit() and stripped.startswith(code) and stripped[3:4] in ("-", " ")):
            break
        rest = stripped[4:].lstrip()
        rest = re.sub(rf"^{_ENHANCED}\s*", "", rest)
        reply.append(rest)
        if len(" ".join(reply)) > MAX_DIAGNOSTIC_CHARS:
            break
    joined = " ".join(part for part in reply if part)
    # "550-5.1.1 text" reads "550 5.1.1 text".
    return re.sub(r"^(\d{3})-", r"\1 ", joined)


def _read_plain_text(message: Message, message_id: str, received_at: datetime) -> Reading:
    text = _human_text(message)
    if not _looks_like_bounce(message, text):
        return Reading(None, message_id, "no bounce found (an auto-reply or other mail)")
    reply = find_smtp_reply(text)
    occurred = _date(_header(message, "Date"), received_at)
    if reply is None:
        notice = Notice(ReportSource.PLAIN_TEXT, diagnostic=_excerpt(message), occurred_at=occurred)
    else:
        notice = Notice(
            ReportSource.PLAIN_TEXT,
            status_code=reply.status_code,
            reply_code=reply.reply_code,
            diagnostic=clean(reply.diagnostic, MAX_DIAGNOSTIC_CHARS),
            occurred_at=occurred,
        )
    return Reading(notice, message_id)


def _looks_like_bounce(message: Message, text: str) -> bool:
    """A bounce by its sender, subject, headers or wording; an auto-reply quoting a number is not one."""
    if _header(message, "X-Failed-Recipients") or _content_type(message) == "multipart/report":
        return True
    senders = _addresses([_header(message, "From")])
    if any(address.rpartition("@")[0].lower() in _BOUNCE_SENDERS for address in senders):
        return True
    if _BOUNCE_SUBJECT.search(_decoded(_header(message, "Subject"))):
        return True
    return _BOUNCE_TEXT.search(text[:4096]) is not None


def _excerpt(message: Message) -> str:
    """The start of a report's human-readable text, for a diagnostic when it quotes no reply."""
    return clean(_human_text(message), 500)


# --- MIME helpers ------------------------------------------------------------------------------------------


def parse_message(raw: bytes) -> Message:
    """The message as the standard library's parser reads it (compat32), a multipart one part by part.

    The parser compiles a regular expression for each multipart boundary it meets. Every report has a
    boundary of its own, so Python's cache of compiled patterns never helps, and the compilation was half
    the time of parsing a 3 KB DSN (0.15 of 0.3 ms). Here the message's headers are read first; a multipart
    message is cut at its delimiter lines (RFC 2046: `--boundary`, optional `--` closing it, spaces or
    tabs, the line's end) and each part is handed to the parser alone, which makes the same parts as the
    whole parse: the line ending before a delimiter belongs to the delimiter, text before the first one
    is the preamble and text after the closing one the epilogue. A message cut differently by the
    parser, or whose cutting is not plain (a lone CR ending a line, no closing delimiter, no part,
    multipart/digest whose parts default to message/rfc822), is parsed whole.
    """
    text = raw.decode("ascii", errors="surrogateescape")  # as BytesParser does
    try:
        message = _parsed_by_parts(text)
    except (ValueError, TypeError, IndexError, LookupError, AttributeError):
        message = None
    return message if message is not None else _PARSER.parsestr(text)


def _parsed_by_parts(text: str) -> Message | None:
    message = _HEADERS.parsestr(text)
    content_type = _content_type(message)
    if not content_type.startswith("multipart/") or content_type == "multipart/digest":
        return None
    boundary = message.get_boundary()
    body = message.get_payload()
    if not boundary or not isinstance(body, str) or body.count("\r") != body.count("\r\n"):
        return None
    delimiter = "--" + boundary
    lines: list[tuple[int, int]] = []  # where each delimiter line starts and ends, the last one closing
    position = 0
    while True:
        start = body.find(delimiter, position)
        if start < 0:
            return None  # never closed
        position = start + len(delimiter)
        if start and body[start - 1] != "\n":
            continue
        newline = body.find("\n", position)
        end = len(body) if newline < 0 else newline + 1
        rest = body[position:end].rstrip("\r\n")
        closing = rest.startswith("--")
        if (rest[2:] if closing else rest).strip(" \t"):
            continue  # a line that only starts like a delimiter
        lines.append((start, end))
        if closing:
            break
    # The parser reads delimiter lines that follow each other as one, and makes no part between them.
    if len(lines) < 2 or any(end == next_start for (_, end), (next_start, _) in pairwise(lines)):
        return None
    parts: list[Message | str] = []
    for (_, part_start), (next_delimiter, _) in pairwise(lines):
        part = _PARSER.parsestr(body[part_start:next_delimiter])
        # The line ending before the delimiter is the delimiter's: the parser takes it off the message it
        # made last (the part, or the last one inside it), from the epilogue of a multipart.
        last = _last_made(part)
        if _content_type(last).startswith("multipart/"):
            if last.epilogue == "":
                last.epilogue = None
            elif last.epilogue is not None:
                last.epilogue = _without_line_end(last.epilogue)
        elif isinstance(payload := last.get_payload(), str):
            last.set_payload(_without_line_end(payload))
        parts.append(part)
    message.set_payload(parts)
    preamble = body[: lines[0][0]]
    message.preamble = _without_line_end(preamble) if preamble else None
    message.epilogue = body[lines[-1][1] :]
    return message


def _last_made(message: Message) -> Message:
    """The message the parser made last while parsing `message`: a multipart is its own (the parser comes
    back to it after each of its parts), a message/* part its last inner message's, any other itself."""
    while not _content_type(message).startswith("multipart/"):
        payload = message.get_payload()
        if not isinstance(payload, list) or not payload or not isinstance(payload[-1], Message):
            break
        message = payload[-1]
    return message


def _without_line_end(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith(("\n", "\r")) else text


def _parts(message: Message, depth: int = 0) -> Iterator[Message]:
    """The message and its parts, depth first, without descending into attached messages (the original)."""
    yield message
    if depth >= MAX_DEPTH or not message.is_multipart() or _content_type(message).startswith("message/"):
        return
    payload = message.get_payload()
    if isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from _parts(part, depth + 1)


def _human_text(message: Message) -> str:
    """The report's own text parts, decoded, up to where a copy of the original message starts."""
    texts: list[str] = []
    size = 0
    for part in _parts(message):
        content_type = _content_type(part)
        if part.is_multipart() or content_type not in ("text/plain", "text/html"):
            continue
        if part.get_content_disposition() == "attachment":
            continue
        text = _decoded_text(part)
        if content_type == "text/html":
            text = _TAGS.sub(" ", text).replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">")
        texts.append(text)
        size += len(text)
        if size >= MAX_TEXT_CHARS:
            break
    joined = "\n".join(texts)[:MAX_TEXT_CHARS]
    cut = _ORIGINAL_FOLLOWS.search(joined)
    return joined[: cut.start()] if cut is not None else joined


def _decoded_text(part: Message) -> str:
    """A leaf part's text, whatever its transfer encoding and charset claim (undecodable bytes replaced)."""
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, AssertionError):
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except (ValueError, TypeError, IndexError, LookupError, AttributeError):
        return "text/plain"


def _header(message: Message | None, name: str) -> str:
    """A header's decoded value ("" when absent); the raw value when the decoder trips over it."""
    if message is None:
        return ""
    try:
        value = message.get(name)
        return "" if value is None else " ".join(str(value).split())
    except (ValueError, TypeError, IndexError, LookupError, AttributeError):
        wanted = name.lower()
        raw = next((str(v) for key, v in message.raw_items() if key.lower() == wanted), "")
        return " ".join(raw.split())


_field = _header


def _decoded(value: str) -> str:
    """A header's text with its RFC 2047 encoded words decoded ("=?utf-8?q?Unzustellbar?=" reads "Unzustellbar")."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, TypeError):
        return value


def _all_headers(message: Message, name: str) -> list[str]:
    try:
        return [" ".join(str(value).split()) for value in message.get_all(name) or ()]
    except (ValueError, TypeError, IndexError, LookupError, AttributeError):
        wanted = name.lower()
        return [" ".join(str(v).split()) for key, v in message.raw_items() if key.lower() == wanted]


def _status_of(value: str) -> str:
    match = _STATUS_IN_FIELD.search(value)
    return match.group(1) if match is not None else ""


def _reply_code_of(diagnostic: str) -> int:
    match = _LEADING_REPLY.match(diagnostic)
    return int(match.group(1)) if match is not None else 0


def _date(value: str, received_at: datetime) -> datetime | None:
    """A report's date, when it is one and plausible (not in the future, not from long before)."""
    if not value:
        return None
    try:
        instant = parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    if not received_at - MAX_PAST <= instant <= received_at + MAX_FUTURE:
        return None
    return instant.astimezone(UTC)


def clean(text: str, limit: int) -> str:
    """Text fit for a protobuf string and a PostgreSQL text column: valid UTF-8 (undecodable bytes
    replaced), no NUL or other control characters, whitespace collapsed, at most `limit` characters."""
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
