"""DKIM sending domains: the rules for domains, selectors and owners, the key pair and its seal, and signatures dkimpy verifies against the published record."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DomainError, ErrorKind
from services.delivery import dkim
from services.delivery.dkim_client import zone_file_line
from services.delivery.message import MessageTemplate, Recipient
from tests.unit.dkim_dns import signature_tags, verified
from tests.unit.message_templates import SECRET, message_template

# --- domains, selectors, owners ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_domain", "stored"),
    [
        ("example.com", "example.com"),
        ("  News.Example.COM. ", "news.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c0.example", "a-b.c0.example"),
        ("1example.com", "1example.com"),
        (f"{'a' * 63}.example", f"{'a' * 63}.example"),
    ],
)
def test_a_domain_is_stored_lower_case_in_idna(given_domain: str, stored: str) -> None:
    assert dkim.normalized_domain(given_domain) == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "localhost",
        "example.com..",
        "a..example",
        ".example.com",
        "-a.example",
        "a-.example",
        "a_b.example",
        "exa mple.com",
        "news@example.com",
        "192.0.2.7",
        f"{'a' * 64}.example",
        ".".join(["abcdefghi"] * 26),  # 259 characters
        "http://example.com",
    ],
)
def test_a_domain_that_is_no_hostname_of_two_labels_is_refused(bad: str) -> None:
    with pytest.raises(DomainError) as caught:
        dkim.normalized_domain(bad)
    assert caught.value.kind is ErrorKind.INVALID and caught.value.reason == dkim.SENDING_DOMAIN_INVALID
    assert [v.field for v in caught.value.violations] == ["domain"]


@given(st.from_regex(r"[A-Za-z0-9-]{1,20}(\.[A-Za-z0-9-]{1,20}){0,4}\.?", fullmatch=True))
def test_a_stored_domain_is_stored_as_itself(text: str) -> None:
    try:
        stored = dkim.normalized_domain(text)
    except DomainError:
        return
    assert stored == stored.lower() and not stored.endswith(".") and dkim.normalized_domain(stored) == stored


@pytest.mark.parametrize(
    ("given_selector", "stored"), [("s1", "s1"), ("S1", "s1"), ("2026-12.mail", "2026-12.mail"), ("x", "x")]
)
def test_a_selector_is_labels_of_letters_digits_and_hyphens(given_selector: str, stored: str) -> None:
    assert dkim.normalized_selector(given_selector) == stored


@pytest.mark.parametrize("bad", ["", "-s1", "s1-", "s_1", "s 1", "sé", "a..b", ".s1", "a" * 64, "s1._domainkey"])
def test_a_selector_outside_rfc_6376_is_refused(bad: str) -> None:
    with pytest.raises(DomainError) as caught:
        dkim.normalized_selector(bad)
    assert caught.value.reason == dkim.DKIM_SELECTOR_INVALID
    assert [v.field for v in caught.value.violations] == ["selector"]


def test_one_error_names_a_bad_domain_and_a_bad_selector() -> None:
    with pytest.raises(DomainError) as caught:
        dkim.validated_sending_domain("localhost", "s_1")
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("domain", dkim.SENDING_DOMAIN_INVALID),
        ("selector", dkim.DKIM_SELECTOR_INVALID),
    ]


def test_a_record_name_longer_than_dns_allows_is_refused() -> None:
    domain = ".".join(["a" * 60] * 4)  # 243 characters: a hostname, but no room for a selector
    assert dkim.normalized_domain(domain) == domain
    with pytest.raises(DomainError) as caught:
        dkim.validated_sending_domain(domain, "s1")
    assert caught.value.reason == dkim.DKIM_SELECTOR_INVALID and "253" in caught.value.message
    assert dkim.validated_sending_domain("Example.com", "S1") == ("example.com", "s1")


@pytest.mark.parametrize(
    ("requested", "user_id", "is_admin", "for_listing", "owner"),
    [
        (0, 5, False, False, 5),
        (5, 5, False, False, 5),
        (0, 5, False, True, 5),
        (9, 0, True, False, 9),
        (9, 0, True, True, 9),
        (0, 0, True, True, None),  # an admin's listing of nobody in particular: every user's
    ],
)
def test_whose_domains_a_call_is_about(
    requested: int, user_id: int, is_admin: bool, for_listing: bool, owner: int | None
) -> None:
    assert dkim.owner_of(requested, user_id, is_admin, for_listing=for_listing) == owner


def test_only_an_admin_names_another_user_and_an_admin_names_one() -> None:
    with pytest.raises(DomainError) as denied:
        dkim.owner_of(9, 5, False)
    assert denied.value.kind is ErrorKind.PERMISSION and denied.value.reason == "ADMIN_REQUIRED"
    for requested, is_admin in ((0, True), (-1, False)):
        with pytest.raises(DomainError) as refused:
            dkim.owner_of(requested, 0 if is_admin else 5, is_admin)
        assert refused.value.kind is ErrorKind.INVALID and refused.value.reason == dkim.OWNER_USER_ID_INVALID


# --- keys and their seal -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> dkim.KeyPair:
    return dkim.generate_key_pair()


def test_the_txt_record_publishes_the_rsa_2048_public_key(pair: dkim.KeyPair) -> None:
    value = dkim.txt_value(pair.public_key)
    assert value.startswith("v=DKIM1; k=rsa; p=")
    public = load_der_public_key(base64.b64decode(value.split("p=", 1)[1]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert dkim.record_name("s1", "example.com") == "s1._domainkey.example.com"
    assert pair.private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_a_sealed_key_opens_only_with_its_secret_owner_and_domain(pair: dkim.KeyPair) -> None:
    seal = dkim.KeySeal(SECRET)
    sealed = seal.seal(pair.private_pem, 5, "example.com")
    assert b"PRIVATE KEY" not in sealed and sealed[:1] == dkim.KeySeal.VERSION
    assert seal.open(sealed, 5, "example.com") == pair.private_pem
    assert sealed != seal.seal(pair.private_pem, 5, "example.com")  # a fresh nonce each time
    for opener, owner, domain in (
        (dkim.KeySeal("another-secret"), 5, "example.com"),
        (seal, 6, "example.com"),
        (seal, 5, "example.org"),
    ):
        with pytest.raises(dkim.KeyUnreadable):
            opener.open(sealed, owner, domain)
    with pytest.raises(dkim.KeyUnreadable):
        seal.open(b"\x02" + sealed[1:], 5, "example.com")


def test_keys_that_do_not_open_are_left_out_and_named(pair: dkim.KeyPair) -> None:
    seal = dkim.KeySeal(SECRET)
    rows = [
        dkim.SealedKey(5, "example.com", "s1", seal.seal(pair.private_pem, 5, "example.com")),
        dkim.SealedKey(
            5, "example.org", "s1", dkim.KeySeal("old-secret").seal(pair.private_pem, 5, "example.org")
        ),
    ]
    signer, unreadable = dkim.opened_signer(rows, seal)
    assert unreadable == ["example.org"]
    assert signer.key_for(b"News <news@example.com>") is not None
    assert signer.key_for(b"news@example.org") is None


# --- signing -------------------------------------------------------------------------------------------------


def template(from_email: str) -> MessageTemplate:
    content = {
        "email_id": 1,
        "subject": "Hello {{ Subscriber:FirstName }}",
        "preheader_text": "",
        "from_name": "Herald Néws",
        "from_email": from_email,
        "reply_to_name": "Desk",
        "reply_to_email": "desk@example.com",
        "html": '<html><body><p>Dear %Subscriber:FirstName%</p><a href="{{ Link:Unsubscribe }}">u</a></body></html>',
        "plain": "Dear {{ Subscriber:FirstName }}\nUnsubscribe: {{ Link:Unsubscribe }}",
        "content_type": "Both",
        "open_tracking": True,
        "link_tracking": True,
        "utm": {"enabled": False},
    }
    return message_template(content)


RECIPIENT = Recipient(21, "ada@recipient.example", "Ada", "Lovelace", 31, 41, None, None)


def published(pair: dkim.KeyPair, selector: str = "s1", domain: str = "example.com") -> dict[str, str]:
    return {dkim.record_name(selector, domain): dkim.txt_value(pair.public_key)}


def test_a_message_from_a_domain_with_a_key_verifies_against_the_published_record(pair: dkim.KeyPair) -> None:
    signer = dkim.Signer([dkim.SigningKey("example.com", "s1", pair.private_pem)])
    raw = template("news@Example.com").render(RECIPIENT).data
    signed = signer.sign(raw)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(raw)
    assert verified(signed, published(pair))
    tags = signature_tags(signed)
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == ("rsa-sha256", "relaxed/relaxed", "example.com", "s1")
    covered = tags["h"].split(":")
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(covered)
    assert {"from", "to", "subject", "date", "message-id", "mime-version", "content-type", "reply-to"} <= set(
        covered
    )
    assert covered.count("from") == 2  # oversigned: a From added later breaks the signature


def test_a_signature_survives_refolding_but_not_a_changed_header_or_body(pair: dkim.KeyPair) -> None:
    signer = dkim.Signer([dkim.SigningKey("example.com", "s1", pair.private_pem)])
    raw = template("news@example.com").render(RECIPIENT).data
    signed = signer.sign(raw)
    records = published(pair)
    assert verified(signed.replace(b"\r\nSubject: Hello Ada", b"\r\nSubject:   Hello\r\n  Ada"), records)
    assert not verified(signed.replace(b"Subject: Hello Ada", b"Subject: Hello Bob"), records)
    assert not verified(signed.replace(b"Dear Ada", b"Dear Bob"), records)
    assert not verified(
        signed.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nothing"),
        records,
    )
    other = dkim.generate_key_pair()
    assert not verified(signed, published(other))  # another key published: no signature of ours


def test_a_message_from_a_domain_without_a_key_is_sent_as_rendered(pair: dkim.KeyPair) -> None:
    signer = dkim.Signer([dkim.SigningKey("example.com", "s1", pair.private_pem)])
    for sender in ("news@example.org", "news@sub.example.com", "news@example.com.evil.test"):
        raw = template(sender).render(RECIPIENT).data
        assert signer.sign(raw) == raw
    raw = template("news@example.com").render(RECIPIENT).data
    assert dkim.Signer().sign(raw) == raw


def test_an_internationalized_from_domain_is_signed_with_its_idna_key(pair: dkim.KeyPair) -> None:
    signer = dkim.Signer([dkim.SigningKey("xn--bcher-kva.example", "s1", pair.private_pem)])
    raw = template("news@bücher.example").render(RECIPIENT).data
    signed = signer.sign(raw)
    assert signature_tags(signed)["d"] == "xn--bcher-kva.example"
    assert verified(signed, published(pair, domain="xn--bcher-kva.example"))


def test_the_zone_file_line_cuts_the_value_into_txt_strings_of_at_most_255(pair: dkim.KeyPair) -> None:
    value = dkim.txt_value(pair.public_key)
    line = zone_file_line("s1._domainkey.example.com", value)
    assert line.startswith('s1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=') and line.endswith('" )')
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) == 2 and all(len(string) <= 255 for string in strings)
    assert "".join(strings) == value
