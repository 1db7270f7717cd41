"""The scenarios of tools/bounce_corpus.py: what each campaign message meets, and the DSNs that must come back.

A scenario names its recipients, the scripted upstream's replies (written here, in our own words),
and the expected outcome: the DSNs (one per notice: a delay warning, a failure...) with, per
recipient, the Status field, the enhanced code a reporter should pass on, the reply code quoted in
Diagnostic-Code (0 when the sender decided by itself) and the kind Herald should record. A scenario
whose result depends on the machine (DNS) lists alternative outcomes; the first one that arrives wins.

Kinds: hard (the address does not exist), soft (temporary, or a full mailbox), policy (the sender's
or the message's problem: 5.7.x, blocklists, a message too big), "delayed" for a delay warning (the
MTA still tries; nothing to record) and "none" for a success notice.
"""

from __future__ import annotations

from dataclasses import dataclass

BOUNCE_DOMAIN = "bounces.example.test"
SECRET = "corpus"
CAMPAIGN_IDS = {"postfix": 3101, "exim": 3102, "opensmtpd": 3103, "sendmail": 3104, "courier": 3105}

LOCAL_DOMAIN = "local.example.test"  # the Postfix sender's own (mydestination) domain
EXIM_LOCAL_DOMAIN = "exim-local.example.test"
POSTFIX_MX_DOMAIN = "postfix-mx.example.test"  # a second, real Postfix is its MX
RELAY_ONLY_DOMAIN = "relay-only.example.test"  # routed to the Postfix MX, which does not serve it
DOWN_DOMAIN = "down.example.test"  # routed to a port where nothing listens
# Each domain of the scripted upstream gets its own server, so a 421 for one does not throttle the others.
UPSTREAM_DOMAINS = (
    "inbox.example.test",
    "mail.example.test",
    "busy.example.test",
    "post.example.test",  # OpenSMTPD's scenarios
    "mailbox.example.test",  # Sendmail's
    "letters.example.test",  # Courier's
)
# Every sender's parameters alike: retry every 3 s, warn after 8 s, give up after 45 s.
TIMING = {"retry": "3s", "delay_warning": "8s", "lifetime": "45s"}


@dataclass(frozen=True)
class Reply:
    """What the scripted upstream answers for one recipient: at RCPT or after DATA; for a while, or always."""

    text: str
    stage: str = "rcpt"
    for_seconds: float | None = None


@dataclass(frozen=True)
class Expect:
    """One recipient's block in a DSN. `code` is the enhanced code to report when it is more precise than Status."""

    address: str
    status: str
    reply_code: int
    kind: str
    code: str = ""

    @property
    def enhanced_code(self) -> str:
        return self.code or self.status


@dataclass(frozen=True)
class Notice:
    """One DSN of a scenario: its Action and its recipients' blocks; `label` suffixes the file name."""

    action: str
    recipients: tuple[Expect, ...]
    label: str = ""
    description: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    recipient_id: int
    description: str
    recipients: tuple[str, ...]
    outcomes: tuple[tuple[Notice, ...], ...]
    replies: tuple[tuple[str, Reply], ...] = ()
    mail_options: tuple[str, ...] = ()
    rcpt_options: tuple[str, ...] = ()
    pad: int = 0

    def file_name(self, notice: Notice) -> str:
        return f"{self.name}-{notice.label}.eml" if notice.label else f"{self.name}.eml"


def _expiring(
    address: str, status: str, reply_code: int, code: str = "", *, failed_status: str = ""
) -> tuple[Notice, ...]:
    """A delay warning, then the failure when the queue lifetime is over (Exim then writes Status 5.0.0)."""
    # Exim's failure after the retry time names only its own generic status (5.0.0), and so does the report.
    failed = Expect(address, failed_status or status, reply_code, "soft", "" if failed_status else code)
    return (
        Notice("delayed", (Expect(address, status, reply_code, "delayed", code),), "delayed", "(delay warning)"),
        Notice("failed", (failed,), "expired", "(queue lifetime over)"),
    )


def _failed(address: str, status: str, reply_code: int, kind: str, code: str = "") -> tuple[tuple[Notice, ...]]:
    return ((Notice("failed", (Expect(address, status, reply_code, kind, code),)),),)


def _one(
    name: str,
    recipient_id: int,
    description: str,
    address: str,
    reply: Reply | None,
    outcomes: tuple[tuple[Notice, ...], ...],
    **options: object,
) -> Scenario:
    replies = ((address, reply),) if reply else ()
    return Scenario(name, recipient_id, description, (address,), outcomes, replies, **options)  # type: ignore[arg-type]


# Replies of the scripted upstream, in our own words; {rcpt} is the recipient.
UNKNOWN = Reply("550 5.1.1 <{rcpt}>: no mailbox by that name is known here")
BAD_DESTINATION = Reply("550 5.1.2 Bad destination system: the domain of <{rcpt}> is not served here")
FULL = Reply("552 5.2.2 <{rcpt}>: mailbox is over its storage quota")
FULL_FOR_NOW = Reply("452 4.2.2 <{rcpt}>: mailbox full, please try again later")
FULL_NO_CODE = Reply("552 Requested mail action aborted: exceeded storage allocation")
GREYLISTED = Reply("451 4.7.1 Greylisted: this sender is new to us, please retry in a few minutes", for_seconds=20)
BUSY = Reply("421 4.7.0 Too many connections from your network, closing the connection", for_seconds=20)
BLOCKLISTED = Reply(
    "550 5.7.1 Service unavailable; client [127.0.0.1] is listed at bl.example-rbl.test "
    "(poor sending reputation), see https://rbl.example.test/lookup?ip=127.0.0.1"
)
SPAM_CONTENT = Reply("554 5.7.1 Message refused: its content was classified as spam (score 9.7)", stage="data")
DMARC = Reply(
    "550 5.7.26 Unauthenticated mail from shop.example.test refused: the domain's DMARC policy is reject"
)
NO_CODE_UNKNOWN = Reply("550 No such user here")
NOT_FOUND = Reply("550 5.1.10 Recipient <{rcpt}> was not found in the directory of this organization")
DISABLED = Reply("550 5.2.1 The mailbox <{rcpt}> is disabled and does not accept mail")


def postfix_scenarios() -> list[Scenario]:
    inbox, mx, busy = "inbox.example.test", POSTFIX_MX_DOMAIN, "busy.example.test"
    multi = (f"nobody-here-2@{mx}", f"full-2@{inbox}", f"blocked-2@{inbox}", f"reader@{mx}")
    return [
        _one(
            "local-unknown-user",
            1,
            "A local address of the sending Postfix that does not exist: local(8) bounces it.",
            f"nosuchuser@{LOCAL_DOMAIN}",
            None,
            _failed(f"nosuchuser@{LOCAL_DOMAIN}", "5.1.1", 0, "hard"),
        ),
        _one(
            "mx-unknown-user",
            2,
            "The recipient's MX, a real Postfix, refuses an unknown user (local_recipient_maps).",
            f"nobody-here@{mx}",
            None,
            _failed(f"nobody-here@{mx}", "5.1.1", 550, "hard"),
        ),
        _one(
            "mx-relay-denied",
            3,
            "The MX, a real Postfix, does not serve the domain and refuses to relay.",
            f"someone@{RELAY_ONLY_DOMAIN}",
            None,
            _failed(f"someone@{RELAY_ONLY_DOMAIN}", "5.7.1", 554, "policy"),
        ),
        _one(
            "mx-message-too-big",
            4,
            "The message is larger than the MX's message_size_limit; returned as headers only (RET=HDRS). Postfix "
            "either refuses it itself after the MX's EHLO advertised SIZE 20000, or passes on the MX's 552 to "
            "MAIL FROM SIZE=; which one varies from run to run.",
            f"reader@{mx}",
            None,
            (
                _failed(f"reader@{mx}", "5.3.4", 0, "policy")[0],
                _failed(f"reader@{mx}", "5.3.4", 552, "policy")[0],
            ),
            pad=25_000,
            mail_options=("RET=HDRS",),
        ),
        _one(
            "unknown-user",
            5,
            "550 5.1.1: unknown user.",
            f"ghost@{inbox}",
            UNKNOWN,
            _failed(f"ghost@{inbox}", "5.1.1", 550, "hard"),
        ),
        _one(
            "bad-destination",
            6,
            "550 5.1.2: bad destination system.",
            f"someone@{inbox}",
            BAD_DESTINATION,
            _failed(f"someone@{inbox}", "5.1.2", 550, "hard"),
        ),
        Scenario(
            "no-route",
            7,
            "A domain that does not exist in DNS: Postfix's own 'Host or domain name not found' (5.4.4); where "
            "DNS is unreachable, a deferral until the queue lifetime is over (4.4.3).",
            ("someone@no-such-domain.invalid",),
            (
                _failed("someone@no-such-domain.invalid", "5.4.4", 0, "hard")[0],
                _expiring("someone@no-such-domain.invalid", "4.4.3", 0),
            ),
        ),
        _one(
            "mailbox-full",
            8,
            "552 5.2.2: mailbox full.",
            f"full@{inbox}",
            FULL,
            _failed(f"full@{inbox}", "5.2.2", 552, "soft"),
        ),
        _one(
            "mailbox-full-for-now",
            9,
            "452 4.2.2 on every attempt: a delay warning, then a failure with the 4.x.x status when the queue "
            "lifetime is over.",
            f"full-for-now@{inbox}",
            FULL_FOR_NOW,
            (_expiring(f"full-for-now@{inbox}", "4.2.2", 452),),
        ),
        _one(
            "greylisted",
            10,
            "451 4.7.1 greylisting for 20 s: a delay warning, then the message is delivered.",
            f"greylisted@{inbox}",
            GREYLISTED,
            ((Notice("delayed", (Expect(f"greylisted@{inbox}", "4.7.1", 451, "delayed"),)),),),
        ),
        _one(
            "blocklisted",
            11,
            "550 5.7.1: the sending host is on a DNS blocklist.",
            f"blocked@{inbox}",
            BLOCKLISTED,
            _failed(f"blocked@{inbox}", "5.7.1", 550, "policy"),
        ),
        _one(
            "spam-content",
            12,
            "554 5.7.1 after DATA: the content was classified as spam.",
            f"filtered@{inbox}",
            SPAM_CONTENT,
            _failed(f"filtered@{inbox}", "5.7.1", 554, "policy"),
        ),
        _one(
            "dmarc-reject",
            13,
            "550 5.7.26: refused by the sender domain's DMARC policy.",
            f"strict@{inbox}",
            DMARC,
            _failed(f"strict@{inbox}", "5.7.26", 550, "policy"),
        ),
        _one(
            "unknown-user-no-enhanced-code",
            14,
            "550 without an enhanced code ('No such user here'): Postfix reports Status 5.0.0; the text says hard.",
            f"nouser@{inbox}",
            NO_CODE_UNKNOWN,
            _failed(f"nouser@{inbox}", "5.0.0", 550, "hard"),
        ),
        _one(
            "recipient-not-found",
            15,
            "550 5.1.10: recipient not found (a two-digit detail code).",
            f"left-the-company@{inbox}",
            NOT_FOUND,
            _failed(f"left-the-company@{inbox}", "5.1.10", 550, "hard"),
        ),
        _one(
            "mailbox-disabled",
            16,
            "550 5.2.1: the mailbox is disabled. RFC 3463 allows a temporary or a permanent reading; a "
            "permanent refusal of a disabled mailbox is treated as hard.",
            f"disabled@{inbox}",
            DISABLED,
            _failed(f"disabled@{inbox}", "5.2.1", 550, "hard"),
        ),
        _one(
            "connection-refused",
            17,
            "The MX refuses connections: a delay warning, then a failure with 4.4.1 when the queue lifetime is over.",
            f"someone@{DOWN_DOMAIN}",
            None,
            (_expiring(f"someone@{DOWN_DOMAIN}", "4.4.1", 0),),
        ),
        _one(
            "busy-421",
            18,
            "421 4.7.0 for 20 s (too many connections): a delay warning, then the message is delivered.",
            f"busy@{busy}",
            BUSY,
            ((Notice("delayed", (Expect(f"busy@{busy}", "4.7.0", 421, "delayed"),)),),),
        ),
        Scenario(
            "multi-recipient",
            19,
            "One message to four recipients, three refused (unknown user at the Postfix MX, mailbox full, "
            "blocklist) and one delivered: one DSN with three recipient blocks. The return path names the first.",
            multi,
            (
                (
                    Notice(
                        "failed",
                        (
                            Expect(multi[0], "5.1.1", 550, "hard"),
                            Expect(multi[1], "5.2.2", 552, "soft"),
                            Expect(multi[2], "5.7.1", 550, "policy"),
                        ),
                    ),
                ),
            ),
            replies=((multi[1], FULL), (multi[2], BLOCKLISTED)),
        ),
        _one(
            "headers-only",
            20,
            "550 5.1.1 for a message sent with RET=HDRS, ENVID and ORCPT: the DSN returns the headers only "
            "(text/rfc822-headers) and carries Original-Envelope-Id and Original-Recipient.",
            f"ghost-2@{inbox}",
            UNKNOWN,
            _failed(f"ghost-2@{inbox}", "5.1.1", 550, "hard"),
            mail_options=("RET=HDRS", "ENVID=herald-3101-20"),
            rcpt_options=("NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;ghost-2@{inbox}"),
        ),
        _one(
            "relayed-success",
            21,
            "NOTIFY=SUCCESS to a server without DSN support: a success notice (Action: relayed), not a bounce.",
            f"happy@{inbox}",
            None,
            ((Notice("relayed", (Expect(f"happy@{inbox}", "2.0.0", 250, "none"),)),),),
            rcpt_options=("NOTIFY=SUCCESS,FAILURE",),
        ),
        _one(
            "mailbox-full-no-enhanced-code",
            22,
            "552 without an enhanced code ('exceeded storage allocation'): Status 5.0.0; the text says a full "
            "mailbox, so soft.",
            f"hoarder@{inbox}",
            FULL_NO_CODE,
            _failed(f"hoarder@{inbox}", "5.0.0", 552, "soft"),
        ),
    ]


def exim_scenarios() -> list[Scenario]:
    mail, mx = "mail.example.test", POSTFIX_MX_DOMAIN
    multi = (f"nobody-here-3@{mx}", f"full-3@{mail}", f"reader@{mx}")
    return [
        _one(
            "local-unknown-user",
            1,
            "A local address of the sending Exim that no router accepts.",
            f"nosuchuser@{EXIM_LOCAL_DOMAIN}",
            None,
            _failed(f"nosuchuser@{EXIM_LOCAL_DOMAIN}", "5.0.0", 0, "hard"),
        ),
        _one(
            "mx-unknown-user",
            2,
            "The recipient's MX, a real Postfix, refuses an unknown user.",
            f"nobody-here-exim@{mx}",
            None,
            _failed(f"nobody-here-exim@{mx}", "5.0.0", 550, "hard", "5.1.1"),
        ),
        _one(
            "unknown-user",
            3,
            "550 5.1.1: unknown user.",
            f"ghost@{mail}",
            UNKNOWN,
            _failed(f"ghost@{mail}", "5.0.0", 550, "hard", "5.1.1"),
        ),
        _one(
            "mailbox-full",
            4,
            "552 5.2.2: mailbox full.",
            f"full@{mail}",
            FULL,
            _failed(f"full@{mail}", "5.0.0", 552, "soft", "5.2.2"),
        ),
        _one(
            "blocklisted",
            5,
            "550 5.7.1: the sending host is on a DNS blocklist.",
            f"blocked@{mail}",
            BLOCKLISTED,
            _failed(f"blocked@{mail}", "5.0.0", 550, "policy", "5.7.1"),
        ),
        _one(
            "mailbox-full-for-now",
            6,
            "452 4.2.2 on every attempt: a delay warning, then a failure when the retry time is over.",
            f"full-for-now@{mail}",
            FULL_FOR_NOW,
            (_expiring(f"full-for-now@{mail}", "4.0.0", 452, "4.2.2", failed_status="5.0.0"),),
        ),
        _one(
            "greylisted",
            7,
            "451 4.7.1 greylisting for 20 s: a delay warning, then the message is delivered.",
            f"greylisted@{mail}",
            GREYLISTED,
            ((Notice("delayed", (Expect(f"greylisted@{mail}", "4.0.0", 451, "delayed", "4.7.1"),)),),),
        ),
        _one(
            "mx-message-too-big",
            8,
            "The message is larger than the MX's message_size_limit.",
            f"reader@{mx}",
            None,
            _failed(f"reader@{mx}", "5.0.0", 552, "policy", "5.3.4"),
            pad=25_000,
        ),
        Scenario(
            "multi-recipient",
            9,
            "One message to three recipients, two refused (unknown user at the Postfix MX, mailbox full) and one "
            "delivered: one DSN with two recipient blocks.",
            multi,
            (
                (
                    Notice(
                        "failed",
                        (
                            Expect(multi[0], "5.0.0", 550, "hard", "5.1.1"),
                            Expect(multi[1], "5.0.0", 552, "soft", "5.2.2"),
                        ),
                    ),
                ),
            ),
            replies=((multi[1], FULL),),
        ),
        Scenario(
            "no-route",
            10,
            "A domain that does not exist in DNS: Exim finds no route.",
            ("someone@no-such-domain.invalid",),
            (
                _failed("someone@no-such-domain.invalid", "5.0.0", 0, "hard")[0],
                _expiring("someone@no-such-domain.invalid", "4.0.0", 0, failed_status="5.0.0"),
            ),
        ),
        _one(
            "connection-refused",
            11,
            "The MX refuses connections: a delay warning, then a failure when the retry time is over.",
            f"someone-else@{DOWN_DOMAIN}",
            None,
            (_expiring(f"someone-else@{DOWN_DOMAIN}", "4.0.0", 0, failed_status="5.0.0"),),
        ),
        _one(
            "spam-content",
            12,
            "554 5.7.1 after DATA: the content was classified as spam.",
            f"filtered@{mail}",
            SPAM_CONTENT,
            _failed(f"filtered@{mail}", "5.0.0", 554, "policy", "5.7.1"),
        ),
        _one(
            "unknown-user-no-enhanced-code",
            13,
            "550 without an enhanced code ('No such user here'): the text says hard.",
            f"nouser@{mail}",
            NO_CODE_UNKNOWN,
            _failed(f"nouser@{mail}", "5.0.0", 550, "hard"),
        ),
        _one(
            "bad-destination",
            14,
            "550 5.1.2: bad destination system.",
            f"someone@{mail}",
            BAD_DESTINATION,
            _failed(f"someone@{mail}", "5.0.0", 550, "hard", "5.1.2"),
        ),
    ]
