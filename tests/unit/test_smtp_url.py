"""SMTP_URL parsing: schemes, ports, STARTTLS, credentials, and every malformed form rejected with a clear error."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.delivery.smtp import SmtpTarget, SmtpUrlError, parse_smtp_url


def test_plain_smtp_defaults_to_port_25_without_tls() -> None:
    assert parse_smtp_url("smtp://mail.example.com") == SmtpTarget("mail.example.com", 25, "none")


def test_smtps_is_implicit_tls_on_port_465() -> None:
    assert parse_smtp_url("smtps://mail.example.com") == SmtpTarget("mail.example.com", 465, "implicit")


def test_explicit_port_is_kept() -> None:
    assert parse_smtp_url("smtp://127.0.0.1:2525").port == 2525
    assert parse_smtp_url("smtps://relay:10465").port == 10465


@pytest.mark.parametrize("flag", ["true", "TRUE", "1", "yes", "on"])
def test_starttls_is_explicit(flag: str) -> None:
    assert parse_smtp_url(f"smtp://relay:587?starttls={flag}").tls == "starttls"


@pytest.mark.parametrize("flag", ["false", "0", "no", "off"])
def test_starttls_false_means_plain(flag: str) -> None:
    assert parse_smtp_url(f"smtp://relay?starttls={flag}").tls == "none"


def test_credentials_are_url_decoded() -> None:
    target = parse_smtp_url("smtps://user%40example.com:p%3Ass%2Fw%40rd%20x@relay.example.com")
    assert target.username == "user@example.com"
    assert target.password == "p:ss/w@rd x"
    assert target.host == "relay.example.com"


def test_user_without_password_is_allowed() -> None:
    target = parse_smtp_url("smtp://apikey@relay")
    assert (target.username, target.password) == ("apikey", "")


def test_scheme_and_host_are_case_insensitive() -> None:
    assert parse_smtp_url("SMTP://Relay.Example.COM").host == "relay.example.com"


def test_ipv6_literal_host() -> None:
    target = parse_smtp_url("smtp://[::1]:2525")
    assert (target.host, target.port) == ("::1", 2525)


def test_password_never_appears_in_repr_or_description() -> None:
    target = parse_smtp_url("smtp://user:hunter2secret@relay")
    assert "hunter2secret" not in repr(target)
    assert "hunter2secret" not in target.describe()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "smtp:// or smtps://"),
        ("http://relay", "smtp:// or smtps://"),
        ("relay.example.com:25", "smtp:// or smtps://"),
        ("smtp://", "no host"),
        ("smtp://:25", "no host"),
        ("smtp://relay/path", "path"),
        ("smtp://relay#frag", "fragment"),
        ("smtp://relay:notaport", "not a valid URL"),
        ("smtp://relay:99999", "not a valid URL"),
        ("smtp://relay:0", "between 1 and 65535"),
        ("smtp://relay?tls=true", "unknown parameter"),
        ("smtp://relay?starttls=maybe", "true or false"),
        ("smtps://relay?starttls=true", "smtp:// only"),
        ("smtp://:secret@relay", "no user name"),
    ],
)
def test_malformed_urls_are_rejected(url: str, message: str) -> None:
    with pytest.raises(SmtpUrlError, match=message):
        parse_smtp_url(url)


def test_error_messages_never_contain_the_password() -> None:
    with pytest.raises(SmtpUrlError) as caught:
        parse_smtp_url("smtp://user:topsecretpw@relay/path")
    assert "topsecretpw" not in str(caught.value)


_credential = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30)


@given(username=_credential, password=_credential)
def test_any_credentials_survive_url_encoding(username: str, password: str) -> None:
    url = f"smtps://{quote(username, safe='')}:{quote(password, safe='')}@relay.example.com:465"
    target = parse_smtp_url(url)
    assert (target.username, target.password) == (username, password)


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_smtp_url_error(text: str) -> None:
    try:
        target = parse_smtp_url(text)
    except SmtpUrlError:
        return
    assert target.host
    assert 0 < target.port <= 65535
