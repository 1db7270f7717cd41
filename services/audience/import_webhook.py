"""Tells the URL a CreateImport caller gave (ImportStatusUpdateWebhookURL) how its import ended.

When a stored import finishes (Completed or Failed, the latter also when it is given up), its status is
POSTed there as JSON, once the status is committed. The URL is the caller's choice, so it is reached as
an import's source URL is: absolute http(s) only, every address a name resolves to checked by the
connection's resolver (private and loopback ones refused unless HERALD_ALLOW_PRIVATE_URLS), no redirect
followed. A few attempts, each bounded in time; whatever happens, the import's own outcome stands and
nothing is retried after the service stops (the notice is best effort; subscribers.import.get is the record).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

import aiohttp
import structlog
from aiohttp import hdrs
from herald.audience.v1 import audience_pb2
from yarl import URL

from services.common.errors import Violations
from services.common.urlguard import AddressRefused, GuardedResolver, address_allowed

log = structlog.get_logger()

IMPORT_WEBHOOK_URL_INVALID = "IMPORT_WEBHOOK_URL_INVALID"
MAX_URL_LENGTH = 2048
ATTEMPTS = 3
ATTEMPT_TIMEOUT_SECONDS = 10.0
# Waits before the second and third attempts.
BACKOFF_SECONDS = (1.0, 4.0)
_STATUS_NAMES = {
    audience_pb2.IMPORT_STATUS_PENDING: "Pending",
    audience_pb2.IMPORT_STATUS_RUNNING: "Running",
    audience_pb2.IMPORT_STATUS_COMPLETED: "Completed",
    audience_pb2.IMPORT_STATUS_FAILED: "Failed",
}


def check_url(url: str, violations: Violations, *, allow_private: bool) -> None:
    """Records why `url` cannot be notified: not absolute http(s), too long, with credentials, or a literal
    address the operator does not allow. A name is checked when it is resolved, at each attempt."""
    problem = ""
    try:
        target = URL(url)
    except ValueError:
        target = None
    if len(url) > MAX_URL_LENGTH:
        problem = f"is longer than {MAX_URL_LENGTH} characters"
    elif target is None or target.scheme not in ("http", "https") or not target.host or not target.is_absolute():
        problem = "is not an absolute http or https URL"
    elif target.user or target.password:
        problem = "must not carry credentials"
    else:
        try:
            address = ipaddress.ip_address(target.host)
        except ValueError:
            address = None
        if address is not None and not address_allowed(address, allow_private=allow_private):
            problem = f"names the non-public address {address}, which this server does not reach"
    if problem:
        violations.add("status_webhook_url", IMPORT_WEBHOOK_URL_INVALID, f"status_webhook_url {problem}")


def status_document(job: audience_pb2.Import) -> dict[str, Any]:
    """The notice's body: the import's outcome under subscribers.import.get's ImportJob names."""
    finished = ""
    if job.HasField("finish_time"):
        finished = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(job.finish_time.seconds))
    return {
        "ImportID": job.import_id,
        "ListID": job.list_id,
        "ImportStatus": _STATUS_NAMES.get(job.status, "Pending"),
        "FinishedAt": finished,
        "TotalSubscribers": job.total_rows,
        "TotalImported": job.imported + job.updated,
        "TotalUpdated": job.updated,
        "TotalDuplicates": job.duplicates,
        "TotalFailed": job.rejected,
        "FailureReason": job.failure,
    }


async def notify(url: str, job: audience_pb2.Import, *, allow_private: bool) -> bool:
    """POSTs the import's status to `url`; True once an attempt is answered 2xx. Never raises (but on cancel)."""
    body = status_document(job)
    context = {"import_id": job.import_id, "status": body["ImportStatus"]}
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(BACKOFF_SECONDS[attempt - 1])
        retry, outcome = await _attempt(url, body, allow_private=allow_private)
        if outcome == "delivered":
            log.info("import status notice delivered", attempt=attempt + 1, **context)
            return True
        log.warning("import status notice not delivered", attempt=attempt + 1, reason=outcome, **context)
        if not retry:
            return False
    return False


async def _attempt(url: str, body: dict[str, Any], *, allow_private: bool) -> tuple[bool, str]:
    """(whether another attempt may help, "delivered" or why not)."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=allow_private), limit=1)
    try:
        async with (
            asyncio.timeout(ATTEMPT_TIMEOUT_SECONDS),
            aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={hdrs.USER_AGENT: "Herald-Import/1"},
            ) as session,
            session.post(URL(url), json=body, allow_redirects=False) as response,
        ):
            if 200 <= response.status < 300:
                return False, "delivered"
            # A server error or "too many requests" may pass; anything else will not (redirects are not followed).
            return response.status >= 500 or response.status == 429, f"HTTP status {response.status}"
    except TimeoutError:
        return True, f"no answer within {ATTEMPT_TIMEOUT_SECONDS:.0f} s"
    except (aiohttp.ClientError, ValueError, UnicodeError, OSError) as exc:
        # A name that resolves to an address this server does not reach stays refused: no retry.
        return not _refused(exc), f"{type(exc).__name__}: {exc}"


def _refused(exc: BaseException | None) -> bool:
    """Whether AddressRefused is behind `exc` (aiohttp wraps what the resolver raises)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, AddressRefused) or isinstance(getattr(exc, "os_error", None), AddressRefused):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
