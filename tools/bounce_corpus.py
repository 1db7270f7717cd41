"""Regenerates the MTA part of tests/bounce_corpus/: real bounce messages (DSNs) made here by real MTAs, with their
expected classification.

    sudo .venv/bin/python tools/bounce_corpus.py [--mta postfix|exim|opensmtpd|sendmail|courier ...] [--keep]

Run by hand (as root, a minute or two), not by `make test`. It unpacks Postfix, Exim, OpenSMTPD, Sendmail
and Courier from their Debian packages (bench/postfix.py's `apt-get download` + `dpkg -x`; nothing is
installed) and runs, all on loopback ports in a temporary directory:

- the *senders*: a private Postfix, Exim, OpenSMTPD, Sendmail and Courier (tools/corpus_mtas.py,
  tools/corpus_more_mtas.py), into whose SMTP servers each scenario's campaign message is injected with
  a signed VERP return path (services/common/return_path.py) as MAIL FROM;
- *Postfix MX*: a second private Postfix, the MX of postfix-mx.example.test, which refuses unknown
  users, relaying and big messages in its own words;
- *the scripted upstream*: an aiosmtpd server answering each recipient with the reply its scenario
  chose (mailbox full, greylisting, blocklists...), answers written here;
- *the collector*: an aiosmtpd server for the bounce domain that keeps whatever arrives.

The senders generate the DSNs themselves (delay warnings, expiry, multi-recipient reports); the tool
checks each against its scenario's expectation, then writes the messages byte for byte as received
(tests/bounce_corpus/<mta>/<name>.eml) and tests/bounce_corpus/manifest.json. The scenarios and the
expected kinds are in tools/bounce_scenarios.py and tools/bounce_scenarios_more.py; docs/bounces.md
("The bounce corpus") explains them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.postfix import free_port
from services.common.return_path import ReturnPaths
from tools import corpus_manifest
from tools.bounce_scenarios import (
    BOUNCE_DOMAIN,
    CAMPAIGN_IDS,
    DOWN_DOMAIN,
    EXIM_LOCAL_DOMAIN,
    LOCAL_DOMAIN,
    POSTFIX_MX_DOMAIN,
    RELAY_ONLY_DOMAIN,
    SECRET,
    TIMING,
    UPSTREAM_DOMAINS,
    Notice,
    Reply,
    Scenario,
)
from tools.bounce_scenarios_more import scenarios_for
from tools.corpus_more_mtas import (
    PrivateCourier,
    PrivateOpenSmtpd,
    PrivateSendmail,
    courier_package,
    opensmtpd_package,
    sendmail_packages,
)
from tools.corpus_mtas import PrivateExim, PrivatePostfix, exim_package, package_version, postfix_package

ROOT, CORPUS = corpus_manifest.ROOT, corpus_manifest.CORPUS
MTAS = ("postfix", "exim", "opensmtpd", "sendmail", "courier")
Sender = PrivatePostfix | PrivateExim | PrivateOpenSmtpd | PrivateSendmail | PrivateCourier


@dataclass
class Arrival:
    """One message the collector or the upstream accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes


class _Collector:
    """aiosmtpd handler keeping every message for the bounce domain."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        # aiosmtpd keeps the null reverse-path as "<>"; the manifest writes it as the empty address.
        mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        self.arrivals.append(Arrival(mail_from, list(envelope.rcpt_tos), content))
        return "250 2.0.0 Kept"


@dataclass
class _Upstream:
    """aiosmtpd handler answering each recipient with its scenario's reply; others are accepted."""

    replies: dict[str, Reply]
    first_seen: dict[str, float] = field(default_factory=dict)
    accepted: list[Arrival] = field(default_factory=list)

    def _reply(self, address: str, stage: str) -> str | None:
        reply = self.replies.get(address.lower())
        if reply is None or reply.stage != stage:
            return None
        first = self.first_seen.setdefault(address.lower(), time.monotonic())
        if reply.for_seconds is not None and time.monotonic() - first >= reply.for_seconds:
            return None
        return reply.text.format(rcpt=address)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        answer = self._reply(address, "rcpt")
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        for address in envelope.rcpt_tos:
            answer = self._reply(address, "data")
            if answer is not None:
                return answer
        self.accepted.append(Arrival(envelope.mail_from or "", list(envelope.rcpt_tos), b""))
        return "250 2.0.0 Delivered"


def campaign_message(
    return_paths: ReturnPaths, campaign_id: int, recipient_id: int, to: list[str], pad: int
) -> bytes:
    """A campaign message shaped like Herald's (services/delivery/message.py), `pad` bytes of text longer."""
    token = return_paths.token(campaign_id, recipient_id)
    greeting = "Hello,\n\nour winter collection is here: warm coats, warm prices.\n"
    filler = "".join(f"Item {n}: a warm coat in the colour of your choice.\n" for n in range(pad // 40 + 1))
    message = EmailMessage()
    message["From"] = '"Herald Shop" <news@shop.example.test>'
    message["X-Herald-Campaign"] = str(campaign_id)
    message["X-Herald-Token"] = token
    message["To"] = ", ".join(to)
    message["Subject"] = "Our winter collection"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = f"<{campaign_id}.{recipient_id}.corpus@shop.example.test>"
    message["List-Unsubscribe"] = f"<https://herald.example.test/u/{token}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(greeting + filler[:pad])
    message.add_alternative(f"<p>{greeting}</p>", subtype="html")
    return message.as_bytes(policy=policy.SMTP)


async def _serve(handler: object, hostname: str) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname=hostname, ident="corpus"), "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


def delivery_status(message: Message) -> list[Message]:
    """The per-recipient field blocks of a DSN's message/delivery-status part ([] when it has none)."""
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            return (
                [block for block in blocks[1:] if isinstance(block, Message)] if isinstance(blocks, list) else []
            )
    return []


def reply_code(diagnostic: str) -> int:
    """The SMTP reply code of a Diagnostic-Code field ("smtp; 550 5.1.1 ..." -> 550), 0 when it names none."""
    kind, _, text = diagnostic.partition(";")
    words = text.split()
    if kind.strip().lower() == "smtp" and words and len(words[0]) == 3 and words[0].isdigit():
        return int(words[0])
    return 0


def human_text(message: Message) -> str:
    """The text/plain parts of a report before its delivery-status part (not the returned original)."""
    texts = []
    for part in message.walk():
        if part.get_content_type() in ("message/delivery-status", "message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            texts.append(payload.decode("utf-8", "replace") if isinstance(payload, bytes) else "")
    return "\n".join(texts)


def text_reply(message: Message, address: str) -> str:
    """What the human-readable part says about `address` on its line ("<address>: 550 5.1.1 ..."), as
    OpenSMTPD writes the remote server's reply; "" when no line starts with the address."""
    line = re.search(rf"(?im)^[ \t]*<?{re.escape(address)}>?:[ \t]*(\S.*)$", human_text(message))
    return " ".join(line.group(1).split()) if line is not None else ""


def observed(message: Message) -> list[dict[str, Any]]:
    """Per recipient of a DSN: address, action, status, reply code and diagnostic, as the MTA wrote them.

    A report without Diagnostic-Code may quote the reply in its text (`text_reply`); its code counts then."""
    found = []
    for block in delivery_status(message):
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
        address = str(block.get("Final-Recipient", "")).partition(";")[2].strip()
        quoted = "" if diagnostic else text_reply(message, address)
        leading = re.match(r"([245]\d\d)(?![\d.])", quoted)
        found.append(
            {
                "address": address,
                # The action's first word: Sendmail adds a comment ("relayed (to non-dsn-aware mailer)").
                "action": (str(block.get("Action", "")).lower().split() or [""])[0],
                "status": str(block.get("Status", "")).strip(),
                "reply_code": reply_code(diagnostic) or (int(leading.group(1)) if leading else 0),
                "diagnostic": diagnostic,
                "text_reply": quoted,
            }
        )
    return found


def _matches(notice: Notice, found: list[dict[str, Any]]) -> bool:
    expected = {(e.address.lower(), notice.action, e.status, e.reply_code) for e in notice.recipients}
    got = {(f["address"].lower(), f["action"], f["status"], f["reply_code"]) for f in found}
    return expected == got


@dataclass
class _Result:
    mta: str
    scenario: Scenario
    notices: list[tuple[Notice, Arrival, list[dict[str, Any]]]]


def _settle(mta: str, scenario: Scenario, dsns: list[tuple[Arrival, list[dict[str, Any]]]]) -> _Result | None:
    """The first of the scenario's outcomes whose every notice arrived, with the DSN that fits each."""
    for outcome in scenario.outcomes:
        picked: list[tuple[Notice, Arrival, list[dict[str, Any]]]] = []
        for notice in outcome:
            fit = next(((a, f) for a, f in dsns if _matches(notice, f)), None)
            if fit is None:
                break
            picked.append((notice, *fit))
        else:
            return _Result(mta, scenario, picked)
    return None


class CorpusRun:
    """Everything one regeneration runs: upstreams, collector, the senders; then the check and the files."""

    def __init__(self, mtas: list[str], workdir: Path) -> None:
        self.mtas, self.workdir = mtas, workdir
        self.return_paths = ReturnPaths(BOUNCE_DOMAIN, SECRET)
        self.scenarios = {mta: scenarios_for(mta) for mta in mtas}
        self.collector = _Collector()
        self.upstream = _Upstream(
            {address.lower(): reply for mta in mtas for s in self.scenarios[mta] for address, reply in s.replies}
        )
        self.versions: dict[str, str] = {}
        self.senders: dict[str, Sender] = {}
        self.postfix_mx: PrivatePostfix | None = None

    def _routes(self, upstreams: dict[str, int], collector: int) -> dict[str, int]:
        assert self.postfix_mx is not None
        routes = {BOUNCE_DOMAIN: collector, POSTFIX_MX_DOMAIN: self.postfix_mx.port, **upstreams}
        routes[RELAY_ONLY_DOMAIN] = self.postfix_mx.port
        routes[DOWN_DOMAIN] = free_port()  # nothing listens there: connection refused
        return routes

    def _start_mtas(self, upstreams: dict[str, int], collector: int) -> None:
        self.postfix_mx = PrivatePostfix(
            postfix_package(),
            self.workdir / "postfix-mx",
            name="postfix-mx",
            port=free_port(),
            settings={
                "myhostname": "mx.postfix-mx.example.test",
                "mydestination": POSTFIX_MX_DOMAIN,
                "local_recipient_maps": "inline:{reader=ok}",
                "local_transport": "discard:",
                "mynetworks": "192.0.2.0/24",
                "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
                "message_size_limit": "20000",
                "header_size_limit": "10240",
            },
        )
        self.postfix_mx.start()
        routes = self._routes(upstreams, collector)
        for mta in self.mtas:
            sender, self.versions[mta] = self._sender(mta, routes)
            self.senders[mta] = sender  # before it starts: stopped whatever happens next
            sender.start()

    def _sender(self, mta: str, routes: dict[str, int]) -> tuple[Sender, str]:
        """The private `mta` that sends the scenarios' messages, and its version as the manifest names it."""
        workdir, port, timing = self.workdir / mta, free_port(), TIMING
        if mta == "postfix":
            postfix = postfix_package()
            sender = PrivatePostfix(
                postfix,
                workdir,
                name="postfix-sender",
                port=port,
                settings={
                    "myhostname": "mta.sender.example.test",
                    "mydestination": LOCAL_DOMAIN,
                    # Empty: smtpd accepts every local address and local(8) bounces the unknown ones.
                    "local_recipient_maps": "",
                    "transport_maps": "inline:{"
                    + ", ".join(f"{d}=smtp:[127.0.0.1]:{p}" for d, p in routes.items())
                    + "}",
                    "queue_run_delay": timing["retry"],
                    "minimal_backoff_time": timing["retry"],
                    "maximal_backoff_time": timing["retry"],
                    "delay_warning_time": timing["delay_warning"],
                    "maximal_queue_lifetime": timing["lifetime"],
                    "bounce_queue_lifetime": timing["lifetime"],
                },
            )
            return sender, f"Postfix {sender.version()} (Debian postfix {package_version(postfix, 'postfix')})"
        if mta == "exim":
            exim = exim_package()
            sender_exim = PrivateExim(
                exim,
                workdir,
                hostname="exim.sender.example.test",
                port=port,
                local_domain=EXIM_LOCAL_DOMAIN,
                routes=routes,
                delay_warning=timing["delay_warning"],
                lifetime=timing["lifetime"],
                retry=timing["retry"],
            )
            debian = package_version(exim, "exim4-daemon-light")
            return sender_exim, f"Exim {sender_exim.version()} (Debian exim4-daemon-light {debian})"
        if mta == "opensmtpd":
            opensmtpd = opensmtpd_package()
            sender_opensmtpd = PrivateOpenSmtpd(
                opensmtpd,
                workdir,
                hostname="opensmtpd.sender.example.test",
                port=port,
                routes=routes,
                delay_warning=timing["delay_warning"],
                lifetime=timing["lifetime"],
            )
            debian = package_version(opensmtpd, "opensmtpd")
            return sender_opensmtpd, f"OpenSMTPD {sender_opensmtpd.version()} (Debian opensmtpd {debian})"
        if mta == "courier":
            courier = courier_package()
            sender_courier = PrivateCourier(
                courier,
                workdir,
                hostname="courier.sender.example.test",
                port=port,
                routes=routes,
                delay_warning=timing["delay_warning"],
                lifetime=timing["lifetime"],
                retry=timing["retry"],
            )
            debian = package_version(courier, "courier-mta")
            return sender_courier, f"Courier {sender_courier.version()} (Debian courier-mta {debian})"
        packages = sendmail_packages()
        sender_sendmail = PrivateSendmail(
            packages,
            workdir,
            hostname="sendmail.sender.example.test",
            port=port,
            routes=routes,
            delay_warning=timing["delay_warning"],
            lifetime=timing["lifetime"],
            retry=timing["retry"],
        )
        debian = package_version(packages[0], "sendmail-bin")
        return sender_sendmail, f"Sendmail {sender_sendmail.version()} (Debian sendmail-bin {debian})"

    async def _inject(self) -> None:
        for mta in self.mtas:
            port = self.senders[mta].port
            for scenario in self.scenarios[mta]:
                campaign, recipient = CAMPAIGN_IDS[mta], scenario.recipient_id
                mail_from = self.return_paths.address(campaign, recipient)
                content = campaign_message(
                    self.return_paths, campaign, recipient, list(scenario.recipients), scenario.pad
                )
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False) as client:
                    errors, _ = await client.sendmail(
                        mail_from,
                        list(scenario.recipients),
                        content,
                        mail_options=list(scenario.mail_options),
                        rcpt_options=list(scenario.rcpt_options),
                    )
                if errors:
                    raise RuntimeError(f"{mta} refused {scenario.name} at SMTP time: {errors}")

    def _dsns_for(self, mta: str, scenario: Scenario) -> list[tuple[Arrival, list[dict[str, Any]]]]:
        wanted = self.return_paths.address(CAMPAIGN_IDS[mta], scenario.recipient_id).lower()
        return [
            (arrival, observed(message_from_bytes(arrival.content)))
            for arrival in self.collector.arrivals
            if [r.lower() for r in arrival.rcpt_tos] == [wanted]
        ]

    def _results(self) -> tuple[list[_Result], list[str]]:
        results, missing = [], []
        for mta in self.mtas:
            for scenario in self.scenarios[mta]:
                result = _settle(mta, scenario, self._dsns_for(mta, scenario))
                if result is None:
                    missing.append(f"{mta}/{scenario.name}")
                else:
                    results.append(result)
        return results, missing

    async def run(self, patience: float) -> list[_Result]:
        collector_server, collector = await _serve(self.collector, f"collector.{BOUNCE_DOMAIN}")
        servers, upstreams = [collector_server], {}
        for domain in UPSTREAM_DOMAINS:
            server, upstreams[domain] = await _serve(self.upstream, f"mx.{domain}")
            servers.append(server)
        try:
            await asyncio.to_thread(self._start_mtas, upstreams, collector)
            await self._inject()
            deadline = time.monotonic() + patience
            while True:
                results, missing = self._results()
                if not missing:
                    break
                if time.monotonic() > deadline:
                    self._explain(missing)
                    raise SystemExit(f"no DSN fitting the scenario arrived for: {', '.join(missing)}")
                await asyncio.sleep(1)
            await asyncio.sleep(5)  # a late DSN nobody expected (a second delay warning) shows below
            results = self._results()[0]
            used = {id(arrival) for result in results for _, arrival, _ in result.notices}
            unexpected = [a for a in self.collector.arrivals if id(a) not in used]
            if unexpected:
                self._explain([])
                for arrival in unexpected:
                    print(f"unexpected DSN to {arrival.rcpt_tos}:", file=sys.stderr)
                    print(json.dumps(observed(message_from_bytes(arrival.content)), indent=1), file=sys.stderr)
                raise SystemExit(f"{len(unexpected)} DSNs arrived that no scenario expects")
            return results
        finally:
            for sender in self.senders.values():
                sender.stop()
            if self.postfix_mx is not None:
                self.postfix_mx.stop()
            for server in servers:
                server.close()

    def _explain(self, missing: list[str]) -> None:
        for mta in self.mtas:
            for scenario in self.scenarios[mta]:
                if f"{mta}/{scenario.name}" in missing:
                    print(f"--- {mta}/{scenario.name}: what arrived", file=sys.stderr)
                    for _, found in self._dsns_for(mta, scenario):
                        print(json.dumps(found, indent=1), file=sys.stderr)
        for mta, sender in self.senders.items():
            (self.workdir / f"{mta}.log").write_text(sender.log())
        print(f"logs in {self.workdir}", file=sys.stderr)


def manifest_entry(version: str, result: _Result, notice: Notice, arrival: Arrival) -> dict[str, Any]:
    mta, scenario = result.mta, result.scenario
    message = message_from_bytes(arrival.content)
    found = {f["address"].lower(): f for f in observed(message)}
    paths = ReturnPaths(BOUNCE_DOMAIN, SECRET)
    return {
        "file": f"{mta}/{scenario.file_name(notice)}",
        "origin": mta,
        "mta": mta,
        "source": version,
        "scenario": scenario.name,
        "description": scenario.description + (f" {notice.description}" if notice.description else ""),
        "report_type": "delivery-status",
        "content_type": message.get_content_type(),
        "envelope": {"mail_from": arrival.mail_from, "rcpt_to": arrival.rcpt_tos[0]},
        "return_path": {
            "address": paths.address(CAMPAIGN_IDS[mta], scenario.recipient_id),
            "campaign_id": CAMPAIGN_IDS[mta],
            "recipient_id": scenario.recipient_id,
            "recipient": scenario.recipients[0],
        },
        "recipients": [
            {
                "address": e.address,
                "action": notice.action,
                "kind": e.kind,
                "status": e.status,
                "enhanced_code": e.enhanced_code,
                "reply_code": e.reply_code,
                "diagnostic": found[e.address.lower()]["diagnostic"],
                "text_reply": found[e.address.lower()]["text_reply"],
            }
            for e in notice.recipients
        ],
    }


def write_corpus(versions: dict[str, str], results: list[_Result], mtas: list[str]) -> int:
    """Writes the messages and the manifest; the entries of MTAs not run this time (and the built ones) are kept."""
    manifest = corpus_manifest.load()
    entries = [m for m in manifest["messages"] if m.get("mta") not in mtas]
    for mta in mtas:
        shutil.rmtree(CORPUS / mta, ignore_errors=True)
        (CORPUS / mta).mkdir(parents=True)
    for result in results:
        for notice, arrival, _ in result.notices:
            entry = manifest_entry(versions[result.mta], result, notice, arrival)
            (CORPUS / entry["file"]).write_bytes(arrival.content)
            entries.append(entry)
    manifest["messages"] = entries
    corpus_manifest.save(manifest)
    return sum(len(r.notices) for r in results)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mta", action="append", choices=MTAS, help="only these senders (default: all five)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configurations, logs)")
    parser.add_argument("--patience", type=float, default=180.0, help="seconds to wait for the DSNs")
    args = parser.parse_args(argv)
    mtas = args.mta or list(MTAS)
    if os.geteuid() != 0:
        parser.error("run it as root: the MTAs switch to their own users, and some run in private namespaces")
    workdir = Path(tempfile.mkdtemp(prefix="herald-bounce-corpus-"))
    workdir.chmod(0o755)  # the MTAs' unprivileged users must reach their directories inside
    try:
        run = CorpusRun(mtas, workdir)
        results = asyncio.run(run.run(args.patience))
        count = write_corpus(run.versions, results, mtas)
        for mta in mtas:
            print(f"{run.versions[mta]}: {sum(len(r.notices) for r in results if r.mta == mta)} messages")
        print(f"{count} messages written to {CORPUS.relative_to(ROOT)}")
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
