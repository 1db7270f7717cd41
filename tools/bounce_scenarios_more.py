"""The scenarios of OpenSMTPD, Sendmail and Courier for tools/bounce_corpus.py (Postfix's and Exim's are in
tools/bounce_scenarios.py, which explains what a scenario is), and `scenarios_for`.

The replies are the scripted upstream's, written in tools/bounce_scenarios.py; each MTA meets them at its
own upstream domain. What differs between the MTAs is how they report the same reply:

- OpenSMTPD 6.8 writes a generic Status (5.0.0, 4.0.0 for a delay) and no Diagnostic-Code; the remote
  server's reply is quoted only in the human-readable part ("<address>: 550 5.1.1 ..."). A reporter should
  pass on the quoted reply code and enhanced code. When the queue lifetime runs out it sends a report
  with `Action: delayed` and `Status: 4.4.7` ("Envelope expired") and drops the message: a failure.
  It has no connection-refused scenario: for a server that refuses connections it keeps the message
  in its transfer process, retrying the connection, and sends neither a warning nor an expiry report
  within the run.
- Sendmail 8.17 quotes the reply in Diagnostic-Code, but takes the reply's enhanced code into Status
  only from a server that advertises ENHANCEDSTATUSCODES (the Postfix MX does, the scripted upstream
  does not, like many small servers). Otherwise it derives Status from the reply code and the stage: a
  550 to RCPT TO is 5.1.1 even when the reply says 5.7.1 (a blocklist) or 5.7.26 (DMARC), a 554 after
  DATA 5.0.0, a 451 4.3.0, a 452 4.3.1. Those reports are kept as they are: the text must decide. The
  failure when the lifetime is over is 4.4.7 ("Delivery time expired").
- Courier 1.0.16 writes a generic Status (5.0.0, 4.0.0) and quotes the remote reply in Diagnostic-Code,
  like Exim; its delay warnings carry no Diagnostic-Code, and for its own decisions it writes an
  'unknown' one ("unknown; No such domain.", "unknown; Network is down").
"""

from __future__ import annotations

from tools.bounce_scenarios import (
    BAD_DESTINATION,
    BLOCKLISTED,
    DMARC,
    DOWN_DOMAIN,
    FULL,
    FULL_FOR_NOW,
    GREYLISTED,
    NO_CODE_UNKNOWN,
    POSTFIX_MX_DOMAIN,
    RELAY_ONLY_DOMAIN,
    SPAM_CONTENT,
    UNKNOWN,
    Expect,
    Notice,
    Scenario,
    _expiring,
    _failed,
    _one,
    exim_scenarios,
    postfix_scenarios,
)

NO_SUCH_DOMAIN = "someone@no-such-domain.invalid"


def _delivered_after_delay(
    address: str, status: str, reply_code: int, code: str = ""
) -> tuple[tuple[Notice, ...]]:
    return ((Notice("delayed", (Expect(address, status, reply_code, "delayed", code),)),),)


def _expired_as_delayed(address: str, delayed: Expect) -> tuple[Notice, ...]:
    """OpenSMTPD: a delay warning, then, when the lifetime is over, its 'Envelope expired' report with
    Action delayed and Status 4.4.7; the message is dropped, so Herald should count a soft bounce."""
    return (
        Notice("delayed", (delayed,), "delayed", "(delay warning)"),
        Notice("delayed", (Expect(address, "4.4.7", 0, "soft"),), "expired", "(queue lifetime over)"),
    )


def opensmtpd_scenarios() -> list[Scenario]:
    post, mx = "post.example.test", POSTFIX_MX_DOMAIN
    multi = (f"nobody-here-4@{mx}", f"full-4@{post}", f"reader@{mx}")
    return [
        _one(
            "mx-unknown-user",
            1,
            "The recipient's MX, a real Postfix, refuses an unknown user.",
            f"nobody-here-osmtpd@{mx}",
            None,
            _failed(f"nobody-here-osmtpd@{mx}", "5.0.0", 550, "hard", "5.1.1"),
        ),
        _one(
            "unknown-user",
            2,
            "550 5.1.1: unknown user.",
            f"ghost@{post}",
            UNKNOWN,
            _failed(f"ghost@{post}", "5.0.0", 550, "hard", "5.1.1"),
        ),
        _one(
            "bad-destination",
            3,
            "550 5.1.2: bad destination system.",
            f"someone@{post}",
            BAD_DESTINATION,
            _failed(f"someone@{post}", "5.0.0", 550, "hard", "5.1.2"),
        ),
        _one(
            "unknown-user-no-enhanced-code",
            4,
            "550 without an enhanced code ('No such user here'): the text says hard.",
            f"nouser@{post}",
            NO_CODE_UNKNOWN,
            _failed(f"nouser@{post}", "5.0.0", 550, "hard"),
        ),
        _one(
            "mailbox-full",
            5,
            "552 5.2.2: mailbox full.",
            f"full@{post}",
            FULL,
            _failed(f"full@{post}", "5.0.0", 552, "soft", "5.2.2"),
        ),
        _one(
            "mailbox-full-for-now",
            6,
            "452 4.2.2 on every attempt: a delay warning, then OpenSMTPD's expiry report when the lifetime is "
            "over.",
            f"full-for-now@{post}",
            FULL_FOR_NOW,
            (
                _expired_as_delayed(
                    f"full-for-now@{post}", Expect(f"full-for-now@{post}", "4.0.0", 452, "delayed", "4.2.2")
                ),
            ),
        ),
        _one(
            "greylisted",
            7,
            "451 4.7.1 greylisting for 20 s: a delay warning, then the message is delivered.",
            f"greylisted@{post}",
            GREYLISTED,
            _delivered_after_delay(f"greylisted@{post}", "4.0.0", 451, "4.7.1"),
        ),
        _one(
            "blocklisted",
            8,
            "550 5.7.1: the sending host is on a DNS blocklist.",
            f"blocked@{post}",
            BLOCKLISTED,
            _failed(f"blocked@{post}", "5.0.0", 550, "policy", "5.7.1"),
        ),
        _one(
            "spam-content",
            9,
            "554 5.7.1 after DATA: the content was classified as spam.",
            f"filtered@{post}",
            SPAM_CONTENT,
            _failed(f"filtered@{post}", "5.0.0", 554, "policy", "5.7.1"),
        ),
        _one(
            "mx-message-too-big",
            10,
            "The message is larger than the MX's message_size_limit.",
            f"reader@{mx}",
            None,
            (
                _failed(f"reader@{mx}", "5.0.0", 552, "policy", "5.3.4")[0],
                _failed(f"reader@{mx}", "5.0.0", 0, "policy")[0],
            ),
            pad=25_000,
        ),
        Scenario(
            "multi-recipient",
            11,
            "One message to three recipients, two refused (unknown user at the Postfix MX, mailbox full) and one "
            "delivered: OpenSMTPD sends one report per refused recipient.",
            multi,
            (
                (
                    Notice("failed", (Expect(multi[0], "5.0.0", 550, "hard", "5.1.1"),), "nobody-here"),
                    Notice("failed", (Expect(multi[1], "5.0.0", 552, "soft", "5.2.2"),), "full"),
                ),
            ),
            replies=((multi[1], FULL),),
        ),
        Scenario(
            "no-route",
            12,
            "A domain that does not exist in DNS.",
            (NO_SUCH_DOMAIN,),
            (
                _failed(NO_SUCH_DOMAIN, "5.0.0", 0, "hard")[0],
                _expired_as_delayed(NO_SUCH_DOMAIN, Expect(NO_SUCH_DOMAIN, "4.0.0", 0, "delayed")),
            ),
        ),
    ]


def sendmail_scenarios() -> list[Scenario]:
    box, mx = "mailbox.example.test", POSTFIX_MX_DOMAIN
    multi = (f"nobody-here-5@{mx}", f"full-5@{box}", f"blocked-5@{box}", f"reader@{mx}")
    return [
        _one(
            "mx-unknown-user",
            1,
            "The recipient's MX, a real Postfix, refuses an unknown user.",
            f"nobody-here-sendmail@{mx}",
            None,
            _failed(f"nobody-here-sendmail@{mx}", "5.1.1", 550, "hard"),
        ),
        _one(
            "mx-relay-denied",
            2,
            "The MX, a real Postfix, does not serve the domain and refuses to relay.",
            f"someone-sendmail@{RELAY_ONLY_DOMAIN}",
            None,
            _failed(f"someone-sendmail@{RELAY_ONLY_DOMAIN}", "5.7.1", 554, "policy"),
        ),
        _one(
            "mx-message-too-big",
            3,
            "The message is larger than the MX's message_size_limit (advertised with SIZE).",
            f"reader@{mx}",
            None,
            (
                _failed(f"reader@{mx}", "5.2.3", 0, "policy")[0],
                _failed(f"reader@{mx}", "5.3.4", 552, "policy")[0],
                _failed(f"reader@{mx}", "5.2.3", 552, "policy")[0],
            ),
            pad=25_000,
        ),
        _one(
            "unknown-user",
            4,
            "550 5.1.1: unknown user.",
            f"ghost@{box}",
            UNKNOWN,
            _failed(f"ghost@{box}", "5.1.1", 550, "hard"),
        ),
        _one(
            "bad-destination",
            5,
            "550 5.1.2: bad destination system.",
            f"someone@{box}",
            BAD_DESTINATION,
            _failed(f"someone@{box}", "5.1.1", 550, "hard"),
        ),
        _one(
            "unknown-user-no-enhanced-code",
            6,
            "550 without an enhanced code ('No such user here'): the text says hard.",
            f"nouser@{box}",
            NO_CODE_UNKNOWN,
            (
                _failed(f"nouser@{box}", "5.0.0", 550, "hard")[0],
                _failed(f"nouser@{box}", "5.1.1", 550, "hard")[0],
            ),
        ),
        _one(
            "mailbox-full",
            7,
            "552 5.2.2: mailbox full.",
            f"full@{box}",
            FULL,
            _failed(f"full@{box}", "5.2.2", 552, "soft"),
        ),
        _one(
            "mailbox-full-for-now",
            8,
            "452 4.2.2 on every attempt: a delay warning (Sendmail's own Status 4.3.1 beside the quoted 4.2.2), "
            "then the failure with 4.4.7 when the lifetime is over.",
            f"full-for-now@{box}",
            FULL_FOR_NOW,
            (_expiring(f"full-for-now@{box}", "4.3.1", 452, failed_status="4.4.7"),),
        ),
        _one(
            "greylisted",
            9,
            "451 4.7.1 greylisting for 20 s: a delay warning, then the message is delivered.",
            f"greylisted@{box}",
            GREYLISTED,
            (
                _delivered_after_delay(f"greylisted@{box}", "4.3.0", 451)[0],
                _delivered_after_delay(f"greylisted@{box}", "4.7.1", 451)[0],
            ),
        ),
        _one(
            "blocklisted",
            10,
            "550 5.7.1: the sending host is on a DNS blocklist.",
            f"blocked@{box}",
            BLOCKLISTED,
            _failed(f"blocked@{box}", "5.1.1", 550, "policy"),
        ),
        _one(
            "spam-content",
            11,
            "554 5.7.1 after DATA: the content was classified as spam.",
            f"filtered@{box}",
            SPAM_CONTENT,
            _failed(f"filtered@{box}", "5.0.0", 554, "policy", "5.7.1"),
        ),
        _one(
            "dmarc-reject",
            12,
            "550 5.7.26: refused by the sender domain's DMARC policy.",
            f"strict@{box}",
            DMARC,
            _failed(f"strict@{box}", "5.1.1", 550, "policy"),
        ),
        _one(
            "connection-refused",
            13,
            "The MX refuses connections: a delay warning (4.4.1), then the failure with 4.4.7.",
            f"someone-sendmail@{DOWN_DOMAIN}",
            None,
            (_expiring(f"someone-sendmail@{DOWN_DOMAIN}", "4.4.1", 0, failed_status="4.4.7"),),
        ),
        Scenario(
            "multi-recipient",
            14,
            "One message to four recipients, three refused (unknown user at the Postfix MX, mailbox full, "
            "blocklist) and one delivered: one DSN with three recipient blocks.",
            multi,
            (
                (
                    Notice(
                        "failed",
                        (
                            Expect(multi[0], "5.1.1", 550, "hard"),
                            Expect(multi[1], "5.2.2", 552, "soft"),
                            Expect(multi[2], "5.1.1", 550, "policy"),
                        ),
                    ),
                ),
            ),
            replies=((multi[1], FULL), (multi[2], BLOCKLISTED)),
        ),
        _one(
            "headers-only",
            15,
            "550 5.1.1 for a message sent with RET=HDRS, ENVID and ORCPT: the DSN returns the headers only.",
            f"ghost-2@{box}",
            UNKNOWN,
            _failed(f"ghost-2@{box}", "5.1.1", 550, "hard"),
            mail_options=("RET=HDRS", "ENVID=herald-3104-15"),
            rcpt_options=("NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;ghost-2@{box}"),
        ),
        _one(
            "relayed-success",
            16,
            "NOTIFY=SUCCESS to a server without DSN support: a success notice (Action: relayed), not a bounce.",
            f"happy@{box}",
            None,
            ((Notice("relayed", (Expect(f"happy@{box}", "2.0.0", 250, "none"),)),),),
            rcpt_options=("NOTIFY=SUCCESS,FAILURE",),
        ),
        Scenario(
            "no-route",
            17,
            "A domain that does not exist in DNS: Sendmail's own 'Host unknown'; where DNS is unreachable, a "
            "deferral until the lifetime is over.",
            (NO_SUCH_DOMAIN,),
            (
                _failed(NO_SUCH_DOMAIN, "5.1.2", 0, "hard")[0],
                _failed(NO_SUCH_DOMAIN, "5.1.2", 550, "hard")[0],
                _expiring(NO_SUCH_DOMAIN, "4.4.3", 0, failed_status="4.4.7"),
            ),
        ),
    ]


def _courier_expiring(address: str, reply_code: int, code: str = "") -> tuple[Notice, ...]:
    """Courier: a delay warning without Diagnostic-Code (4.0.0), then the failure (5.0.0 beside the last reply)."""
    return (
        Notice("delayed", (Expect(address, "4.0.0", 0, "delayed"),), "delayed", "(delay warning)"),
        Notice(
            "failed", (Expect(address, "5.0.0", reply_code, "soft", code),), "expired", "(queue lifetime over)"
        ),
    )


def courier_scenarios() -> list[Scenario]:
    letters, mx = "letters.example.test", POSTFIX_MX_DOMAIN
    multi = (f"nobody-here-6@{mx}", f"full-6@{letters}", f"reader@{mx}")
    return [
        _one(
            "mx-unknown-user",
            1,
            "The recipient's MX, a real Postfix, refuses an unknown user.",
            f"nobody-here-courier@{mx}",
            None,
            (
                _failed(f"nobody-here-courier@{mx}", "5.0.0", 550, "hard", "5.1.1")[0],
                _failed(f"nobody-here-courier@{mx}", "5.1.1", 550, "hard")[0],
            ),
        ),
        _one(
            "unknown-user",
            2,
            "550 5.1.1: unknown user.",
            f"ghost@{letters}",
            UNKNOWN,
            _failed(f"ghost@{letters}", "5.0.0", 550, "hard", "5.1.1"),
        ),
        _one(
            "bad-destination",
            3,
            "550 5.1.2: bad destination system.",
            f"someone@{letters}",
            BAD_DESTINATION,
            _failed(f"someone@{letters}", "5.0.0", 550, "hard", "5.1.2"),
        ),
        _one(
            "unknown-user-no-enhanced-code",
            4,
            "550 without an enhanced code ('No such user here'): the text says hard.",
            f"nouser@{letters}",
            NO_CODE_UNKNOWN,
            _failed(f"nouser@{letters}", "5.0.0", 550, "hard"),
        ),
        _one(
            "mailbox-full",
            5,
            "552 5.2.2: mailbox full.",
            f"full@{letters}",
            FULL,
            _failed(f"full@{letters}", "5.0.0", 552, "soft", "5.2.2"),
        ),
        _one(
            "mailbox-full-for-now",
            6,
            "452 4.2.2 on every attempt: a delay warning, then the failure (Status 5.0.0, the last reply "
            "452 4.2.2 quoted) when the queue lifetime is over.",
            f"full-for-now@{letters}",
            FULL_FOR_NOW,
            (_courier_expiring(f"full-for-now@{letters}", 452),),
        ),
        _one(
            "greylisted",
            7,
            "451 4.7.1 greylisting for 20 s: a delay warning, then the message is delivered.",
            f"greylisted@{letters}",
            GREYLISTED,
            _delivered_after_delay(f"greylisted@{letters}", "4.0.0", 0),
        ),
        _one(
            "blocklisted",
            8,
            "550 5.7.1: the sending host is on a DNS blocklist.",
            f"blocked@{letters}",
            BLOCKLISTED,
            _failed(f"blocked@{letters}", "5.0.0", 550, "policy", "5.7.1"),
        ),
        _one(
            "spam-content",
            9,
            "554 5.7.1 after DATA: the content was classified as spam.",
            f"filtered@{letters}",
            SPAM_CONTENT,
            _failed(f"filtered@{letters}", "5.0.0", 554, "policy", "5.7.1"),
        ),
        _one(
            "mx-message-too-big",
            10,
            "The message is larger than the MX's message_size_limit (advertised with SIZE).",
            f"reader@{mx}",
            None,
            (
                _failed(f"reader@{mx}", "5.0.0", 552, "policy", "5.3.4")[0],
                _failed(f"reader@{mx}", "5.3.4", 552, "policy")[0],
                _failed(f"reader@{mx}", "5.0.0", 0, "policy")[0],
                _failed(f"reader@{mx}", "5.3.4", 0, "policy")[0],
            ),
            pad=25_000,
        ),
        Scenario(
            "multi-recipient",
            11,
            "One message to three recipients, two refused (unknown user at the Postfix MX, mailbox full) and one "
            "delivered.",
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
                (
                    Notice("failed", (Expect(multi[0], "5.0.0", 550, "hard", "5.1.1"),), "nobody-here"),
                    Notice("failed", (Expect(multi[1], "5.0.0", 552, "soft", "5.2.2"),), "full"),
                ),
            ),
            replies=((multi[1], FULL),),
        ),
        _one(
            "connection-refused",
            12,
            "The MX refuses connections: a delay warning, then the failure when the lifetime is over.",
            f"someone-courier@{DOWN_DOMAIN}",
            None,
            (_courier_expiring(f"someone-courier@{DOWN_DOMAIN}", 0),),
        ),
        Scenario(
            "no-route",
            13,
            "A domain that does not exist in DNS.",
            (NO_SUCH_DOMAIN,),
            (
                _failed(NO_SUCH_DOMAIN, "5.0.0", 0, "hard")[0],
                _courier_expiring(NO_SUCH_DOMAIN, 0),
            ),
        ),
        _one(
            "headers-only",
            14,
            "550 5.1.1 for a message sent with RET=HDRS, ENVID and ORCPT: the DSN returns the headers only.",
            f"ghost-2@{letters}",
            UNKNOWN,
            _failed(f"ghost-2@{letters}", "5.0.0", 550, "hard", "5.1.1"),
            mail_options=("RET=HDRS", "ENVID=herald-3105-14"),
            rcpt_options=("NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;ghost-2@{letters}"),
        ),
        _one(
            "relayed-success",
            15,
            "NOTIFY=SUCCESS to a server without DSN support: a success notice (Action: relayed), not a bounce.",
            f"happy@{letters}",
            None,
            (
                (Notice("relayed", (Expect(f"happy@{letters}", "2.0.0", 250, "none"),)),),
                (Notice("relayed", (Expect(f"happy@{letters}", "2.0.0", 0, "none"),)),),
            ),
            rcpt_options=("NOTIFY=SUCCESS,FAILURE",),
        ),
    ]


def scenarios_for(mta: str) -> list[Scenario]:
    return {
        "postfix": postfix_scenarios,
        "exim": exim_scenarios,
        "opensmtpd": opensmtpd_scenarios,
        "sendmail": sendmail_scenarios,
        "courier": courier_scenarios,
    }[mta]()
