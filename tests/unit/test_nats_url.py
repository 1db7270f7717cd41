"""NATS_URL: servers and the credentials they carry, which go to nats-py as connect options."""

from __future__ import annotations

from services.common.natsutil import NatsCredentials, nats_servers


def test_user_and_password_leave_the_urls_and_become_the_credentials() -> None:
    servers, credentials = nats_servers("nats://herald:p%40ss%3Aword@n1:4222, nats://n2:4222")
    assert servers == ["nats://n1:4222", "nats://n2:4222"]
    assert credentials == NatsCredentials(user="herald", password="p@ss:word")


def test_a_token_is_a_user_name_without_password() -> None:
    assert nats_servers("tls://s3cret@nats.example:4222") == (
        ["tls://nats.example:4222"],
        NatsCredentials(token="s3cret"),
    )


def test_no_credentials_and_bare_host_ports() -> None:
    assert nats_servers("127.0.0.1:4222") == (["nats://127.0.0.1:4222"], NatsCredentials())
    assert nats_servers("") == ([], NatsCredentials())
