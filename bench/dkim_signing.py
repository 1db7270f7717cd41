"""DKIM signing benchmark: CPU time per message of rendering alone, rendering + dkimpy signing entirely in
pure Python, and rendering + Herald's Signer (what the delivery worker runs: dkimpy with its RSA step by
OpenSSL, services/delivery/dkim_openssl.py), in this one process; then the RSA step alone, both ways.

Run: `.venv/bin/python bench/dkim_signing.py` (or `--messages 400 --repeats 5`; ~30 s of one core). Prints,
for each phase, the best of the repeats in ms of process CPU time (user + system) per message, the
difference to rendering alone (the signing), and the load average: on a shared machine CPU time is
disturbed far less than wall time, but a loaded machine still makes every figure higher. Starts no
service. (Not named dkim.py: run as a script, bench/ comes first on sys.path and would shadow dkimpy.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import dkim as dkimpy
import dkim.crypto as dkimpy_crypto

from services.common.return_path import ReturnPaths
from services.common.tracking import TrackingLinks
from services.delivery import dkim, dkim_openssl
from services.delivery.message import MessageTemplate, Recipient

SECRET = "bench-secret"
DOMAIN = "example.com"
SELECTOR = "s1"


def campaign_template(content: Mapping[str, Any]) -> MessageTemplate:
    """The template of `content` (an email snapshot) in campaign 7 of https://herald.test, signed with SECRET."""
    return MessageTemplate(
        content,
        campaign_id=7,
        campaign_name="News",
        links=TrackingLinks("https://herald.test", SECRET),
        return_paths=ReturnPaths("bounces.herald.test", SECRET),
        public_url="https://herald.test",
    )


def template() -> MessageTemplate:
    """An email with both parts, open and link tracking and a personalized subject (~3.2 KB rendered)."""
    html = "".join(
        f'<p>Dear %Subscriber:FirstName%, paragraph {n} with <a href="https://shop.example/item/{n}">a link</a>.</p>'
        for n in range(12)
    )
    content = {
        "email_id": 1,
        "subject": "News for {{ Subscriber:FirstName }}",
        "preheader_text": "",
        "from_name": "Herald News",
        "from_email": f"news@{DOMAIN}",
        "reply_to_name": "Desk",
        "reply_to_email": f"desk@{DOMAIN}",
        "html": f'<html><body>{html}<a href="{{{{ Link:Unsubscribe }}}}">unsubscribe</a></body></html>',
        "plain": "Dear {{ Subscriber:FirstName }}\nRead on the web.\nUnsubscribe: {{ Link:Unsubscribe }}",
        "content_type": "Both",
        "open_tracking": True,
        "link_tracking": True,
        "utm": {"enabled": False},
    }
    return campaign_template(content)


def pure_dkimpy(private_pem: bytes) -> Callable[[bytes], bytes]:
    """Signing as dkimpy alone does it: the PEM parsed and the RSA computed in Python on every message.

    A plain `bytes` PEM is what makes services/delivery/dkim.py's OpenSSL step step aside, so this is
    dkimpy's own path whether or not that step is installed.
    """
    plain = bytes(private_pem)

    def sign(message: bytes) -> bytes:
        parsed = dkimpy.DKIM(message, linesep=b"\r\n")
        present = {name.lower() for name, _ in parsed.headers}
        covered = [name for name in dkim.SIGNED_HEADERS if name in present] + list(dkim.OVERSIGNED_HEADERS)
        signature: bytes = parsed.sign(
            SELECTOR.encode(),
            DOMAIN.encode(),
            plain,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=covered,
        )
        return signature + message

    return sign


def pure_rsa(private_pem: bytes) -> Callable[[Any], object]:
    """dkimpy's step as it runs on each message without Herald: the PEM parsed, then RSA in Python."""
    plain = bytes(private_pem)
    return lambda hashed: dkimpy_crypto.RSASSA_PKCS1_v1_5_sign(hashed, dkimpy_crypto.parse_pem_private_key(plain))


def openssl_rsa(private_pem: bytes) -> Callable[[Any], object]:
    """Herald's step on each message: the key prepared once, the signature by OpenSSL."""
    prepared = dkimpy.parse_pem_private_key(dkim_openssl.prepared_pem(private_pem))
    assert isinstance(prepared, dkim_openssl.PreparedKey), "the OpenSSL step did not take the key"
    return lambda hashed: dkim_openssl.rsassa_signature(hashed, prepared)


def rsa_ms(sign: Callable[[Any], object], count: int) -> float:
    """ms of process CPU time per signature of a SHA-256 digest, best of three passes."""
    digests = [hashlib.sha256(str(n).encode()) for n in range(count)]
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for hashed in digests:
            sign(hashed)
        best = min(best, (time.process_time() - started) / count * 1000)
    return best


def cpu_ms_per_message(
    work: Callable[[bytes], bytes], email: MessageTemplate, recipients: list[Recipient], repeats: int
) -> float:
    """The best of `repeats` passes over the recipients, in ms of process CPU time per message."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for recipient in recipients:
            work(email.render(recipient).data)
        best = min(best, (time.process_time() - started) / len(recipients) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    email = template()
    recipients = [
        Recipient(n, f"person{n}@recipient.example", f"Ada{n}", "Lovelace", 1000 + n, 3, None, None)
        for n in range(1, args.messages + 1)
    ]
    pair = dkim.generate_key_pair()
    started = time.process_time()
    signer, _ = dkim.opened_signer(
        [dkim.SealedKey(1, DOMAIN, SELECTOR, dkim.KeySeal(SECRET).seal(pair.private_pem, 1, DOMAIN))],
        dkim.KeySeal(SECRET),
    )
    opened_ms = (time.process_time() - started) * 1000
    size = len(signer.sign(email.render(recipients[0]).data))

    phases: list[tuple[str, Callable[[bytes], bytes]]] = [
        ("rendering alone", lambda message: message),
        ("rendering + dkimpy, pure Python", pure_dkimpy(pair.private_pem)),
        ("rendering + Herald's Signer", signer.sign),
    ]
    print(
        f"dkimpy {dkimpy_version()}, {args.messages} messages of {size / 1000:.1f} KB signed (rsa-sha256, "
        f"RSA {dkim.KEY_BITS}), best of {args.repeats}; load average before "
        + " ".join(f"{load:.2f}" for load in os.getloadavg())
    )
    figures = {name: cpu_ms_per_message(work, email, recipients, args.repeats) for name, work in phases}
    rendering = figures["rendering alone"]
    for name, figure in figures.items():
        signing = "" if name == "rendering alone" else f"   signing {figure - rendering:7.3f} ms"
        print(f"{name:<34} CPU {figure:7.3f} ms/message{signing}   ≈ {1000 / figure:8,.0f} messages/s/core")
    print(f"opening the run's key (unseal + parse, once per run): {opened_ms:.2f} ms")
    print(
        "the RSA signature alone, per message: dkimpy (PEM parse + pure Python) "
        f"{rsa_ms(pure_rsa(pair.private_pem), args.messages):.3f} ms, "
        f"OpenSSL {rsa_ms(openssl_rsa(pair.private_pem), args.messages):.3f} ms"
    )
    print("load average after " + " ".join(f"{load:.2f}" for load in os.getloadavg()))


def dkimpy_version() -> str:
    from importlib.metadata import version

    return version("dkimpy")


if __name__ == "__main__":
    main()
