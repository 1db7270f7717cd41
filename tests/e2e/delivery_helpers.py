"""Helpers for the end-to-end delivery tests: an SMTP recorder, audience/content/campaign builders over the legacy API, and waits.

The recorder is the mail server Herald sends to in these tests. It keeps every accepted message
by recipient, so a test checks at the server that nobody got two messages and nobody is missing,
and it can be told to answer 4xx or 5xx for chosen recipients and attempts, or to answer slowly.
A message counts as received only when the recorder answers 250 to its content on a connection
that is still open, as a real server would.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import subprocess
import sys
import time
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil
import psycopg
from aiosmtpd.smtp import SMTP, Envelope, Session
from herald.delivery.v1 import delivery_pb2, delivery_pb2_grpc

from services.common.embedded import EmbeddedNats
from tests.conftest import (
    ROOT,
    Admin,
    Api,
    Backing,
    System,
    User,
    database_url_named,
    free_port,
    grpc_metadata,
    herald_env,
    stop_process,
    wait_healthy,
)
from translator.identity import IdentityStore

SUBSCRIBED_IP = "203.0.113.7"
SENDER = "news@herald.example"


# --- the SMTP recorder ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One message the recorder accepted: its envelope, content and when it was accepted (monotonic clock)."""

    recipient: str
    sender: str
    raw: bytes
    accepted_at: float

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def header(self, name: str) -> str:
        value = self.message.get(name)
        return "" if value is None else str(value)

    def text(self) -> str:
        """Every text part of the message, decoded and joined."""
        parts = [
            part.get_content()
            for part in self.message.walk()
            if part.get_content_maintype() == "text" and not part.is_multipart()
        ]
        return "\n".join(str(part) for part in parts)


@dataclass
class _Rule:
    """Answer `reply` to RCPT TO for `address` on its first `attempts` attempts (every attempt when None)."""

    reply: str
    attempts: int | None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


@dataclass
class SmtpRecorder:
    """An aiosmtpd server in the test process; see the module docstring."""

    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    # RCPT TO commands seen per address (lower-cased): one per delivery attempt.
    attempts: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    _rules: dict[str, _Rule] = field(default_factory=dict)
    _delays: dict[str, float] = field(default_factory=dict)
    # Greylisted domains: (seconds, reply); when each address was first seen (monotonic clock).
    _greylists: dict[str, tuple[float, str]] = field(default_factory=dict)
    _first_seen: dict[str, float] = field(default_factory=dict)
    _throttles: dict[str, tuple[float, str]] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # The sessions not yet garbage: the open ones among them are cut by kill().
    _live: weakref.WeakSet[SMTP] = field(default_factory=weakref.WeakSet)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def kill(self) -> None:
        """The server dies, as a crashed relay does: it stops listening and every open session is cut at once
        (a message whose content arrived but was not answered yet is not kept). `start()` brings it back on
        the same port."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._cut_sessions()
        # A connection accepted just before the server closed gets its session a moment later: cut it too.
        asyncio.get_running_loop().call_soon(self._cut_sessions)

    def _cut_sessions(self) -> None:
        for smtp in list(self._live):
            if smtp.transport is not None:
                smtp.transport.abort()

    def _protocol(self) -> SMTP:
        self.sessions += 1
        smtp = SMTP(_Handler(self), hostname="recorder.test", ident="Herald test recorder", enable_SMTPUTF8=True)
        self._live.add(smtp)
        return smtp

    # --- what tests tell the server ---

    def answer(self, addresses: Iterable[str], reply: str, *, attempts: int | None = None) -> None:
        """RCPT TO for these addresses answers `reply` (e.g. "451 4.3.0 Try later") on the first `attempts` attempts."""
        for address in addresses:
            self._rules[address.lower()] = _Rule(reply, attempts)

    def accept(self, addresses: Iterable[str]) -> None:
        """These addresses are accepted again."""
        for address in addresses:
            self._rules.pop(address.lower(), None)

    def greylist(
        self, domain: str, seconds: float, reply: str = "450 4.2.0 Recipient address rejected: Greylisted"
    ) -> None:
        """Greylisting, as Postfix with postgrey answers: RCPT TO for an address of `domain` answers `reply` until
        `seconds` have passed since the address was first seen, then it is accepted."""
        self._greylists[domain.lower()] = (seconds, reply)

    def throttle(
        self, domain: str, seconds: float, reply: str = "451 4.7.0 Too many connections, try again later"
    ) -> None:
        """A provider's rate limit: RCPT TO for every address of `domain` answers `reply` until `seconds` have passed
        since the domain was first contacted."""
        self._throttles[domain.lower()] = (seconds, reply)

    def slow_down(self, domain: str, seconds: float) -> None:
        """Every message to `domain` is answered `seconds` after its content arrived."""
        self._delays[domain.lower()] = seconds

    # --- what tests read ---

    def messages_to(self, domain: str) -> list[Received]:
        """Accepted messages to addresses of `domain`, in acceptance order."""
        wanted = domain.lower()
        return [message for message in self.received if _domain(message.recipient) == wanted]

    def counts(self, domain: str) -> Counter[str]:
        """Accepted messages per recipient address (lower-cased) of `domain`."""
        return Counter(message.recipient.lower() for message in self.messages_to(domain))

    async def wait_for(self, domain: str, count: int, within: float) -> int:
        """Waits until at least `count` messages to `domain` were accepted; returns how many were."""
        deadline = time.monotonic() + within
        while True:
            got = len(self.messages_to(domain))
            if got >= count or time.monotonic() > deadline:
                return got
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                pass

    # --- called by the handler ---

    def _rcpt_reply(self, address: str) -> str | None:
        key = address.lower()
        self.attempts[key] += 1
        throttle = self._throttles.get(_domain(key))
        if throttle is not None:
            first = self._first_seen.setdefault(_domain(key), time.monotonic())
            if time.monotonic() - first < throttle[0]:
                return throttle[1]
        greylist = self._greylists.get(_domain(key))
        if greylist is not None:
            first = self._first_seen.setdefault(key, time.monotonic())
            if time.monotonic() - first < greylist[0]:
                return greylist[1]
        rule = self._rules.get(key)
        if rule is None or (rule.attempts is not None and self.attempts[key] > rule.attempts):
            return None
        return rule.reply

    def _delay(self, recipients: Sequence[str]) -> float:
        return max((self._delays.get(_domain(address), 0.0) for address in recipients), default=0.0)

    def _record(self, envelope: Envelope) -> None:
        now = time.monotonic()
        for recipient in envelope.rcpt_tos:
            self.received.append(
                Received(recipient, envelope.mail_from or "", envelope.original_content or b"", now)
            )
        self._arrived.set()


class _Handler:
    """aiosmtpd hooks: the recorder's rules at RCPT TO, its delay and bookkeeping at DATA."""

    def __init__(self, recorder: SmtpRecorder) -> None:
        self.recorder = recorder

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.recorder._rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        delay = self.recorder._delay(envelope.rcpt_tos)
        if delay:
            await asyncio.sleep(delay)
        # A client that hung up before the answer did not get its message accepted.
        if server.transport is None or server.transport.is_closing():
            return "451 4.4.2 Connection lost before the message was accepted"
        self.recorder._record(envelope)
        return "250 2.0.0 OK: recorded"


def assert_each_received_once(recorder: SmtpRecorder, domain: str, addresses: Iterable[str]) -> None:
    """Exactly one message per address of `domain`, and nothing for anyone else of the domain."""
    counts = recorder.counts(domain)
    expected = {address.lower() for address in addresses}
    twice = sorted(address for address, count in counts.items() if count > 1)
    missing = sorted(expected - set(counts))
    unexpected = sorted(set(counts) - expected)
    assert not twice, f"{len(twice)} recipients got more than one message: {twice[:10]}"
    assert not missing, f"{len(missing)} recipients got nothing: {missing[:10]}"
    assert not unexpected, f"{len(unexpected)} addresses got mail they should not: {unexpected[:10]}"


def assert_nobody_twice(recorder: SmtpRecorder, domain: str) -> None:
    twice = sorted(address for address, count in recorder.counts(domain).items() if count > 1)
    assert not twice, f"{len(twice)} recipients got more than one message: {twice[:10]}"


# --- audience, content and campaigns through the legacy API ---------------------------------------------------


@dataclass(frozen=True)
class Person:
    email: str
    first_name: str


def people(count: int, domain: str, *, start: int = 0) -> list[Person]:
    """`count` subscribers r<n>@<domain>, each with their own first name."""
    return [Person(f"r{n}@{domain}", f"Name{n}") for n in range(start, start + count)]


def new_domain() -> str:
    """A recipient domain of its own for one test, so counts at the recorder never mix tests."""
    return f"d{uuid.uuid4().hex[:10]}.example"


async def ok(api: Api, command: str, key: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = await api.call(command, key, **params)
    assert body["Success"] is True, (command, params, body)
    return body


async def create_list(api: Api, user: User, name: str = "Readers") -> int:
    list_id: int = (await ok(api, "list.create", user.api_key, SubscriberListName=name))["ListID"]
    return list_id


async def import_people(
    api: Api,
    user: User,
    list_id: int,
    subscribers: Sequence[Person],
    *,
    suppress: bool = False,
    within: float = 30,
) -> None:
    """Imports the subscribers with subscribers.import.post (CSV: email, first name) and waits until it completed.

    With `suppress`, the imported addresses also go onto the user's suppression list.
    """
    data = "".join(f"{person.email},{person.first_name}\n" for person in subscribers)
    body = {
        "Command": "subscribers.import.post",
        "APIKey": user.api_key,
        "ListID": list_id,
        "AddToGlobalSuppressionList": suppress,
        "AddToSuppressionList": False,
        "UpdateDuplicates": False,
        "TriggerActions": False,
        "Tags": [],
        "ImportFrom": {
            "CSV": {
                "Data": data,
                "FieldTerminator": ",",
                "EscapedBy": '"',
                "MappedFields": {"FIELD1": "EmailAddress", "FIELD2": "FirstName"},
            }
        },
    }
    status, answer = await api.post(body)
    assert status == 200 and "ImportID" in answer, answer
    import_id = answer["ImportID"]

    async def finished() -> dict[str, Any] | None:
        job = await ok(api, "subscribers.import.get", user.api_key, ListID=list_id, ImportID=import_id)
        state: dict[str, Any] = job["ImportJob"]
        return state if state["ImportStatus"] in ("Completed", "Failed") else None

    job = await eventually(finished, within=within)
    assert job is not None and job["ImportStatus"] == "Completed", job
    assert job["TotalImported"] == len(subscribers), job


async def unsubscribe(api: Api, list_id: int, address: str) -> None:
    status, body = await api.post(
        {
            "Command": "subscriber.unsubscribe",
            "ListID": list_id,
            "EmailAddress": address,
            "IPAddress": SUBSCRIBED_IP,
        }
    )
    assert status == 200 and body["Success"] is True, body


SUBJECT = 'Hello {{ Subscriber:FirstName | "friend" }}'
HTML = (
    "<html><body><p>Dear %Subscriber:FirstName%,</p><p>news of the week.</p>"
    '<a href="{{ Link:Unsubscribe }}">Unsubscribe</a></body></html>'
)
PLAIN = "Dear {{ Subscriber:FirstName }},\nnews of the week.\nUnsubscribe: {{ Link:Unsubscribe }}"


async def create_email(
    api: Api,
    user: User,
    *,
    subject: str = SUBJECT,
    html: str = HTML,
    plain: str = PLAIN,
    name: str = "Weekly",
    sender: str = SENDER,
) -> int:
    email_id: int = (await ok(api, "email.create", user.api_key))["EmailID"]
    await ok(
        api,
        "email.update",
        user.api_key,
        EmailID=email_id,
        ValidateScope="Campaign",
        EmailName=name,
        Subject=subject,
        FromName="Herald News",
        FromEmail=sender,
        HTMLContent=html,
        PlainContent=plain,
    )
    return email_id


async def create_campaign(
    api: Api,
    user: User,
    email_id: int | None,
    list_ids: Sequence[int],
    *,
    name: str = "Delivery",
    variations: Sequence[tuple[int, int]] = (),
) -> int:
    """A Draft with content, the lists as its audience and an Immediate schedule (optionally A/B variations;
    with them `email_id` may be None: the variations are the content)."""
    campaign_id: int = (await ok(api, "campaign.create", user.api_key, CampaignName=name))["CampaignID"]
    params: dict[str, Any] = {
        "RecipientListsAndSegments": ",".join(f"{list_id}:0" for list_id in list_ids),
        "ScheduleType": "Immediate",
    }
    if email_id is not None:
        params["RelEmailID"] = email_id
    if variations:
        params["ABTesting"] = {"Variations": [{"EmailID": e, "Weight": w} for e, w in variations]}
    await ok(api, "campaign.update", user.api_key, CampaignID=campaign_id, **params)
    return campaign_id


async def send(api: Api, user: User, campaign_id: int) -> None:
    """Draft → Ready; the schedule is Immediate, so the picker starts it."""
    await ok(api, "campaign.update", user.api_key, CampaignID=campaign_id, CampaignStatus="Ready")


async def audience(
    herald: DeliveryHerald, user: User, count: int, *, list_name: str = "Readers"
) -> tuple[str, list[Person], int]:
    """A list of `count` subscribers on a domain of their own: (domain, subscribers, list id)."""
    domain = new_domain()
    subscribers = people(count, domain)
    list_id = await create_list(herald.api, user, list_name)
    await import_people(herald.api, user, list_id, subscribers)
    return domain, subscribers, list_id


async def started_campaign(
    herald: DeliveryHerald, user: User, list_ids: list[int], *, name: str, sender: str = SENDER
) -> int:
    """A new campaign with the default email (From `sender`) to the lists, set Ready (Immediate): the picker
    starts it."""
    email_id = await create_email(herald.api, user, sender=sender)
    campaign_id = await create_campaign(herald.api, user, email_id, list_ids, name=name)
    await send(herald.api, user, campaign_id)
    return campaign_id


async def campaign_get(api: Api, user: User, campaign_id: int, **flags: Any) -> dict[str, Any]:
    return await ok(api, "campaign.get", user.api_key, CampaignID=campaign_id, RetrieveStatistics=True, **flags)


async def status_of(api: Api, user: User, campaign_id: int) -> str:
    body = await ok(api, "campaign.get", user.api_key, CampaignID=campaign_id)
    status: str = body["Campaign"]["CampaignStatus"]
    return status


async def wait_for_status(api: Api, user: User, campaign_id: int, *statuses: str, within: float = 20) -> str:
    """Polls campaign.get until the campaign has one of `statuses`; fails with the status it has otherwise."""
    seen = ""

    async def reached() -> bool:
        nonlocal seen
        seen = await status_of(api, user, campaign_id)
        return seen in statuses

    await eventually(reached, within=within, interval=0.05)
    assert seen in statuses, f"campaign {campaign_id} is {seen}, not {' or '.join(statuses)} after {within} s"
    return seen


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 10.0, interval: float = 0.1) -> Any:
    """Polls an async check until it returns a truthy value or time runs out; returns its last value."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


# --- the queue as delivery reports it ------------------------------------------------------------------------


async def queued_recipients(
    system: System,
    user: User,
    campaign_id: int,
    state: delivery_pb2.RecipientState.ValueType = delivery_pb2.RECIPIENT_STATE_UNSPECIFIED,
) -> list[delivery_pb2.QueuedRecipient]:
    """Every queue row of the campaign (ListQueuedRecipients, paged), as its owner sees them.

    ListQueuedRecipients is internal (for operators and tests): the token is marked as a Herald process's.
    """
    rows: list[delivery_pb2.QueuedRecipient] = []
    after = 0
    async with grpc.aio.insecure_channel(system.grpc_target("delivery")) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        while True:
            page = await stub.ListQueuedRecipients(
                delivery_pb2.ListQueuedRecipientsRequest(
                    campaign_id=campaign_id, state=state, page_size=500, after_recipient_id=after
                ),
                metadata=grpc_metadata(system, user.user_id, service="tests"),
            )
            rows.extend(page.recipients)
            if not page.recipients:
                return rows
            after = page.recipients[-1].recipient_id


# The counts delivery keeps for a campaign (migrations 0005, 0009) and the same figures counted afresh over its queue
# rows, in one statement, so one snapshot: they agree at any moment, not only once the campaign settled.
_KEPT_AND_COUNTED = """
    SELECT k.total, k.sent, k.failed, k.deferred, k.first_sent_at, k.last_sent_at,
           q.total, q.sent, q.failed, q.deferred, q.first_sent_at, q.last_sent_at
    FROM (SELECT count(*) AS total,
                 count(*) FILTER (WHERE status = 'Sent') AS sent,
                 count(*) FILTER (WHERE status = 'Failed') AS failed,
                 count(*) FILTER (WHERE status = 'Deferred') AS deferred,
                 min(sent_at) FILTER (WHERE status = 'Sent') AS first_sent_at,
                 max(sent_at) FILTER (WHERE status = 'Sent') AS last_sent_at
          FROM delivery.recipients WHERE campaign_id = %(c)s) AS q
    LEFT JOIN delivery.recipient_counts AS k ON k.campaign_id = %(c)s
"""


async def assert_counts_match_queue(system: System, campaign_id: int) -> tuple[int, int, int]:
    """The campaign's kept counts equal a fresh count over its queue rows; returns (rows, Sent, Failed)."""
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        row = await (await conn.execute(_KEPT_AND_COUNTED, {"c": campaign_id})).fetchone()
    assert row is not None
    kept, counted = tuple(row[:6]), tuple(row[6:])
    assert kept == counted, f"campaign {campaign_id}: counts kept {kept}, queue rows say {counted}"
    return int(counted[0]), int(counted[1]), int(counted[2])


# --- a Herald of its own, sending to the recorder -------------------------------------------------------------


@dataclass
class DeliveryHerald:
    """`herald run` on a database and an embedded NATS of its own, sending every message to `recorder`."""

    system: System
    recorder: SmtpRecorder
    # The embedded NATS of its own (None when it was given a NATS_URL, e.g. tests/cluster.py's cluster).
    nats: EmbeddedNats | None
    identity: IdentityStore
    api: Api

    def worker_processes(self) -> list[psutil.Process]:
        """The delivery worker processes `herald run` supervises right now."""
        found = []
        for child in psutil.Process(self.system.process.pid).children(recursive=True):
            try:
                if " ".join(child.cmdline()).endswith("serve delivery-worker"):
                    found.append(child)
            except psutil.Error:
                continue
        return found

    async def new_user(self) -> User:
        created = await self.identity.create_user(
            f"user-{uuid.uuid4().hex[:12]}", "secret-password", permissions=["*"]
        )
        return User(created["UserID"], created["APIKey"], "")

    async def new_admin(self) -> Admin:
        created = await self.identity.create_admin(f"admin-{uuid.uuid4().hex[:12]}", "admin-password")
        return Admin(created["AdminID"], created["AdminAPIKey"])


# Delivery settings of a Herald under test, under whatever the caller passes: few SMTP sessions and small
# batches, so that a slowed-down recorder makes a send last long enough to pause, cancel or crash it midway,
# and a short ack wait, so that a killed worker's batch comes back within seconds.
TEST_DELIVERY_ENV = {
    "HERALD_DELIVERY_WORKERS": "2",
    "HERALD_DELIVERY_BATCH_SIZE": "25",
    "HERALD_DELIVERY_CONCURRENCY": "4",
    "HERALD_DELIVERY_PARALLEL_BATCHES": "2",
    # Deferred recipients retried within seconds, not minutes.
    "HERALD_DELIVERY_RETRY_INTERVALS": "0.5,1",
    "HERALD_DELIVERY_RETRY_LATER_MIN_SECONDS": "1",
    "HERALD_DELIVERY_RETRY_LATER_MAX_SECONDS": "2",
    "HERALD_DELIVERY_RETRY_SWEEP_SECONDS": "1",
    "HERALD_DELIVERY_RETRY_OVERDUE_SECONDS": "10",
    "HERALD_DELIVERY_ACK_WAIT_SECONDS": "3",
    # Audiences of a few hundred are queued in several chunks, as a million would be.
    "HERALD_DELIVERY_QUEUE_CHUNK": "100",
}


@asynccontextmanager
async def delivery_herald(
    backing: Backing,
    tmp: Path,
    extra_env: dict[str, str] | None = None,
    smtp_url: Callable[[str], str] | None = None,
    *,
    nats_url: str | None = None,
) -> AsyncIterator[DeliveryHerald]:
    """Starts the recorder, a NATS (unless `nats_url` names one) and a database of this Herald's own, and
    `herald run` on them.

    Herald runs with TEST_DELIVERY_ENV, overridden by `extra_env`; SMTP_URL is the recorder's URL, or what
    `smtp_url` makes of it (several relays).
    """
    recorder = SmtpRecorder()
    await recorder.start()
    dbname = f"herald_delivery_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(backing.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    nats = None
    if nats_url is None:
        nats = EmbeddedNats(tmp / "nats", free_port())
        nats_url = nats.start()
    own = Backing(database_url_named(backing.database_url, dbname), nats_url, f"d{uuid.uuid4().hex[:10]}")
    env, ports = herald_env(own, tmp / "herald")
    env.update(
        {
            "SMTP_URL": smtp_url(recorder.url) if smtp_url else recorder.url,
            **TEST_DELIVERY_ENV,
            **(extra_env or {}),
        }
    )
    process = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-m", "services.cli", "run"], env=env, cwd=ROOT
    )
    identity: IdentityStore | None = None
    try:
        await asyncio.to_thread(wait_healthy, f"http://127.0.0.1:{ports['http']}", process)
        system = System(f"http://127.0.0.1:{ports['http']}", env, ports, process)
        identity = await IdentityStore.open(system.settings)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            yield DeliveryHerald(system, recorder, nats, identity, Api(session, system.base_url))
    finally:
        if identity is not None:
            await identity.close()
        await asyncio.to_thread(stop_process, process)
        if nats is not None:
            nats.stop()
        await recorder.close()
        with psycopg.connect(backing.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
