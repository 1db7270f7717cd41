"""SNS message verification: the signature over the documented fields, the certificate fetched only over
trusted HTTPS from an allowed host, the topic restriction, and subscription confirmation.

The "SNS host" is LocalSns, an HTTPS server on 127.0.0.1 with a certificate of a test authority that
the verifier trusts (as HERALD_SNS_CA_FILE makes the translator trust it).
"""

from __future__ import annotations

import asyncio
import copy
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from services.common.config import Settings
from tests.conftest import free_port
from tests.webhook_keys import (
    LOCAL_SNS_PATTERN,
    TOPIC_ARN,
    Authority,
    LocalSns,
    WebhookKeys,
    sign_sns,
    sns_notification,
    sns_subscription_confirmation,
    webhook_keys,
)
from translator.webhooks._common import Refused
from translator.webhooks.sns import SnsUnreachable, SnsVerifier, string_to_sign


@pytest.fixture(scope="module")
def keys() -> WebhookKeys:
    return webhook_keys()


@pytest_asyncio.fixture(loop_scope="session")
async def sns(keys: WebhookKeys) -> AsyncIterator[LocalSns]:
    server = await LocalSns(keys.authority.server_context()).start()
    yield server
    await server.close()


@pytest_asyncio.fixture(loop_scope="session")
async def verifier(keys: WebhookKeys) -> AsyncIterator[SnsVerifier]:
    verifier = SnsVerifier(
        host_pattern=LOCAL_SNS_PATTERN,
        topics=frozenset({TOPIC_ARN}),
        ssl_context=keys.authority.client_context(),
    )
    yield verifier
    await verifier.close()


async def refused(verifier: SnsVerifier, document: object) -> Refused:
    with pytest.raises(Refused) as caught:
        await verifier.verify(document)
    return caught.value


def bounce_message() -> dict[str, Any]:
    return {"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}, "mail": {"source": "x@y"}}


def test_the_string_to_sign_holds_the_documented_fields_in_order() -> None:
    notification = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": TOPIC_ARN,
        "Subject": "Hi",
        "Message": "body\nwith a line",
        "Timestamp": "2026-12-06T12:00:00.000Z",
        "SignatureVersion": "2",
        "UnsubscribeURL": "https://example/unsubscribe",
    }
    assert string_to_sign(notification) == (
        b"Message\nbody\nwith a line\nMessageId\nm-1\nSubject\nHi\nTimestamp\n2026-12-06T12:00:00.000Z\n"
        b"TopicArn\n" + TOPIC_ARN.encode() + b"\nType\nNotification\n"
    )
    del notification["Subject"]
    assert b"Subject" not in string_to_sign(notification)
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "m-2",
        "Token": "t",
        "TopicArn": "arn",
        "Message": "confirm",
        "SubscribeURL": "https://example/?Action=ConfirmSubscription",
        "Timestamp": "2026-12-06T12:00:00.000Z",
    }
    assert string_to_sign(confirmation) == (
        b"Message\nconfirm\nMessageId\nm-2\nSubscribeURL\nhttps://example/?Action=ConfirmSubscription\n"
        b"Timestamp\n2026-12-06T12:00:00.000Z\nToken\nt\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
    )


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_message_signed_by_the_certificate_at_an_sns_host_verifies(
    version: str, keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    url = sns.publish_certificate(keys.sns_certificate)
    document = sns_notification(bounce_message(), url, keys.sns_key, version=version, subject="Bounce")
    message = await verifier.verify(document)
    assert message.type == "Notification" and message.topic_arn == TOPIC_ARN
    assert message.message == document["Message"] and message.message_id == document["MessageId"]


async def test_a_tampered_message_is_refused(keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier) -> None:
    url = sns.publish_certificate(keys.sns_certificate)
    document = sns_notification(bounce_message(), url, keys.sns_key)
    for field, value in [("Message", document["Message"].replace("Permanent", "Transient")), ("Subject", "added")]:
        tampered = {**document, field: value}
        refusal = await refused(verifier, tampered)
        assert (refusal.status, refusal.reason) == (403, "SNS signature does not verify")


async def test_a_message_signed_with_another_key_is_refused(
    keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    url = sns.publish_certificate(keys.sns_certificate)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = sns_notification(bounce_message(), url, other_key)
    refusal = await refused(verifier, document)
    assert (refusal.status, refusal.reason) == (403, "SNS signature does not verify")


async def test_a_certificate_of_an_untrusted_authority_is_refused(
    keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    """A certificate served by the SNS host is believed; one the message brings along from elsewhere is not:
    here a server whose TLS certificate comes from an authority the verifier does not trust."""
    impostor = await LocalSns(Authority.create("Impostor CA").server_context()).start()
    try:
        url = impostor.publish_certificate(keys.sns_certificate)
        document = sns_notification(bounce_message(), url, keys.sns_key)
        refusal = await refused(verifier, document)
        assert refusal.status == 403 and "not trusted" in refusal.reason
        assert impostor.fetches == []
    finally:
        await impostor.close()


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "http://127.0.0.1:{port}/certs/{name}",
        "https://127.0.0.1:{port}@evil.example/certs/{name}",
        "https://evil.example#@127.0.0.1:{port}/certs/{name}",
        "https://127.0.0.1/certs/{name}",
        "https://127.0.0.1:{port}/certs/{name}?x=.pem",
        "https://127.0.0.1:{port}/certs/{name} ",
        "https://[::1/certs/{name}",
        "ftp://127.0.0.1:{port}/certs/{name}",
    ],
)
async def test_a_certificate_url_outside_the_sns_hosts_is_refused_without_a_fetch(
    url: str, keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    name = sns.publish_certificate(keys.sns_certificate).rsplit("/", 1)[1]
    document = sns_notification(bounce_message(), url.format(port=sns.port, name=name), keys.sns_key)
    assert (await refused(verifier, document)).status == 403
    assert sns.fetches == []


def test_the_default_host_pattern_admits_sns_regions_only() -> None:
    verifier = SnsVerifier.from_settings(Settings(ses_webhook_enabled=True, ses_topic_arns=TOPIC_ARN))
    for good in (
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://SNS.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    ):
        assert verifier.allowed_url(good, what="SigningCertURL") == good
    for bad in (
        "https://sns.us-east-1.amazonaws.com:8443/x.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
        "https://sqs.us-east-1.amazonaws.com/x.pem",
        "https://sns.amazonaws.com/x.pem",
        "https://xsns.us-east-1.amazonaws.com/x.pem",
    ):
        with pytest.raises(Refused):
            verifier.allowed_url(bad, what="SigningCertURL")


async def test_a_topic_that_is_not_accepted_is_refused_without_a_fetch(
    keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    url = sns.publish_certificate(keys.sns_certificate)
    document = sns_notification(bounce_message(), url, keys.sns_key, topic=TOPIC_ARN + "-other")
    assert (await refused(verifier, document)).status == 403
    assert sns.fetches == []


async def test_a_missing_certificate_an_expired_one_or_no_certificate_at_all_is_refused(
    keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    missing = sns.publish_certificate(keys.sns_certificate).rsplit("/", 1)[0] + "/missing.pem"
    _, expired = keys.authority.issue("sns.amazonaws.com", key=keys.sns_key, valid_days=(-30, -1))
    garbage = sns.publish_certificate(keys.sns_certificate, "garbage.pem")
    sns.certificates["garbage.pem"] = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    for url in (missing, sns.publish_certificate(expired), garbage):
        document = sns_notification(bounce_message(), url, keys.sns_key)
        assert (await refused(verifier, document)).status == 403


async def test_an_unreachable_certificate_host_asks_for_a_retry(keys: WebhookKeys, verifier: SnsVerifier) -> None:
    url = f"https://127.0.0.1:{free_port()}/certs/SimpleNotificationService-x.pem"
    with pytest.raises(SnsUnreachable):
        await verifier.verify(sns_notification(bounce_message(), url, keys.sns_key))


@pytest.mark.parametrize(
    "change",
    [
        {"Type": "Bogus"},
        {"Type": None},
        {"Message": 7},
        {"MessageId": None},
        {"SignatureVersion": "3"},
        {"Signature": "not base64!"},
        {"SigningCertURL": None},
    ],
)
async def test_a_malformed_message_is_refused_as_bad_input(
    change: dict[str, object], keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    url = sns.publish_certificate(keys.sns_certificate)
    document = sns_notification(bounce_message(), url, keys.sns_key)
    document.update(change)
    document = {key: value for key, value in document.items() if value is not None}
    assert (await refused(verifier, document)).status == 400
    assert (await refused(verifier, ["not", "an", "object"])).status == 400


async def test_the_certificate_is_fetched_once_for_many_messages(
    keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    url = sns.publish_certificate(keys.sns_certificate)
    documents = [sns_notification(bounce_message(), url, keys.sns_key) for _ in range(5)]
    await asyncio.gather(*(verifier.verify(document) for document in documents))
    await verifier.verify(copy.deepcopy(documents[0]))
    assert len(sns.fetches) == 1


async def test_a_subscription_confirmation_is_verified_then_confirmed_at_its_subscribe_url(
    keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    url = sns.publish_certificate(keys.sns_certificate)
    document = sns_subscription_confirmation(sns.subscribe_url("token-1"), "token-1", url, keys.sns_key)
    message = await verifier.verify(document)
    assert message.type == "SubscriptionConfirmation"
    await verifier.confirm(message)
    assert [c["Token"] for c in sns.confirmations] == ["token-1"]


async def test_a_subscribe_url_outside_the_sns_hosts_is_never_visited(
    keys: WebhookKeys, sns: LocalSns, verifier: SnsVerifier
) -> None:
    url = sns.publish_certificate(keys.sns_certificate)
    elsewhere = f"https://localhost:{sns.port}/?Action=ConfirmSubscription&Token=t"
    document = sns_subscription_confirmation(elsewhere, "t", url, keys.sns_key)
    message = await verifier.verify(document)
    with pytest.raises(Refused):
        await verifier.confirm(message)
    assert sns.confirmations == []


def test_the_ca_file_replaces_the_system_trust(tmp_path: Any, keys: WebhookKeys) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(keys.authority.pem)
    verifier = SnsVerifier.from_settings(Settings(ses_webhook_enabled=True, sns_ca_file=str(ca_file)))
    trusted = verifier._ssl.get_ca_certs()
    assert len(trusted) == 1 and trusted[0]["subject"] == ((("commonName", "Herald test CA"),),)
    assert verifier._ssl.verify_mode == ssl.CERT_REQUIRED and verifier._ssl.check_hostname


def test_a_bad_host_pattern_stops_the_start() -> None:
    with pytest.raises(ValueError):
        SnsVerifier.from_settings(Settings(ses_webhook_enabled=True, sns_cert_host_pattern="(unclosed"))


def test_signing_helper_matches_the_verifier() -> None:
    """The test builder and the production code agree on the string to sign (independently written)."""
    keys = webhook_keys()
    document = sign_sns(
        {"Type": "Notification", "MessageId": "1", "TopicArn": "a", "Message": "m", "Timestamp": "t"},
        keys.sns_key,
    )
    assert string_to_sign(document) == b"Message\nm\nMessageId\n1\nTimestamp\nt\nTopicArn\na\nType\nNotification\n"
