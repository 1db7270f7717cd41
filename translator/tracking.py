"""The public tracking endpoints that sent messages link to: open pixel, click redirect and unsubscribe (DESIGN §4).

- `GET /t/o/<token>.gif` answers a 1x1 GIF and reports an open;
- `GET /t/c/<token>?u=<url>` redirects (302) to `url` when the token was signed for exactly that
  URL, and reports a click; anything else is 404, so the endpoint is no open redirect;
- `GET /t/u/<token>` shows a confirmation page; `POST /t/u/<token>` (the page's button, or a mail
  client's RFC 8058 one-click `List-Unsubscribe=One-Click`) unsubscribes the subscriber from the
  list in audience and reports the unsubscribe;
- `GET /t/confirm/<token>` and `GET /t/reject/<token>`: the links of a double opt-in confirmation
  email (services/common/opt_in_links.py). Confirm makes the pending subscriber Subscribed (opt-in
  date now, the client's address behind HERALD_TRUSTED_PROXIES); reject removes it. Both work twice
  with the same page; a link that does not verify, or whose subscription is gone, is the same 404.

Opens and clicks are reported in the background, in batches, so that neither the pixel nor the
redirect waits for delivery; each event carries a random key, so a batch resent after a timeout is
recorded once. An unsubscribe is carried out in audience before the answer, because the answer says it was.
HEAD requests (link scanners checking a URL) are answered without reporting anything.
"""

from __future__ import annotations

import asyncio
import base64
import html
import uuid
from collections import deque
from collections.abc import Sequence

import grpc
import structlog
from aiohttp import web
from google.protobuf import timestamp_pb2
from herald.audience.v1 import audience_pb2
from herald.delivery.v1 import delivery_pb2
from prometheus_client import Counter
from yarl import URL

from services.common.grpcutil import decode_error
from services.common.opt_in_links import InvalidOptInToken, OptInSubscription, opt_in_key, verify_opt_in
from services.common.tracking import InvalidTrackingToken, TrackingPayload, tracking_key, verify_tracking
from translator.commands import Stubs
from translator.forwarded import TrustedProxies
from translator.identity import IdentityStore

log = structlog.get_logger()

# The smallest transparent GIF (1x1, 43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_SERVICE_TIMEOUT_SECONDS = 10.0
# audience's reason for an unsubscribe of someone who already is.
ALREADY_UNSUBSCRIBED = "SUBSCRIBER_ALREADY_UNSUBSCRIBED"
_RETRIED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

EVENTS = Counter("herald_tracking_events_total", "Tracking hits by kind and outcome", ["kind", "outcome"])

_KINDS = {
    "open": delivery_pb2.TRACKING_EVENT_KIND_OPEN,
    "click": delivery_pb2.TRACKING_EVENT_KIND_CLICK,
    "unsubscribe": delivery_pb2.TRACKING_EVENT_KIND_UNSUBSCRIBE,
}


def tracking_event(payload: TrackingPayload) -> delivery_pb2.TrackingEvent:
    """The event a verified hit reports, stamped now and keyed for deduplication of resent reports."""
    occurred = timestamp_pb2.Timestamp()
    occurred.GetCurrentTime()
    return delivery_pb2.TrackingEvent(
        campaign_id=payload.recipient.campaign_id,
        recipient_id=payload.recipient.recipient_id,
        kind=_KINDS[payload.kind],
        url=payload.url,
        occur_time=occurred,
        event_key=uuid.uuid4().hex,
    )


class EventReporter:
    """Sends opens and clicks to delivery in batches, retrying while delivery is unreachable.

    The buffer is bounded: when delivery stays away long enough for it to fill, the oldest events
    are dropped and counted (`herald_tracking_events_total{outcome="dropped"}`) rather than letting
    the translator's memory grow without limit.
    """

    def __init__(
        self,
        identity: IdentityStore,
        stubs: Stubs,
        *,
        max_batch: int = 500,
        max_buffered: int = 100_000,
        linger_seconds: float = 0.2,
        max_attempts: int = 8,
        shutdown_seconds: float = 5.0,
    ) -> None:
        self._identity = identity
        self._delivery = stubs.delivery
        self._max_batch = max_batch
        self._max_buffered = max_buffered
        self._linger = linger_seconds
        self._max_attempts = max_attempts
        self._shutdown_seconds = shutdown_seconds
        self._in_flight: Sequence[delivery_pb2.TrackingEvent] = ()
        self._buffer: deque[delivery_pb2.TrackingEvent] = deque()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def report(self, event: delivery_pb2.TrackingEvent) -> None:
        """Queues an event; returns at once."""
        if len(self._buffer) >= self._max_buffered:
            dropped = self._buffer.popleft()
            EVENTS.labels(_kind_name(dropped.kind), "dropped").inc()
            log.warning("tracking buffer full; dropped the oldest event", campaign_id=dropped.campaign_id)
        self._buffer.append(event)
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Sends what is buffered, one attempt per batch and a few seconds at most, and stops."""
        self._stopping = True
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, self._shutdown_seconds)
        except TimeoutError:
            # Services stop together with the translator; what they can no longer take is counted.
            unsent = [*self._in_flight, *self._buffer]
            for event in unsent:
                EVENTS.labels(_kind_name(event.kind), "dropped").inc()
            log.warning("tracking events not reported at shutdown", events=len(unsent))

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                # A short wait lets the hits of a busy moment share one call.
                await asyncio.sleep(self._linger)
            batch = [self._buffer.popleft() for _ in range(min(self._max_batch, len(self._buffer)))]
            if batch:
                self._in_flight = batch
                await self._send(batch)
                self._in_flight = ()

    async def _send(self, batch: Sequence[delivery_pb2.TrackingEvent]) -> None:
        request = delivery_pb2.RecordTrackingEventsRequest(events=batch)
        attempts = 1 if self._stopping else self._max_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self._delivery.RecordTrackingEvents(
                    request,
                    metadata=(("authorization", f"Bearer {self._identity.system_token()}"),),
                    timeout=_SERVICE_TIMEOUT_SECONDS,
                )
            except grpc.aio.AioRpcError as exc:
                retry = exc.code() in _RETRIED and attempt < attempts
                log.warning(
                    "reporting tracking events failed",
                    code=exc.code().name,
                    error=exc.details(),
                    events=len(batch),
                    attempt=attempt,
                    retrying=retry,
                )
                if not retry:
                    for event in batch:
                        EVENTS.labels(_kind_name(event.kind), "dropped").inc()
                    return
                await asyncio.sleep(min(0.2 * 2**attempt, 10.0))
                continue
            for event in batch:
                EVENTS.labels(_kind_name(event.kind), "reported").inc()
            return


def _kind_name(kind: int) -> str:
    return next((name for name, value in _KINDS.items() if value == kind), "unknown")


# --- pages -------------------------------------------------------------------------------------------------


def page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;"
        "color:#222;text-align:center}button{font:inherit;padding:.6rem 1.4rem;border:0;border-radius:.3rem;"
        "background:#b3261e;color:#fff;cursor:pointer}</style>"
        f"</head><body>{body}</body></html>\n"
    )
    return web.Response(
        text=document, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
    )


def _redirectable(url: str) -> bool:
    """An http(s) URL without whitespace or control characters (which could split the Location header)."""
    return url.startswith(("http://", "https://")) and not any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url)


def invalid_link() -> web.Response:
    return page("Invalid link", "<h1>This link is not valid</h1><p>It may be incomplete or out of date.</p>", 404)


def try_again_later() -> web.Response:
    response = page(
        "Please try again", "<h1>Something went wrong</h1><p>Please try again in a moment.</p>", status=503
    )
    response.headers["Retry-After"] = "30"
    return response


class TrackingEndpoints:
    """The aiohttp handlers of /t/o, /t/c and /t/u."""

    def __init__(self, identity: IdentityStore, stubs: Stubs, reporter: EventReporter) -> None:
        self._identity = identity
        self._stubs = stubs
        self._reporter = reporter
        self._key = tracking_key(identity.settings.effective_token_secret())

    def _verified(self, request: web.Request, kind: str, url: str = "") -> TrackingPayload | None:
        try:
            payload = verify_tracking(request.match_info["token"], key=self._key, url=url)
        except InvalidTrackingToken as exc:
            EVENTS.labels(kind, "invalid").inc()
            log.info("invalid tracking token", kind=kind, reason=str(exc))
            return None
        if payload.kind != kind:
            EVENTS.labels(kind, "invalid").inc()
            log.info("tracking token of another kind", kind=kind, token_kind=payload.kind)
            return None
        return payload

    async def open_pixel(self, request: web.Request) -> web.Response:
        """GET /t/o/<token>.gif: always the pixel (a broken image helps nobody); an open when the token is valid."""
        payload = self._verified(request, "open")
        if payload is not None and request.method == "GET":
            self._reporter.report(tracking_event(payload))
        return web.Response(body=PIXEL, content_type="image/gif", headers=_NO_STORE)

    async def click(self, request: web.Request) -> web.Response:
        """GET /t/c/<token>?u=<url>: 302 to the URL the token was signed for; 404 for anything else."""
        url = request.query.get("u", "")
        payload = self._verified(request, "click", url) if _redirectable(url) else None
        if payload is None:
            return invalid_link()
        if request.method == "GET":
            self._reporter.report(tracking_event(payload))
        # Exactly the signed URL; only a non-ASCII one (an IRI) is percent-encoded to fit a header.
        location = URL(payload.url, encoded=True) if payload.url.isascii() else URL(payload.url)
        raise web.HTTPFound(location=location, headers={**_NO_STORE, "Referrer-Policy": "no-referrer"})

    async def unsubscribe_form(self, request: web.Request) -> web.Response:
        """GET /t/u/<token>: asks for confirmation (mail scanners follow links; only a POST unsubscribes)."""
        if self._verified(request, "unsubscribe") is None:
            return invalid_link()
        return page(
            "Unsubscribe",
            "<h1>Unsubscribe?</h1><p>You will no longer receive messages from this mailing list.</p>"
            '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """POST /t/u/<token>: the page's button or RFC 8058 one-click; unsubscribes, then confirms."""
        payload = self._verified(request, "unsubscribe")
        if payload is None:
            return invalid_link()
        recipient = payload.recipient
        try:
            await self._stubs.audience.UnsubscribeSubscribers(
                audience_pb2.UnsubscribeSubscribersRequest(
                    list_id=recipient.list_id,
                    subscriber_id=recipient.subscriber_id,
                    ip_address=request.remote or "",
                ),
                metadata=(("authorization", f"Bearer {self._identity.system_token()}"),),
                timeout=_SERVICE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            failure = decode_error(exc)
            # Unsubscribing twice, or from a list or subscriber deleted since, leaves the same state
            # the person asked for: off the list.
            if not (failure.code == grpc.StatusCode.NOT_FOUND or failure.reason == ALREADY_UNSUBSCRIBED):
                log.error(
                    "unsubscribe failed",
                    code=failure.code.name,
                    reason=failure.reason,
                    error=failure.message,
                    campaign_id=recipient.campaign_id,
                    list_id=recipient.list_id,
                )
                EVENTS.labels("unsubscribe", "failed").inc()
                return try_again_later()
            log.info("unsubscribe changed nothing", reason=failure.reason, list_id=recipient.list_id)
        # The subscriber is off the list now; the statistics event may follow in the background.
        self._reporter.report(tracking_event(payload))
        return page(
            "Unsubscribed", "<h1>You are unsubscribed</h1><p>You will receive no more messages from this list.</p>"
        )


class OptInEndpoints:
    """The aiohttp handlers of /t/confirm and /t/reject."""

    def __init__(self, identity: IdentityStore, stubs: Stubs) -> None:
        self._identity = identity
        self._stubs = stubs
        self._key = opt_in_key(identity.settings.effective_token_secret())
        self._proxies = TrustedProxies.parse(identity.settings.trusted_proxies)

    def _verified(self, request: web.Request, action: str) -> OptInSubscription | None:
        try:
            subscription = verify_opt_in(request.match_info["token"], key=self._key)
        except InvalidOptInToken as exc:
            EVENTS.labels(action, "invalid").inc()
            log.info("invalid opt-in token", action=action, reason=str(exc))
            return None
        if subscription.action != action:
            EVENTS.labels(action, "invalid").inc()
            return None
        return subscription

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._identity.system_token()}"),)

    def _failed(self, action: str, exc: grpc.aio.AioRpcError, subscription: OptInSubscription) -> web.Response:
        failure = decode_error(exc)
        if failure.code == grpc.StatusCode.NOT_FOUND:
            # Rejected, unsubscribed or deleted since: the same answer as a link that never was (no oracle).
            EVENTS.labels(action, "gone").inc()
            return invalid_link()
        log.error(
            "opt-in link failed",
            action=action,
            code=failure.code.name,
            reason=failure.reason,
            error=failure.message,
            list_id=subscription.list_id,
        )
        EVENTS.labels(action, "failed").inc()
        return try_again_later()

    async def confirm(self, request: web.Request) -> web.Response:
        """GET /t/confirm/<token>: the subscription is confirmed, then the page says so."""
        subscription = self._verified(request, "confirm")
        if subscription is None:
            return invalid_link()
        if request.method != "GET":  # HEAD: a scanner checking the URL changes nothing
            return page("Confirm your subscription", "<h1>Confirm your subscription</h1>")
        client = self._proxies.client(request.remote or "", request.headers.getall("X-Forwarded-For", []))
        try:
            await self._stubs.audience.ConfirmSubscription(
                audience_pb2.ConfirmSubscriptionRequest(
                    list_id=subscription.list_id, subscriber_id=subscription.subscriber_id, ip_address=client
                ),
                metadata=self._metadata(),
                timeout=_SERVICE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            return self._failed("confirm", exc, subscription)
        EVENTS.labels("confirm", "ok").inc()
        return page(
            "Subscription confirmed",
            "<h1>Your subscription is confirmed</h1><p>Thank you: you will receive messages from this list.</p>",
        )

    async def reject(self, request: web.Request) -> web.Response:
        """GET /t/reject/<token>: the pending subscriber is removed, then the page says so."""
        subscription = self._verified(request, "reject")
        if subscription is None:
            return invalid_link()
        if request.method != "GET":
            return page("Subscription request", "<h1>Subscription request</h1>")
        try:
            await self._stubs.audience.RejectSubscription(
                audience_pb2.RejectSubscriptionRequest(
                    list_id=subscription.list_id, subscriber_id=subscription.subscriber_id
                ),
                metadata=self._metadata(),
                timeout=_SERVICE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            return self._failed("reject", exc, subscription)
        EVENTS.labels("reject", "ok").inc()
        return page(
            "Subscription cancelled",
            "<h1>You will not be subscribed</h1><p>Your address was removed; this list will not write to you.</p>",
        )


def add_routes(app: web.Application, identity: IdentityStore, stubs: Stubs) -> None:
    """Serves the tracking endpoints on `app`; the event reporter starts and stops with it."""
    reporter = EventReporter(identity, stubs)
    endpoints = TrackingEndpoints(identity, stubs, reporter)

    async def start(_: web.Application) -> None:
        reporter.start()

    async def stop(_: web.Application) -> None:
        await reporter.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/t/o/{token}.gif", endpoints.open_pixel)
    app.router.add_get("/t/c/{token}", endpoints.click)
    app.router.add_get("/t/u/{token}", endpoints.unsubscribe_form)
    app.router.add_post("/t/u/{token}", endpoints.unsubscribe)
    opt_in = OptInEndpoints(identity, stubs)
    app.router.add_get("/t/confirm/{token}", opt_in.confirm)
    app.router.add_get("/t/reject/{token}", opt_in.reject)
