"""The one bounce classifier: what an SMTP reply, a bounce report or a complaint says about an address.

Delivery judges the SMTP reply at send time with it, and every report the bounce receiver and the
provider webhooks pass to DeliveryService.RecordBounces. The verdict is one of four kinds:

- HARD: the address cannot receive mail (RFC 3463 X.1.x: unknown user, bad domain, bad syntax);
- SOFT: a temporary failure (4.x.x) or a full mailbox, and whatever a report does not explain;
- POLICY: a policy or reputation rejection (X.7.x, blocklists, spam filters, the message's size):
  the sender's problem, not the address's, so it never suppresses the address;
- COMPLAINT: the recipient reported the message as spam (only a reporter's COMPLAINT hint says so).

The rules are the tables below, read top to bottom, and docs/bounces.md explains them. An enhanced
status code (RFC 3463) counts most; the reply text refines a generic code (5.0.0, a bare 550) and
a blocklist or policy text overrules anything but a code that is final. Rules are data: to teach
the classifier a new provider's wording, add a row, and a case to tests/unit/test_bounces.py.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass


class BounceKind(enum.StrEnum):
    """The verdict, as stored (delivery.bounces.kind)."""

    HARD = "hard"
    SOFT = "soft"
    POLICY = "policy"
    COMPLAINT = "complaint"


class BounceSource(enum.StrEnum):
    """Where a bounce came from, as stored (delivery.bounces.source)."""

    SMTP_REPLY = "smtp_reply"
    DSN = "dsn"
    PLAIN_TEXT = "plain_text"
    ARF = "arf"
    SES = "ses"
    SENDGRID = "sendgrid"
    POSTMARK = "postmark"
    REPORT_ABUSE_LINK = "report_abuse_link"


class Weight(enum.IntEnum):
    """How much a code rule's verdict holds against the reply text and the reporter's hint."""

    # Nothing changes it.
    FINAL = 3
    # Only a blocklist or policy text changes it (to POLICY).
    FIRM = 2
    # Any text rule changes it; it wins over the reporter's HARD or SOFT hint.
    REFINABLE = 1
    # Any text rule changes it, and so does the reporter's HARD or SOFT hint.
    FALLBACK = 0


@dataclass(frozen=True)
class CodeRule:
    """A verdict for the codes matching `pattern`: "5.1.*" for enhanced status codes, "55x" for reply codes."""

    pattern: str
    kind: BounceKind
    weight: Weight
    meaning: str

    def matches(self, code: str) -> bool:
        if "." in self.pattern:
            wanted, parts = self.pattern.split("."), code.split(".")
            return len(parts) == 3 and all(w in ("*", p) for w, p in zip(wanted, parts, strict=True))
        return len(code) == 3 and all(w in ("x", c) for w, c in zip(self.pattern, code, strict=True))


@dataclass(frozen=True)
class TextRule:
    """A verdict for a diagnostic text matching `pattern` (case-insensitive)."""

    kind: BounceKind
    pattern: re.Pattern[str]
    meaning: str


H, S, P = BounceKind.HARD, BounceKind.SOFT, BounceKind.POLICY

# Enhanced status codes (RFC 3463: class.subject.detail), the first matching row wins.
STATUS_CODE_RULES: Sequence[CodeRule] = (
    CodeRule(
        "*.7.*", P, Weight.FINAL, "security or policy status: the receiver refuses the sender or the message"
    ),
    CodeRule(
        "*.1.7", P, Weight.FINAL, "bad sender's mailbox address syntax: Herald's return path, not the address"
    ),
    CodeRule("*.1.8", P, Weight.FINAL, "bad sender's system address: Herald's return path, not the address"),
    CodeRule("4.*.*", S, Weight.FIRM, "persistent transient failure: the address may work later"),
    CodeRule(
        "5.1.*", H, Weight.FIRM, "addressing status: no such mailbox (5.1.1), domain (5.1.2), bad syntax (5.1.3)"
    ),
    CodeRule("5.2.2", S, Weight.FIRM, "mailbox full"),
    CodeRule("5.2.3", P, Weight.FIRM, "message longer than the mailbox accepts: the message, not the address"),
    CodeRule("5.2.1", H, Weight.REFINABLE, "mailbox disabled, not accepting messages"),
    CodeRule("5.3.4", P, Weight.FIRM, "message too big for the system: the message, not the address"),
    CodeRule("5.4.4", H, Weight.FIRM, "unable to route: the domain has no mail server"),
    CodeRule("5.5.*", P, Weight.REFINABLE, "protocol status: Herald's side (5.5.0 is often used loosely)"),
    CodeRule("5.6.*", P, Weight.FIRM, "media or content status: the message, not the address"),
    CodeRule("5.*.*", S, Weight.FALLBACK, "another permanent failure that names no cause: soft until it repeats"),
)

# Basic reply codes (RFC 5321), used only when no enhanced status code is known.
REPLY_CODE_RULES: Sequence[CodeRule] = (
    CodeRule("4xx", S, Weight.FIRM, "transient negative reply"),
    CodeRule("521", H, Weight.FIRM, "the host does not accept mail (RFC 7504)"),
    CodeRule("556", H, Weight.FIRM, "the domain does not accept mail (RFC 7504, null MX)"),
    CodeRule("5xx", S, Weight.FALLBACK, "permanent negative reply that names no cause: soft until it repeats"),
)


def _text(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# Texts that make any verdict below FINAL a policy rejection: the sender's reputation or the message's
# content, never the address. Phrases, not single words where a user-unknown text could hold them
# ("not listed in Domino Directory" is an unknown user).
POLICY_TEXT_RULES: Sequence[TextRule] = (
    TextRule(
        P,
        _text(r"spamhaus|spamcop|sorbs|uceprotect|\bsurbl\b|\buribl\b|\bdnsbl\b|\brbl\b|\bbarracuda"),
        "a DNS blocklist",
    ),
    TextRule(
        P,
        _text(r"\b(?:block|black|deny|ban)[ -]?list(?:ed|ing)?\b|\b(?:is|are|was|been|currently|ip) listed\b"),
        "a blocklist",
    ),
    TextRule(P, _text(r"\bblocked\b|\breputation\b|\bpolic(?:y|ies)\b"), "blocked by the receiver's policy"),
    TextRule(P, _text(r"\bspam\b|\bspammy\b|junk mail|unsolicited|\bbulk mail"), "judged as spam"),
    TextRule(
        P,
        _text(r"\bdmarc\b|\bspf\b|\bdkim\b|authentication (?:required|failed)|not authenticated"),
        "sender authentication",
    ),
    TextRule(
        P,
        _text(r"\bsender (?:address|domain|verif|rejected|denied|blocked|not)|client host"),
        "the sender refused",
    ),
    TextRule(
        P,
        _text(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|not (?:authorized|permitted|allowed) to (?:send|relay)"
        ),
        "relaying refused",
    ),
    TextRule(
        P,
        _text(r"too many (?:connections|messages|recipients|emails)|rate[ -]limit|throttl"),
        "the sender's volume",
    ),
    TextRule(
        P,
        _text(
            r"message (?:size )?(?:is )?too (?:large|big|long)|message (?:length|size) (?:exceeds|limit)|exceeds (?:the )?(?:maximum )?message size"
        ),
        "the message's size",
    ),
    TextRule(P, _text(r"content (?:rejected|filter)|\bvirus\b|malware|phish"), "the message's content"),
)

# Texts that say what is wrong with the address, for verdicts that are REFINABLE or FALLBACK (and reports
# without codes). Soft rows first: when a text says both, the address is not suppressed.
ADDRESS_TEXT_RULES: Sequence[TextRule] = (
    TextRule(
        S,
        _text(
            r"mailbox (?:is )?full|over ?quota|quota (?:exceeded|full)|exceed(?:s|ed)? (?:its |their |the )?(?:storage|quota)"
        ),
        "mailbox full",
    ),
    TextRule(
        S, _text(r"insufficient (?:system )?storage|out of (?:disk )?(?:space|storage)"), "no room for the message"
    ),
    TextRule(S, _text(r"temporar(?:y|ily)|try (?:again )?later|gr[ae]ylist"), "a temporary condition"),
    TextRule(
        H, _text(r"user unknown|unknown (?:user|recipient|mailbox|address|local[ -]?part|account)"), "unknown user"
    ),
    TextRule(H, _text(r"no such (?:user|mailbox|recipient|address|account|person|local user)"), "unknown user"),
    TextRule(
        H,
        _text(r"does ?n[o']t exist|do not exist|no longer exists?|doesn'?t have an? [\w.-]+ account"),
        "the address does not exist",
    ),
    TextRule(
        H,
        _text(
            r"(?:recipient|user|mailbox|address|account) (?:not found|invalid|not valid|unavailable|disabled|deactivated|suspended|closed|inactive)"
        ),
        "the mailbox cannot receive mail",
    ),
    TextRule(
        H,
        _text(
            r"invalid (?:recipient|mailbox|address|user|e-?mail)|bad destination (?:mailbox|system) address|(?:bad|invalid) address syntax"
        ),
        "invalid address",
    ),
    TextRule(
        H,
        _text(
            r"recipient address rejected: access denied|not listed in (?:the )?(?:domino directory|public name)"
        ),
        "unknown user",
    ),
    TextRule(
        H,
        _text(
            r"(?:host|domain)(?: name)? not found|no such domain|unrout(?:e)?able|no mail exchanger|\bnull mx\b"
        ),
        "the domain cannot receive mail",
    ),
)

_DEFAULT_MEANING = "nothing in the report explains the failure: soft until it repeats"

# "550 5.1.1", "550-5.1.1", "550 #5.1.1": a reply code and the enhanced code after it.
_REPLY_AND_CODE = re.compile(r"(?<![\w.])([245]\d\d)[ \t]*[- ][ \t]*#?([245]\.\d{1,3}\.\d{1,3})(?!\d|\.\d)")
# "5.1.1 user unknown", "smtp; 5.1.1 ...", "#5.1.1": an enhanced code where the text starts.
_LEADING_CODE = re.compile(r"^\s*(?:smtp\s*;\s*)?#?([245]\.\d{1,3}\.\d{1,3})(?!\d|\.\d)", re.IGNORECASE)
# An enhanced code anywhere else; its subject must be one RFC 3463 defines (0-7), so "Exim 4.94.2" is not one.
_ANY_CODE = re.compile(r"(?<![\w.])#?([245]\.[0-7]\.\d{1,3})(?!\d|\.\d)")
# "550 ...", "smtp; 550 ...", "... said: 550 ...": a reply code where the server's words start.
_REPLY = re.compile(
    r"(?:^\s*(?:smtp\s*;\s*)?|(?:said|replied|reply|response|answered)\s*:\s*)([245]\d\d)(?![\w.])", re.IGNORECASE
)
_STATUS_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def is_status_code(text: str) -> bool:
    """Whether `text` has the shape of an RFC 3463 enhanced status code (class 2, 4 or 5)."""
    return _STATUS_CODE.fullmatch(text) is not None


def status_code_in(text: str) -> str:
    """The enhanced status code the text quotes ("" when none): after a reply code, at its start, or elsewhere."""
    for pattern in (_REPLY_AND_CODE, _LEADING_CODE, _ANY_CODE):
        found = pattern.search(text)
        if found is not None:
            return found.group(found.lastindex or 1)
    return ""


def reply_code_in(text: str) -> int:
    """The basic SMTP reply code the text quotes (0 when none)."""
    found = _REPLY_AND_CODE.search(text) or _REPLY.search(text)
    return int(found.group(1)) if found is not None else 0


@dataclass(frozen=True)
class Verdict:
    """The classifier's judgement: the kind, the codes it went by, and the rule that decided (for logs and tests)."""

    kind: BounceKind
    status_code: str
    reply_code: int
    reason: str


def classify(status_code: str, reply_code: int, diagnostic: str, hint: BounceKind | None = None) -> BounceKind:
    """The kind of a failure: see `judge`."""
    return judge(status_code, reply_code, diagnostic, hint).kind


def judge(status_code: str, reply_code: int, diagnostic: str, hint: BounceKind | None = None) -> Verdict:
    """Judges a failure by its enhanced status code, reply code and text; never raises.

    Codes missing from the report's fields are read from the text ("smtp; 550 5.1.1 <x>: user
    unknown"). `hint` is the reporter's own judgement: COMPLAINT (an abuse report) always wins;
    HARD or SOFT (a provider's bounce type) wins only over a verdict that names no cause. A
    temporary failure (4.x.x or a 4xx reply) is never hard.
    """
    diagnostic = diagnostic[:4000]
    code = status_code.strip()
    if not is_status_code(code) or code.startswith("2."):
        code = status_code_in(diagnostic)
        code = "" if code.startswith("2.") else code
    reply = reply_code if 400 <= reply_code <= 599 else reply_code_in(diagnostic)
    reply = reply if 400 <= reply <= 599 else 0
    transient = code.startswith("4.") or 400 <= reply <= 499

    def verdict(kind: BounceKind, reason: str) -> Verdict:
        if transient and kind == BounceKind.HARD:
            kind, reason = BounceKind.SOFT, f"{reason}, but a temporary failure is never hard"
        return Verdict(kind, code, reply, reason)

    if hint == BounceKind.COMPLAINT:
        return verdict(BounceKind.COMPLAINT, "the reporter says the recipient complained")
    rule = _first_code_rule(STATUS_CODE_RULES, code) if code else None
    if rule is None and reply:
        rule = _first_code_rule(REPLY_CODE_RULES, str(reply))
    if rule is not None and rule.weight == Weight.FINAL:
        return verdict(rule.kind, f"{rule.pattern}: {rule.meaning}")
    text = _first_text_rule(POLICY_TEXT_RULES, diagnostic)
    if text is not None:
        return verdict(text.kind, f"text: {text.meaning}")
    if rule is not None and rule.weight == Weight.FIRM:
        return verdict(rule.kind, f"{rule.pattern}: {rule.meaning}")
    text = _first_text_rule(ADDRESS_TEXT_RULES, diagnostic)
    if text is not None:
        return verdict(text.kind, f"text: {text.meaning}")
    if rule is not None and rule.weight == Weight.REFINABLE:
        return verdict(rule.kind, f"{rule.pattern}: {rule.meaning}")
    if hint in (BounceKind.HARD, BounceKind.SOFT):
        return verdict(BounceKind(hint), "the reporter's bounce type")
    if rule is not None:
        return verdict(rule.kind, f"{rule.pattern}: {rule.meaning}")
    return verdict(BounceKind.SOFT, _DEFAULT_MEANING)


def _first_code_rule(rules: Sequence[CodeRule], code: str) -> CodeRule | None:
    return next((rule for rule in rules if rule.matches(code)), None)


def _first_text_rule(rules: Sequence[TextRule], diagnostic: str) -> TextRule | None:
    return next((rule for rule in rules if rule.pattern.search(diagnostic)), None)
