"""The one bounce classifier (services/common/bounces.py): RFC 3463 codes first, the reply text where codes say little."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common import bounces
from services.common.bounces import BounceKind, classify, judge, reply_code_in, status_code_in

HARD, SOFT, POLICY, COMPLAINT = BounceKind.HARD, BounceKind.SOFT, BounceKind.POLICY, BounceKind.COMPLAINT
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("status_code", "reply_code", "diagnostic", "kind"),
    [
        # Hard: the address does not exist (5.1.x), whatever the words.
        ("5.1.1", 550, "user unknown", HARD),
        ("5.1.2", 550, "bad destination system address", HARD),
        ("5.1.3", 501, "bad destination mailbox address syntax", HARD),
        ("5.1.10", 550, "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", HARD),
        (
            "",
            0,
            "550 5.1.1 <ann@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
            HARD,
        ),
        ("", 0, "smtp; 550-5.1.1 The email account that you tried to reach does not exist.", HARD),
        ("", 0, "host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>... User unknown", HARD),
        ("", 550, "#5.1.1 bob@example.com not listed in Domino Directory", HARD),
        ("5.4.4", 0, "Host or domain name not found. Name service error for name=nx.example type=A", HARD),
        ("", 556, "5.1.10 Recipient address has null MX", HARD),
        ("", 521, "mail.example.com does not accept mail", HARD),
        ("", 550, "5.2.1 The email account that you tried to reach is disabled.", HARD),
        # A generic code is refined by its text.
        ("5.0.0", 550, "user unknown", HARD),
        ("", 550, "Requested action not taken: mailbox does not exist", HARD),
        ("", 550, "5.5.0 Requested action not taken: mailbox unavailable", HARD),
        ("", 554, "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]", HARD),
        ("", 550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", HARD),
        ("", 550, "No such user here", HARD),
        ("", 0, "Unrouteable address", HARD),
        # Courier 1.0.16's own report for a recipient domain that does not exist (tests/bounce_corpus/courier/).
        ("5.0.0", 0, "unknown; No such domain.", HARD),
        # Soft: 4.x.x, a full mailbox, and whatever names no cause.
        ("4.2.2", 452, "mailbox full", SOFT),
        ("5.2.2", 552, "The email account that you tried to reach is over quota.", SOFT),
        ("", 552, "Requested mail action aborted: mailbox full", SOFT),
        ("", 0, "Diagnostic-Code: smtp; 552 5.2.2 over quota", SOFT),
        ("", 450, "Requested mail action not taken: mailbox unavailable", SOFT),
        ("4.4.1", 0, "connection timed out", SOFT),
        ("", 451, "4.3.0 Try again later", SOFT),
        ("", 550, "5.2.1 mailbox temporarily disabled", SOFT),
        ("5.0.0", 550, "", SOFT),
        ("", 550, "go away", SOFT),
        ("", 0, "", SOFT),
        ("5.3.0", 554, "other mail system problem", SOFT),
        # Policy: 5.7.x and blocklist, spam or policy texts; never the address's fault.
        ("5.7.1", 550, "blocked by policy", POLICY),
        ("5.7.1", 550, "user unknown", POLICY),
        ("", 0, "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", POLICY),
        ("", 550, "Service unavailable; Client host [192.0.2.1] blocked using b.barracudacentral.org", POLICY),
        ("", 554, "Your IP is listed on a blocklist", POLICY),
        ("", 550, "Message rejected due to spam content", POLICY),
        ("5.1.1", 550, "Message rejected due to spam content", POLICY),
        ("", 550, "rejected for policy reasons", POLICY),
        ("", 550, "poor sending reputation", POLICY),
        ("", 552, "Message size exceeds fixed maximum message size", POLICY),
        ("5.3.4", 552, "message too big for system", POLICY),
        ("", 553, "5.1.8 Sender address rejected: Domain not found", POLICY),
        (
            "",
            550,
            "5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy",
            POLICY,
        ),
        ("4.7.0", 421, "Messages temporarily deferred due to unexpected volume or user complaints", POLICY),
        ("", 554, "5.6.0 content rejected", POLICY),
        ("", 550, "Relaying denied", POLICY),
    ],
)
def test_a_failure_is_classified_by_its_codes_and_words(
    status_code: str, reply_code: int, diagnostic: str, kind: BounceKind
) -> None:
    assert classify(status_code, reply_code, diagnostic) == kind, judge(status_code, reply_code, diagnostic)


@pytest.mark.parametrize(
    ("text", "status_code", "reply_code"),
    [
        ("550 5.1.1 <x@example.com>: user unknown", "5.1.1", 550),
        ("smtp; 550-5.1.1 The email account", "5.1.1", 550),
        ("550 #5.1.1 not here", "5.1.1", 550),
        ("5.2.2 mailbox full", "5.2.2", 0),
        ("smtp; 4.4.7 delivery time expired", "4.4.7", 0),
        ("host x said: 550 no such user", "", 550),
        ("Exim 4.94.2 failed on 10.0.0.5.1", "", 0),
        ("Remote server 192.0.2.5 refused", "", 0),
        ("the status was 5.1.1.", "5.1.1", 0),
        ("", "", 0),
    ],
)
def test_codes_are_read_from_the_text(text: str, status_code: str, reply_code: int) -> None:
    assert status_code_in(text) == status_code
    assert reply_code_in(text) == reply_code


def test_the_codes_read_from_the_text_are_in_the_verdict() -> None:
    verdict = judge("", 0, "smtp; 550 5.1.1 <x@example.com>: user unknown")
    assert (verdict.status_code, verdict.reply_code) == ("5.1.1", 550)
    # A given code wins over one in the text; a malformed or success code is not believed.
    assert judge("5.2.2", 552, "550 5.1.1 user unknown").kind == SOFT
    assert judge("5.1", 0, "552 5.2.2 mailbox full").status_code == "5.2.2"
    assert judge("2.0.0", 0, "550 5.1.1 user unknown").kind == HARD


def test_only_a_complaint_hint_makes_a_complaint() -> None:
    assert classify("", 0, "", COMPLAINT) == COMPLAINT
    assert classify("5.1.1", 550, "user unknown", COMPLAINT) == COMPLAINT
    assert all(classify("", 0, text) != COMPLAINT for text in ("complaint", "abuse report", "spam complaint"))


def test_a_reporters_hint_decides_only_where_the_codes_and_words_say_nothing() -> None:
    assert classify("", 0, "bounced", HARD) == HARD
    assert classify("", 550, "rejected", HARD) == HARD
    assert classify("5.0.0", 0, "", HARD) == HARD
    assert classify("", 0, "bounced", SOFT) == SOFT
    # Codes and words that say something win over the hint.
    assert classify("5.2.2", 552, "mailbox full", HARD) == SOFT
    assert classify("5.7.1", 550, "", HARD) == POLICY
    assert classify("", 550, "blocked by spamhaus", HARD) == POLICY
    assert classify("5.1.1", 550, "", SOFT) == HARD
    assert classify("4.0.0", 450, "", HARD) == SOFT


def test_a_temporary_failure_is_never_hard_whatever_the_words() -> None:
    assert classify("4.1.1", 450, "user unknown") == SOFT
    assert classify("", 450, "no such user") == SOFT
    assert classify("", 451, "5.1.1 user unknown") == SOFT


def test_the_reason_names_the_rule() -> None:
    assert judge("5.7.1", 550, "").reason.startswith("*.7.*")
    assert judge("", 550, "mailbox full").reason == "text: mailbox full"


def test_every_code_rule_of_the_table_is_documented() -> None:
    guide = (ROOT / "docs" / "bounces.md").read_text()
    for rule in (*bounces.STATUS_CODE_RULES, *bounces.REPLY_CODE_RULES):
        assert f"`{rule.pattern}`" in guide, rule.pattern


def test_every_code_pattern_is_well_formed_and_reachable() -> None:
    for rules in (bounces.STATUS_CODE_RULES, bounces.REPLY_CODE_RULES):
        for rule in rules:
            shape = r"[245*]\.[0-9*]{1,3}\.[0-9*]{1,3}" if "." in rule.pattern else r"[45x][0-9x][0-9x]"
            assert re.fullmatch(shape, rule.pattern), rule.pattern
            # No earlier row swallows a later one entirely.
            example = rule.pattern.replace("*", "9").replace("x", "9")
            example = "5" + example[1:] if example[0] == "9" else example
            assert bounces._first_code_rule(rules, example) is rule, rule.pattern


# --- properties ---------------------------------------------------------------------------------------------

codes = st.builds(lambda c, s, d: f"{c}.{s}.{d}", st.sampled_from("245"), st.integers(0, 999), st.integers(0, 999))
texts = st.text(max_size=300) | st.sampled_from(
    ["user unknown", "mailbox full", "blocked using spamhaus", "550 5.1.1 no such user", "does not exist"]
)
kinds = st.none() | st.sampled_from(list(BounceKind))


@given(st.text(max_size=20) | codes, st.integers(-(2**31), 2**31 - 1), texts, kinds)
def test_the_classifier_never_raises(status_code: str, reply_code: int, diagnostic: str, hint: object) -> None:
    kind = classify(status_code, reply_code, diagnostic, hint)  # type: ignore[arg-type]
    assert kind in BounceKind


@given(st.integers(0, 999), st.integers(0, 999), st.integers(0, 599), texts, kinds)
def test_a_4xx_status_is_never_hard(subject: int, detail: int, reply: int, diagnostic: str, hint: object) -> None:
    assert classify(f"4.{subject}.{detail}", reply, diagnostic, hint) != HARD  # type: ignore[arg-type]


@given(st.integers(0, 999), st.integers(0, 599), texts, kinds)
def test_a_5_7_status_is_never_hard(detail: int, reply: int, diagnostic: str, hint: object) -> None:
    assert classify(f"5.7.{detail}", reply, diagnostic, hint) != HARD  # type: ignore[arg-type]


@given(st.integers(0, 999), texts)
def test_a_5_7_code_in_the_text_is_never_hard(detail: int, diagnostic: str) -> None:
    assert classify("", 0, f"550 5.7.{detail} {diagnostic}") != HARD
