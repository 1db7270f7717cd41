"""dkimpy's RSA step by OpenSSL: the same bytes as dkimpy alone, dkimpy's own path for anything Herald did not prepare, each key parsed once, and a loud refusal on a dkimpy it was not checked against."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import dkim as dkimpy
import dkim.crypto as dkimpy_crypto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from services.delivery import dkim, dkim_openssl
from services.delivery.message import Recipient
from tests.unit.dkim_dns import signature_tags, verified
from tests.unit.message_templates import message_template

RECORD_NAME = "s1._domainkey.example.com"


@pytest.fixture(scope="module")
def pair() -> dkim.KeyPair:
    return dkim.generate_key_pair()


def rendered(recipient_id: int = 21) -> bytes:
    content = {
        "email_id": 1,
        "subject": "Hello {{ Subscriber:FirstName }}",
        "preheader_text": "",
        "from_name": "Herald News",
        "from_email": "news@example.com",
        "reply_to_name": "",
        "reply_to_email": "",
        "html": '<p>Dear %Subscriber:FirstName%</p><a href="{{ Link:Unsubscribe }}">u</a>',
        "plain": "Dear {{ Subscriber:FirstName }}\nUnsubscribe: {{ Link:Unsubscribe }}",
        "content_type": "Both",
        "open_tracking": True,
        "link_tracking": True,
        "utm": {"enabled": False},
    }
    email = message_template(content)
    return email.render(Recipient(recipient_id, "ada@recipient.example", "Ada", "L", 31, 41, None, None)).data


def dkimpy_alone(
    message: bytes, private_pem: bytes, covered: list[str], algorithm: bytes = b"rsa-sha256"
) -> bytes:
    """The message signed by dkimpy alone: a plain bytes PEM, which Herald's replacements hand to dkimpy's own code."""
    signature: bytes = dkimpy.DKIM(message, linesep=b"\r\n").sign(
        b"s1",
        b"example.com",
        bytes(private_pem),
        signature_algorithm=algorithm,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode("ascii") for name in covered],
    )
    return signature + message


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """dkimpy's t= tag fixed, in its own namespace only, so that two signatures of a message can be compared."""
    monkeypatch.setattr(dkimpy, "time", SimpleNamespace(time=lambda: 1_796_000_000.0))


# --- the same signature as dkimpy alone -----------------------------------------------------------------------


@pytest.mark.usefixtures("fixed_clock")
def test_a_message_signed_by_herald_is_byte_for_byte_what_dkimpy_alone_signs(
    pair: dkim.KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = dkim.Signer([dkim.SigningKey("example.com", "s1", pair.private_pem)])
    pure_rsa: list[bytes] = []

    def dkimpys_rsa(hashed: Any, private_key: Any) -> bytes:
        pure_rsa.append(hashed.digest())
        return dkimpy_crypto.RSASSA_PKCS1_v1_5_sign(hashed, private_key)

    monkeypatch.setattr(dkim_openssl, "DKIMPY_RSASSA_SIGN", dkimpys_rsa)
    for recipient_id in (21, 22):
        raw = rendered(recipient_id)
        signed = signer.sign(raw)
        covered = signature_tags(signed)["h"].split(":")
        assert signed == dkimpy_alone(raw, pair.private_pem, covered)
        assert verified(signed, {RECORD_NAME: dkim.txt_value(pair.public_key)})
    assert len(pure_rsa) == 2  # the reference signatures only: Herald's own went to OpenSSL


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=2000))
def test_openssls_rsassa_signature_of_any_sha256_digest_is_dkimpys(pair: dkim.KeyPair, data: bytes) -> None:
    prepared = dkimpy.parse_pem_private_key(dkim_openssl.prepared_pem(pair.private_pem))
    assert isinstance(prepared, dkim_openssl.PreparedKey)
    ours = dkim_openssl.rsassa_signature(hashlib.sha256(data), prepared)
    theirs = dkimpy_crypto.RSASSA_PKCS1_v1_5_sign(
        hashlib.sha256(data), dkimpy_crypto.parse_pem_private_key(pair.private_pem)
    )
    assert isinstance(ours, bytes) and ours == bytes(theirs) and len(ours) == 256


# --- dkimpy's own path for anything else ----------------------------------------------------------------------


class NoOpenSsl:
    """Stands in for the OpenSSL key where a test shows it is not used."""

    def sign(self, *args: Any) -> bytes:
        raise AssertionError("OpenSSL was used where dkimpy's own RSA should have been")


def test_sha1_and_keys_dkimpy_parsed_itself_go_to_dkimpys_own_rsa(pair: dkim.KeyPair) -> None:
    parsed = dkimpy_crypto.parse_pem_private_key(pair.private_pem)
    not_openssl = dkim_openssl.PreparedKey(parsed, NoOpenSsl())
    expected = dkimpy_crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha1(b"m"), parsed)
    assert dkim_openssl.rsassa_signature(hashlib.sha1(b"m"), not_openssl) == expected
    # A plain PEM is parsed by dkimpy into its plain dict, which dkimpy's RSA signs even for SHA-256.
    plain = dkimpy.parse_pem_private_key(bytes(pair.private_pem))
    assert type(plain) is dict
    expected = dkimpy_crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(b"m"), parsed)
    assert dkim_openssl.rsassa_signature(hashlib.sha256(b"m"), plain) == expected


@pytest.mark.usefixtures("fixed_clock")
def test_an_rsa_sha1_signature_with_a_prepared_key_is_still_dkimpys_and_verifies(pair: dkim.KeyPair) -> None:
    raw = rendered()
    covered = ["from", "to", "subject"]
    prepared = dkim_openssl.prepared_pem(pair.private_pem)
    signature: bytes = dkimpy.DKIM(raw, linesep=b"\r\n").sign(
        b"s1",
        b"example.com",
        prepared,
        signature_algorithm=b"rsa-sha1",
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode("ascii") for name in covered],
    )
    assert signature + raw == dkimpy_alone(raw, pair.private_pem, covered, b"rsa-sha1")
    assert verified(signature + raw, {RECORD_NAME: dkim.txt_value(pair.public_key)})


def test_a_pem_openssl_should_not_take_is_left_as_it_is(
    pair: dkim.KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for pem in (
        ec_pem,
        b"no key at all",
        b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    ):
        assert dkim_openssl.prepared_pem(pem) is pem
    # Signing with such a key fails in dkimpy as it did before.
    with pytest.raises(dkimpy.KeyFormatError):
        dkim.Signer([dkim.SigningKey("example.com", "s1", ec_pem)]).sign(rendered())
    monkeypatch.setattr(dkim_openssl, "MIN_KEY_BITS", 4096)
    assert dkim_openssl.prepared_pem(pair.private_pem) is pair.private_pem


# --- each key parsed once -------------------------------------------------------------------------------------


def test_a_run_parses_its_key_once_and_never_computes_rsa_in_python(
    pair: dkim.KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = dkim.Signer([dkim.SigningKey("example.com", "s1", pair.private_pem)])

    def refused(*args: Any) -> Any:
        raise AssertionError("dkimpy's pure-Python step ran for a message")

    monkeypatch.setattr(dkim_openssl, "DKIMPY_PARSE_PEM", refused)
    monkeypatch.setattr(dkim_openssl, "DKIMPY_RSASSA_SIGN", refused)
    for recipient_id in (21, 22, 23):
        assert verified(signer.sign(rendered(recipient_id)), {RECORD_NAME: dkim.txt_value(pair.public_key)})


# --- the guard on dkimpy ------------------------------------------------------------------------------------------


def test_the_replacements_are_installed_on_the_dkimpy_they_were_checked_against() -> None:
    assert dkimpy.parse_pem_private_key is dkim_openssl.parsed_pem
    assert dkimpy.RSASSA_PKCS1_v1_5_sign is dkim_openssl.rsassa_signature
    # dkimpy's own module keeps its functions: verification and anyone calling dkim.crypto see no change.
    assert dkimpy_crypto.RSASSA_PKCS1_v1_5_sign is dkim_openssl.DKIMPY_RSASSA_SIGN
    assert dkim_openssl.dkimpy_mismatch("1.1.8") == ""


def test_another_dkimpy_stops_the_worker_from_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "dkimpy 1.2.0 is installed" in dkim_openssl.dkimpy_mismatch("1.2.0")
    monkeypatch.setattr(dkim_openssl, "version", lambda name: "1.2.0")
    with pytest.raises(RuntimeError, match=r"DKIM signing cannot use OpenSSL: dkimpy 1\.2\.0"):
        dkim_openssl.install()


def test_a_dkimpy_whose_signing_code_changed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def gen_header(self: object, *args: object) -> bytes:
        return b""

    with monkeypatch.context() as patched:
        patched.setattr(dkimpy.DomainSigner, "gen_header", gen_header)
        assert "no longer calls RSASSA_PKCS1_v1_5_sign" in dkim_openssl.dkimpy_mismatch("1.1.8")
    with monkeypatch.context() as patched:
        patched.setattr(dkim_openssl, "DKIMPY_PARSE_PEM", lambda key: {})
        assert "no longer takes (data)" in dkim_openssl.dkimpy_mismatch("1.1.8")
    with monkeypatch.context() as patched:
        patched.setattr(dkimpy, "RSASSA_PKCS1_v1_5_sign", lambda hash, private_key: b"")
        assert "something else replaced it" in dkim_openssl.dkimpy_mismatch("1.1.8")
