"""The bounce receiver's reading of reports, on messages built here with the standard library: RFC 3464 DSNs,
plain-text bounces quoting the SMTP reply, ARF abuse reports, and what must read as nothing (auto-replies,
'delayed' DSNs, garbage)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser

from hypothesis import given, settings
from hypothesis import strategies as st

from services.delivery import bounce_parser
from services.delivery.bounce_parser import (
    MAX_DIAGNOSTIC_CHARS,
    ReportSource,
    clean,
    find_smtp_reply,
    parse_message,
    read_report,
)

RETURN_PATH = "b-aebqcaydaqdqkbq5fvsltxgwjvl6aoca@bounces.herald.test"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def original(token: str = "aebqcaydaqdqkbq5fvsltxgwjvl6aoca") -> EmailMessage:
    message = EmailMessage()
    message["Return-Path"] = f"<b-{token}@bounces.herald.test>"
    message["From"] = "Ada's Shop <news@shop.example>"
    message["To"] = "reader@example.org"
    message["Subject"] = "Spring sale"
    message["Message-ID"] = "<7.21.abc@shop.example>"
    message["X-Herald-Token"] = token
    message.set_content("Our spring sale is on: 550 5.1.1 is not a reply here.")
    return message


def block(**fields: str) -> Message:
    fields_block = Message()
    for name, value in fields.items():
        fields_block[name.replace("_", "-")] = value
    return fields_block


def dsn(
    *recipients: Message,
    human: str = "Your message could not be delivered.",
    headers_only: bool = True,
    message_id: str = "<dsn-1@mx.example.org>",
) -> bytes:
    """A DSN as Postfix sends one: human text, message/delivery-status, and the original (or its headers)."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.org (Mail Delivery System)"
    report["To"] = RETURN_PATH
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = message_id
    report["Date"] = "Sun, 06 Dec 2026 11:58:00 +0000"
    report.attach(MIMEText(human))
    status = MIMEBase("message", "delivery-status")
    status.set_payload(
        [block(Reporting_MTA="dns; mx.example.org", Arrival_Date="Sun, 06 Dec 2026 11:57:00 +0000")]
    )
    for recipient in recipients:
        payload = status.get_payload()
        assert isinstance(payload, list)
        payload.append(recipient)
    report.attach(status)
    if headers_only:
        head = "".join(f"{name}: {value}\n" for name, value in original().items())
        report.attach(MIMEText(head, "rfc822-headers"))
    else:
        report.attach(MIMEMessage(original()))
    return report.as_bytes()


def failed(
    status: str = "5.1.1", diagnostic: str = "smtp; 550 5.1.1 <reader@example.org>: User unknown"
) -> Message:
    fields = {"Final_Recipient": "rfc822; reader@example.org", "Action": "failed"}
    if status:
        fields["Status"] = status
    if diagnostic:
        fields["Diagnostic_Code"] = diagnostic
    return block(**fields)


# --- DSNs ---------------------------------------------------------------------------------------------------


def test_a_dsn_gives_its_status_reply_code_and_diagnostic_without_the_smtp_type() -> None:
    reading = read_report(dsn(failed()), received_at=NOW)
    notice = reading.notice
    assert notice is not None and notice.source is ReportSource.DSN
    assert (notice.status_code, notice.reply_code) == ("5.1.1", 550)
    assert notice.diagnostic == "550 5.1.1 <reader@example.org>: User unknown"
    assert notice.final_recipient == "reader@example.org"
    assert notice.complaint is False
    assert notice.occurred_at == datetime(2026, 12, 6, 11, 57, tzinfo=UTC)  # the Arrival-Date
    assert reading.message_id == "<dsn-1@mx.example.org>"


def test_a_dsn_with_the_whole_original_attached_reads_the_same() -> None:
    notice = read_report(dsn(failed(), headers_only=False), received_at=NOW).notice
    assert notice is not None and (notice.status_code, notice.reply_code) == ("5.1.1", 550)


def test_a_folded_multiline_diagnostic_is_one_line() -> None:
    diagnostic = (
        "smtp; 552-5.2.2 The email account that you tried to reach is over quota.\n"
        "    552 5.2.2 Please direct the recipient to https://support.example/quota"
    )
    notice = read_report(dsn(failed("5.2.2", diagnostic)), received_at=NOW).notice
    assert notice is not None and notice.reply_code == 552 and notice.status_code == "5.2.2"
    assert "\n" not in notice.diagnostic and notice.diagnostic.startswith("552-5.2.2 The email account")


def test_a_generic_status_gives_way_to_the_specific_code_of_the_remote_reply() -> None:
    notice = read_report(dsn(failed("5.0.0", "smtp; 550 5.1.1 no such mailbox")), received_at=NOW).notice
    assert notice is not None and notice.status_code == "5.1.1"
    notice = read_report(dsn(failed("5.0.0", "smtp; 550 4.2.2 odd")), received_at=NOW).notice
    assert notice is not None and notice.status_code == "5.0.0"  # another class: the Status stands


def test_without_status_the_code_comes_from_the_diagnostic_and_then_from_the_human_text() -> None:
    notice = read_report(dsn(failed("", "smtp; 550 5.7.1 blocked by policy")), received_at=NOW).notice
    assert notice is not None and (notice.status_code, notice.reply_code) == ("5.7.1", 550)
    human = "The mail system\n\n<reader@example.org>: host mx said: 554 5.7.1 Rejected by a blocklist\n"
    notice = read_report(dsn(failed("", ""), human=human), received_at=NOW).notice
    assert notice is not None and (notice.status_code, notice.reply_code) == ("5.7.1", 554)
    assert notice.diagnostic == "554 5.7.1 Rejected by a blocklist"


def test_a_generic_status_without_diagnostic_takes_the_reply_quoted_on_the_recipients_line() -> None:
    # OpenSMTPD 6.8 (tests/bounce_corpus/opensmtpd/): Status 5.0.0, no Diagnostic-Code, the reply in the text.
    human = (
        "    An error has occurred while attempting to deliver a message for\n"
        "    the following list of recipients:\n\n"
        "other@example.org: 552 5.2.2 <other@example.org>: mailbox full\n"
        "reader@example.org: 550 5.1.1 <reader@example.org>: no mailbox by that name is known here\n"
    )
    notice = read_report(dsn(failed("5.0.0", ""), human=human), received_at=NOW).notice
    assert notice is not None and (notice.status_code, notice.reply_code) == ("5.1.1", 550)
    assert notice.diagnostic == "550 5.1.1 <reader@example.org>: no mailbox by that name is known here"
    human = "reader@example.org: 550 No such user here\n"
    notice = read_report(dsn(failed("5.0.0", ""), human=human), received_at=NOW).notice
    assert notice is not None and (notice.status_code, notice.reply_code) == ("5.0.0", 550)
    assert notice.diagnostic == "550 No such user here"


def test_a_quoted_reply_of_another_class_than_the_status_is_kept_as_text_only() -> None:
    human = "reader@example.org: 451 4.7.1 try again later\n"
    notice = read_report(dsn(failed("5.0.0", ""), human=human), received_at=NOW).notice
    assert notice is not None and (notice.status_code, notice.reply_code) == ("5.0.0", 0)
    assert notice.diagnostic == "451 4.7.1 try again later"


def test_a_delayed_block_whose_delivery_time_expired_is_a_failure() -> None:
    # OpenSMTPD 6.8 reports the end of its queue lifetime as Action delayed, Status 4.4.7, and drops the message.
    expired = block(Final_Recipient="rfc822; reader@example.org", Action="delayed", Status="4.4.7")
    notice = read_report(dsn(expired, human="reader@example.org: Envelope expired\n"), received_at=NOW).notice
    assert notice is not None and (notice.status_code, notice.reply_code) == ("4.4.7", 0)
    assert notice.diagnostic == "Envelope expired"
    warning = block(Final_Recipient="rfc822; reader@example.org", Action="delayed", Status="4.0.0")
    assert read_report(dsn(warning, human="reader@example.org: 452 4.2.2 mailbox full\n")).notice is None


def test_a_non_smtp_diagnostic_type_is_stripped_and_a_reply_it_quotes_is_read() -> None:
    notice = read_report(dsn(failed("5.1.1", 'X-Postfix; unknown user: "reader"')), received_at=NOW).notice
    assert notice is not None and notice.reply_code == 0 and notice.diagnostic == 'unknown user: "reader"'
    diagnostic = "X-Postfix; host mx.example.org[192.0.2.1] said: 550 5.1.1 <reader@example.org>: no such user"
    notice = read_report(dsn(failed("5.0.0", diagnostic)), received_at=NOW).notice
    assert notice is not None and (notice.reply_code, notice.status_code) == (550, "5.1.1")


def test_delayed_delivered_and_relayed_dsns_are_no_bounces() -> None:
    for action in ("delayed", "delivered", "relayed", "expanded"):
        reading = read_report(dsn(block(Final_Recipient="rfc822; r@example.org", Action=action, Status="4.4.1")))
        assert reading.notice is None and action in reading.why_nothing


def test_the_failed_recipient_block_is_the_one_read_when_a_dsn_has_several() -> None:
    delayed = block(Final_Recipient="rfc822; other@example.org", Action="delayed", Status="4.4.1")
    notice = read_report(dsn(delayed, failed("5.2.1", "smtp; 550 5.2.1 disabled")), received_at=NOW).notice
    assert notice is not None and notice.status_code == "5.2.1"


def test_a_missing_action_is_judged_by_the_status_class() -> None:
    notice = read_report(dsn(block(Final_Recipient="rfc822; r@example.org", Status="5.1.2"))).notice
    assert notice is not None and notice.status_code == "5.1.2"
    assert read_report(dsn(block(Final_Recipient="rfc822; r@example.org", Status="2.0.0"))).notice is None


def test_a_base64_encoded_status_part_is_decoded() -> None:
    fields = "Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; r@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    encoded = base64.encodebytes(fields.encode()).decode().replace("\n", "\r\n")
    raw = (
        "Content-Type: multipart/report; report-type=delivery-status; boundary=XX\r\n\r\n"
        "--XX\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        f"--XX\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        "--XX--\r\n"
    ).encode()
    notice = read_report(raw).notice
    assert notice is not None and notice.source is ReportSource.DSN and notice.status_code == "5.1.1"


def test_a_status_part_without_the_report_type_is_still_a_dsn() -> None:
    raw = dsn(failed()).replace(b"report-type=delivery-status", b"report-type=unknown")
    notice = read_report(raw).notice
    assert notice is not None and notice.source is ReportSource.DSN


def test_an_implausible_date_is_not_believed() -> None:
    recipient = failed()
    recipient["Last-Attempt-Date"] = "Mon, 01 Jan 1990 00:00:00 +0000"
    raw = dsn(recipient).replace(b"Arrival-Date: Sun, 06 Dec 2026", b"Arrival-Date: Sun, 06 Dec 2099")
    notice = read_report(raw.replace(b"Date: Sun, 06 Dec 2026 11:58", b"Date: nonsense"), received_at=NOW).notice
    assert notice is not None and notice.occurred_at is None


# --- plain-text bounces --------------------------------------------------------------------------------------


def plain_bounce(
    body: str, *, sender: str = "MAILER-DAEMON@mail.example.net", subject: str = "failure notice"
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = RETURN_PATH
    message["Subject"] = subject
    message["Message-ID"] = "<plain-1@mail.example.net>"
    message.set_content(body)
    return message.as_bytes()


QMAIL = """Hi. This is the qmail-send program at mail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<reader@example.org>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 <reader@example.org>... User unknown
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

Return-Path: <b-token@bounces.herald.test>
Subject: 452 4.2.2 is in the copy, not the reply
"""

EXIM = """This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  reader@example.org
    host mx.example.org [192.0.2.10]
    SMTP error from remote mail server after RCPT TO:<reader@example.org>:
    550-5.1.1 The email account that you tried to reach does not exist. Please try
    550-5.1.1 double-checking the recipient's email address for typos or
    550 5.1.1 unnecessary spaces.

------ This is a copy of the message, including all the headers. ------
"""


def test_a_qmail_bounce_gives_the_quoted_reply_and_not_the_copy_of_the_message() -> None:
    reading = read_report(plain_bounce(QMAIL))
    notice = reading.notice
    assert notice is not None and notice.source is ReportSource.PLAIN_TEXT
    assert (notice.reply_code, notice.status_code) == (550, "5.1.1")
    assert notice.diagnostic == "550 5.1.1 <reader@example.org>... User unknown"
    assert reading.message_id == "<plain-1@mail.example.net>"


def test_an_exim_multiline_reply_is_joined_without_its_repeated_codes() -> None:
    notice = read_report(plain_bounce(EXIM, sender="Mail Delivery System <Mailer-Daemon@mx.example.net>")).notice
    assert notice is not None and (notice.reply_code, notice.status_code) == (550, "5.1.1")
    assert notice.diagnostic == (
        "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking "
        "the recipient's email address for typos or unnecessary spaces."
    )


def test_a_reply_code_without_an_enhanced_code_and_an_exchange_style_code() -> None:
    body = "Delivery has failed.\nRemote host said: 550 Requested action not taken: mailbox unavailable\n"
    notice = read_report(plain_bounce(body)).notice
    assert notice is not None and (notice.reply_code, notice.status_code) == (550, "")
    assert notice.diagnostic == "550 Requested action not taken: mailbox unavailable"
    body = "Your message did not reach some or all of the intended recipients.\n\n#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n"
    notice = read_report(plain_bounce(body, subject="Undeliverable: Spring sale")).notice
    assert notice is not None and (notice.reply_code, notice.status_code) == (550, "5.1.1")
    assert notice.diagnostic.startswith("550 5.1.1 RESOLVER.ADR.RecipNotFound")


def test_a_bounce_quoting_no_reply_hands_on_its_text() -> None:
    body = "I'm afraid I wasn't able to deliver your message to the following addresses.\n\n<reader@example.org>:\nSorry, I couldn't find any host by that name.\n"
    notice = read_report(plain_bounce(body)).notice
    assert notice is not None and (notice.reply_code, notice.status_code) == (0, "")
    assert "couldn't find any host by that name" in notice.diagnostic


def test_an_html_only_bounce_is_read_from_its_text() -> None:
    message = EmailMessage()
    message["From"] = "postmaster@example.net"
    message["Subject"] = "Delivery Status Notification (Failure)"
    message.set_content(
        "<html><body><p>Delivery failed:</p><p>550&nbsp;5.7.1 Message rejected as spam</p></body></html>",
        subtype="html",
    )
    notice = read_report(message.as_bytes()).notice
    assert notice is not None and (notice.reply_code, notice.status_code) == (550, "5.7.1")


def test_an_auto_reply_is_no_bounce_even_when_it_quotes_numbers() -> None:
    body = "I am out of the office until Monday. Our offer: 550 5.1.1 widgets at 20% off.\n"
    reading = read_report(plain_bounce(body, sender="ada@example.org", subject="Out of office: Spring sale"))
    assert reading.notice is None and "auto-reply" in reading.why_nothing


def test_ip_addresses_and_version_numbers_are_not_status_codes() -> None:
    assert find_smtp_reply("host 10.5.1.1 refused; relay 5.1.1.7 down; Exim 4.94.2") is None
    found = find_smtp_reply("server 192.0.2.1 said: 451 4.7.1 Greylisted, try again")
    assert found is not None and (found.reply_code, found.status_code) == (451, "4.7.1")


# --- ARF -----------------------------------------------------------------------------------------------------


def arf(
    feedback_type: str = "abuse", *, include: str = "rfc822", token: str = "aebqcaydaqdqkbq5fvsltxgwjvl6aoca"
) -> bytes:
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "feedback@provider.example"
    report["To"] = "fbl@bounces.herald.test"
    report["Subject"] = "Complaint about message from 192.0.2.1"
    report["Message-ID"] = "<arf-1@provider.example>"
    report.attach(MIMEText("This is an email abuse report for an email message received from IP 192.0.2.1."))
    fields = MIMEBase("message", "feedback-report")
    fields.set_payload(
        f"Feedback-Type: {feedback_type}\nUser-Agent: ProviderFBL/1.0\nVersion: 1\n"
        f"Original-Mail-From: <b-{token}@bounces.herald.test>\nArrival-Date: Sun, 06 Dec 2026 10:00:00 +0000\n"
    )
    del fields["MIME-Version"]
    report.attach(fields)
    if include == "rfc822":
        report.attach(MIMEMessage(original(token)))
    elif include == "headers":
        head = "".join(f"{name}: {value}\n" for name, value in original(token).items())
        report.attach(MIMEText(head, "rfc822-headers"))
    return report.as_bytes()


def test_an_arf_abuse_report_is_a_complaint_naming_the_originals_token_and_return_path() -> None:
    reading = read_report(arf(), received_at=NOW)
    notice = reading.notice
    assert notice is not None and notice.source is ReportSource.ARF and notice.complaint is True
    assert notice.diagnostic == "abuse report by ProviderFBL/1.0"
    assert notice.occurred_at == datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    assert reading.original_tokens == ("aebqcaydaqdqkbq5fvsltxgwjvl6aoca",)
    assert reading.original_return_paths == (
        "b-aebqcaydaqdqkbq5fvsltxgwjvl6aoca@bounces.herald.test",
        "b-aebqcaydaqdqkbq5fvsltxgwjvl6aoca@bounces.herald.test",
    )
    assert reading.message_id == "<arf-1@provider.example>"


def test_an_arf_report_with_only_the_originals_headers_names_it_too() -> None:
    reading = read_report(arf(include="headers"))
    assert reading.notice is not None and reading.original_tokens == ("aebqcaydaqdqkbq5fvsltxgwjvl6aoca",)


def test_not_spam_and_authentication_failure_reports_are_no_complaints() -> None:
    for feedback_type in ("not-spam", "auth-failure", "other"):
        reading = read_report(arf(feedback_type))
        assert reading.notice is None and feedback_type in reading.why_nothing


# --- garbage ----------------------------------------------------------------------------------------------------


def test_garbage_empty_and_non_utf8_input_read_as_nothing_or_as_clean_text() -> None:
    assert read_report(b"").notice is None
    assert read_report(b"\x00\xff\xfe garbage \r\n\r\n\x80\x81").notice is None
    latin1 = (
        "From: MAILER-DAEMON@mx.example\r\nSubject: Unzustellbar\r\nContent-Type: text/plain\r\n\r\n"
        "Remote host said: 550 5.1.1 Benutzer unbekannt: Jürgen\x00\r\n"
    ).encode("latin-1")
    notice = read_report(latin1).notice
    assert notice is not None and notice.status_code == "5.1.1"
    assert "\x00" not in notice.diagnostic and notice.diagnostic.encode("utf-8")


def test_a_huge_bounce_is_read_within_bounds() -> None:
    body = "Delivery failed.\n" + ("filler line of text\n" * 200_000) + "550 5.1.1 too far down\n"
    reading = read_report(plain_bounce(body))
    assert reading.notice is not None and reading.notice.status_code == ""  # beyond the text searched
    assert len(reading.notice.diagnostic) <= 500


def test_a_deeply_nested_message_does_not_recurse_without_end() -> None:
    inner = "From: MAILER-DAEMON@x\r\nContent-Type: text/plain\r\n\r\n550 5.1.1 deep\r\n"
    raw = inner
    for depth in range(60):
        raw = f"Content-Type: multipart/mixed; boundary=b{depth}\r\n\r\n--b{depth}\r\n{raw}\r\n--b{depth}--\r\n"
    read_report(raw.encode())  # no RecursionError


def test_clean_gives_valid_utf8_without_controls_and_bounded() -> None:
    assert clean("a\x00b\udcffc\r\n  d", 100) == "a b?c d"
    assert len(clean("x" * 5000, MAX_DIAGNOSTIC_CHARS)) == MAX_DIAGNOSTIC_CHARS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_read_without_an_exception(raw: bytes) -> None:
    reading = read_report(raw)
    if reading.notice is not None:
        reading.notice.diagnostic.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500), st.sampled_from(["delivery-status", "feedback-report", "mixed"]))
def test_any_text_in_a_report_shape_reads_without_an_exception(text: str, kind: str) -> None:
    raw = (
        f"From: MAILER-DAEMON@x\r\nContent-Type: multipart/report; report-type={kind}; boundary=XX\r\n\r\n"
        f"--XX\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
        f"--XX\r\nContent-Type: message/{kind}\r\n\r\n{text}\r\n--XX--\r\n"
    ).encode("utf-8", errors="surrogateescape")
    reading = read_report(raw)
    if reading.notice is not None:
        reading.notice.diagnostic.encode("utf-8")


def test_an_encoded_subject_and_eight_bit_headers_are_read() -> None:
    raw = (
        b"From: Mail System <daemon@mx.example>\r\nSubject: =?utf-8?q?Undeliverable=3A_Fr=C3=BChlingsangebot?=\r\n"
        b"X-Note: caf\xe9\r\nMessage-ID: <\xff@mx>\r\n\r\nRemote host said: 550 5.1.1 unknown\r\n"
    )
    reading = read_report(raw)
    assert reading.notice is not None and reading.notice.status_code == "5.1.1"
    reading.message_id.encode("utf-8")


# --- parsing a multipart part by part ---------------------------------------------------------------------------


def parsed_whole(raw: bytes) -> Message:
    return BytesParser(policy=policy.compat32).parsebytes(raw)


def shape(message: Message) -> object:
    """All that a parse made of a message: headers, default type, preamble, epilogue and payload, its parts' too."""
    payload = message.get_payload()
    return (
        list(message.raw_items()),
        message.get_default_type(),
        message.preamble,
        message.epilogue,
        [shape(part) for part in payload] if isinstance(payload, list) else payload,
    )


def test_reports_parsed_part_by_part_are_what_the_whole_parse_makes() -> None:
    reports = [
        dsn(failed()),
        dsn(failed(), headers_only=False),
        dsn(failed("4.2.2"), failed(), human="Two recipients.\n\n"),
        arf(),
        arf(include="headers"),
        arf(include=""),
        plain_bounce(QMAIL),
    ]
    for raw in (*reports, *(report.replace(b"\n", b"\r\n") for report in reports)):
        assert shape(parse_message(raw)) == shape(parsed_whole(raw))
        if b"multipart/" in raw:  # cut here, not handed to the parser whole
            assert bounce_parser._parsed_by_parts(raw.decode("ascii", errors="surrogateescape")) is not None


@st.composite
def multiparts(draw: st.DrawFn) -> bytes:
    """A multipart report, mostly well formed: a preamble, parts, a closing delimiter and an epilogue, with lines
    that matter to cutting it everywhere (delimiters of a nested multipart, lines that only look like
    delimiters, part headers, blank lines) and any line ending."""
    end = draw(st.sampled_from(["\r\n", "\n", "\r\n", "\n", "\r"]))
    boundary = draw(st.sampled_from(["XX", "=_part 1", "b"]))
    content = st.lists(
        st.sampled_from(
            [
                "Content-Type: text/plain",
                "Content-Type: message/delivery-status",
                "Content-Type: message/rfc822",
                'Content-Type: multipart/mixed; boundary="in"',
                "--in",
                "--in--",
                f"--{boundary}x",
                f" --{boundary}",
                f"--{boundary}----",
                "Action: failed",
                "Status: 5.1.1",
                "550 5.1.1 unknown user",
                "",
                "",
            ]
        ),
        max_size=8,
    )
    delimiter = st.sampled_from([f"--{boundary}", f"--{boundary}", f"--{boundary} \t", f"--{boundary}--"])
    closing = st.sampled_from([f"--{boundary}--", f"--{boundary}--", f"--{boundary}-- \t", f"--{boundary}", ""])
    lines = draw(content)
    for _ in range(draw(st.integers(0, 4))):
        lines += [draw(delimiter), *draw(content)]
    lines += [draw(closing), *draw(content)]
    head = f'From: MAILER-DAEMON@x{end}Content-Type: multipart/report; boundary="{boundary}"{end}{end}'
    return (head + end.join(lines) + draw(st.sampled_from(["", end]))).encode()


@settings(max_examples=500, deadline=None)
@given(multiparts())
def test_any_multipart_parsed_part_by_part_is_what_the_whole_parse_makes(raw: bytes) -> None:
    assert shape(parse_message(raw)) == shape(parsed_whole(raw))
    assert read_report(raw, received_at=NOW) == read_report_whole(raw)


def read_report_whole(raw: bytes) -> object:
    original_parse = bounce_parser.parse_message
    bounce_parser.parse_message = parsed_whole
    try:
        return read_report(raw, received_at=NOW)
    finally:
        bounce_parser.parse_message = original_parse
