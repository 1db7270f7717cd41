"""Several relays: SMTP_URL's list and HERALD_SMTP_ROUTES as parsed and refused, and the relay pool against SMTP servers
in this process (routing per campaign and per From domain, the weighted share, failover and the health check)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from pydantic import ValidationError

from services.campaign.domain.update import RESTRICTED_PATHS, CampaignPatch, check_patch
from services.common.config import Settings
from services.delivery.relays import Relay, RelayPool, UnknownRelay, parse_relays, parse_routes
from services.delivery.smtp import SmtpConnectionPool, SmtpSendError, SmtpTarget, SmtpUrlError
from tests.e2e.delivery_helpers import SmtpRecorder

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MESSAGE = b"Subject: hello\r\nFrom: news@example.com\r\nTo: b@example.com\r\n\r\nBody.\r\n"


# --- SMTP_URL ---------------------------------------------------------------------------------------------------


def test_one_url_is_one_relay_named_host_and_port() -> None:
    (relay,) = parse_relays("smtp://user:pass@mail.example.com:587?starttls=true")
    assert relay == Relay(
        "mail.example.com:587", SmtpTarget("mail.example.com", 587, "starttls", "user", "pass"), 1, 0.0
    )


def test_a_comma_inside_one_url_stays_part_of_it() -> None:
    (relay,) = parse_relays("smtps://user:pa,ss@relay.example.com")
    assert relay.target.password == "pa,ss"


@pytest.mark.parametrize("separator", [",", ", ", " ", "\n", " ,\n "])
def test_several_urls_with_names_weights_and_rates(separator: str) -> None:
    text = separator.join(
        [
            "smtp://a.example.com?name=relay-a&weight=3&rate=50",
            "smtps://b.example.com:2465?weight=1",
            "smtp://[::1]",
        ]
    )
    relays = parse_relays(text)
    assert [(r.name, r.weight, r.rate_per_second) for r in relays] == [
        ("relay-a", 3, 50.0),
        ("b.example.com:2465", 1, 0.0),
        ("[::1]:25", 1, 0.0),
    ]
    assert relays[1].target == SmtpTarget("b.example.com", 2465, "implicit")


def test_relay_parameters_mix_with_starttls() -> None:
    (relay,) = parse_relays("smtp://a:587?name=a&starttls=true&weight=2&rate=0.5")
    assert (relay.name, relay.target.tls, relay.weight, relay.rate_per_second) == ("a", "starttls", 2, 0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("smtp://a?name=x smtp://b?name=x", "several relays x"),
        ("smtp://a:25 smtp://a:25", "several relays a:25"),
        ("smtp://a?weight=-1", "weight must be a whole number"),
        ("smtp://a?weight=1.5", "weight must be a whole number"),
        ("smtp://a?weight=0", "every relay has weight 0"),
        ("smtp://a?rate=0", "rate must be a number"),
        ("smtp://a?rate=-2", "rate must be a number"),
        ("smtp://a?rate=fast", "rate must be a number"),
        ("smtp://a?rate=nan", "rate must be a number"),
        ("smtp://a?rate=inf", "rate must be a number"),
        ("smtp://a?name=bad%20name", "relay name 'bad name' is invalid"),
        ("smtp://a?name=x&name=y", "relay parameter twice"),
        ("smtp://a?colour=red", "unknown parameter 'colour'"),
        ("smtp://a smtp://b:0", "relay 2 of SMTP_URL: .*between 1 and 65535"),
        ("smtp://a http://b", "relay 2 of SMTP_URL: .*smtp:// or smtps://"),
        ("smtp://a:25,b:25", "separate several relays"),
    ],
)
def test_malformed_relay_lists_are_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(SmtpUrlError, match=message):
        parse_relays(text)


def test_errors_never_show_a_password() -> None:
    with pytest.raises(SmtpUrlError) as caught:
        parse_relays("smtp://a?name=a smtp://user:hunter2secret@b?rate=0")
    assert "hunter2secret" not in str(caught.value)
    assert "relay 2" in str(caught.value)


# --- HERALD_SMTP_ROUTES -----------------------------------------------------------------------------------------

RELAYS = parse_relays("smtp://a?name=relay-a smtp://b?name=relay-b&weight=0")


def test_routes_map_from_domains_to_relays() -> None:
    routes = parse_routes("News.Example.com=relay-a,  example.org=relay-b\nthird.example=relay-a", RELAYS)
    assert routes == {"news.example.com": "relay-a", "example.org": "relay-b", "third.example": "relay-a"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.com=relay-c", "relay 'relay-c', which SMTP_URL does not name"),
        ("example.com", "is not domain=relay"),
        ("example.com=", "is not domain=relay"),
        ("user@example.com=relay-a", "not a domain name"),
        ("example.com=relay-a example.com=relay-b", "routed twice"),
    ],
)
def test_malformed_routes_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_routes(text, RELAYS)


def test_settings_refuse_bad_relays_and_routes_at_start() -> None:
    with pytest.raises(ValidationError, match="rate must be a number"):
        Settings(smtp_url="smtp://a?rate=0")
    with pytest.raises(ValidationError, match="which SMTP_URL does not name"):
        Settings(smtp_url="smtp://a?name=a", smtp_routes="example.com=b")
    with pytest.raises(ValidationError, match="SMTP_URL, which is unset"):
        Settings(smtp_url="", smtp_routes="example.com=b")
    settings = Settings(smtp_url="smtp://a?name=a smtp://b?name=b", smtp_routes="example.com=b")
    assert settings.smtp_routes == "example.com=b"


# --- the pool ----------------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def sinks() -> AsyncIterator[tuple[SmtpRecorder, SmtpRecorder]]:
    a, b = SmtpRecorder(), SmtpRecorder()
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        a.kill()
        b.kill()


def pool_of(text: str, routes: str = "", *, health_check_seconds: float = 0.05) -> RelayPool:
    relays = parse_relays(text)
    return RelayPool(
        relays,
        parse_routes(routes, relays),
        pool=lambda relay: SmtpConnectionPool(relay.target, size=4, local_hostname="client.test", timeout=5),
        health_check_seconds=health_check_seconds,
    )


def received_by(sink: SmtpRecorder) -> list[str]:
    return [message.recipient for message in sink.received]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_unrouted_mail_is_shared_by_weight(sinks: tuple[SmtpRecorder, SmtpRecorder]) -> None:
    a, b = sinks
    async with pool_of(f"{a.url}?name=a&weight=3 {b.url}?name=b&weight=1") as pool:
        used = Counter([(await pool.send("bounce@x.test", f"r{n}@example.com", MESSAGE)).relay for n in range(40)])
    assert used == {"a": 30, "b": 10}
    assert (len(a.received), len(b.received)) == (30, 10)


async def test_from_domain_route_and_campaign_relay_win_over_the_weights(
    sinks: tuple[SmtpRecorder, SmtpRecorder],
) -> None:
    a, b = sinks
    async with pool_of(f"{a.url}?name=a {b.url}?name=b&weight=0", "news.example.com=b") as pool:
        routed = [
            (
                await pool.send("bounce@x.test", f"r{n}@example.com", MESSAGE, from_address="n@News.Example.com")
            ).relay
            for n in range(5)
        ]
        unrouted = [
            (await pool.send("bounce@x.test", f"u{n}@example.com", MESSAGE, from_address="n@other.example")).relay
            for n in range(5)
        ]
        # The campaign's relay wins over its From domain's.
        campaign = await pool.send(
            "bounce@x.test", "c@example.com", MESSAGE, relay="a", from_address="n@news.example.com"
        )
        with pytest.raises(UnknownRelay) as unknown:
            await pool.send("bounce@x.test", "d@example.com", MESSAGE, relay="nowhere")
    assert routed == ["b"] * 5 and unrouted == ["a"] * 5 and campaign.relay == "a"
    assert unknown.value.permanent and "relay 'nowhere' is not one of SMTP_URL's relays (a, b)" in str(
        unknown.value
    )
    assert sorted(received_by(b)) == [f"r{n}@example.com" for n in range(5)]


async def test_a_dead_relays_share_moves_to_the_others_and_comes_back_after_a_health_check(
    sinks: tuple[SmtpRecorder, SmtpRecorder],
) -> None:
    a, b = sinks
    downs = metric("herald_delivery_relay_state_changes_total", relay="dead-a", state="down")
    ups = metric("herald_delivery_relay_state_changes_total", relay="dead-a", state="up")
    async with pool_of(f"{a.url}?name=dead-a {b.url}?name=live-b", health_check_seconds=0.05) as pool:
        before = [(await pool.send("bounce@x.test", f"before{n}@example.com", MESSAGE)).relay for n in range(4)]
        a.kill()
        made = 0

        def content() -> bytes:
            nonlocal made
            made += 1
            return MESSAGE

        # Every message goes out, none is lost or sent twice: a refused connection was never accepted by A.
        after = [(await pool.send("bounce@x.test", f"after{n}@example.com", content)).relay for n in range(10)]
        assert not pool.is_up("dead-a")
        assert metric("herald_delivery_relay_up", relay="dead-a") == 0
        await a.start()
        for _ in range(200):
            if pool.is_up("dead-a"):
                break
            await asyncio.sleep(0.02)
        assert pool.is_up("dead-a")
        back = {(await pool.send("bounce@x.test", f"back{n}@example.com", MESSAGE)).relay for n in range(4)}
    assert before == ["dead-a", "live-b"] * 2
    assert after == ["live-b"] * 10 and made == 10
    assert back == {"dead-a", "live-b"}
    assert sorted(received_by(b)).count("after0@example.com") == 1
    everyone = Counter(received_by(a) + received_by(b))
    assert all(count == 1 for count in everyone.values()) and len(everyone) == 18
    assert metric("herald_delivery_relay_state_changes_total", relay="dead-a", state="down") == downs + 1
    assert metric("herald_delivery_relay_state_changes_total", relay="dead-a", state="up") == ups + 1


async def test_mail_routed_to_a_dead_relay_waits_for_it(sinks: tuple[SmtpRecorder, SmtpRecorder]) -> None:
    a, b = sinks
    async with pool_of(f"{a.url}?name=a {b.url}?name=b", health_check_seconds=60) as pool:
        a.kill()
        for attempt in range(2):
            with pytest.raises(SmtpSendError) as caught:
                await pool.send("bounce@x.test", f"routed{attempt}@example.com", MESSAGE, relay="a")
            # A connection failure: the worker defers the recipient, as with one relay.
            assert caught.value.reply is None and not caught.value.maybe_delivered
            assert caught.value.relay == "a"
        assert not pool.is_up("a")
    assert received_by(b) == []


async def test_with_every_relay_down_the_send_fails_as_a_connection_failure(
    sinks: tuple[SmtpRecorder, SmtpRecorder],
) -> None:
    a, b = sinks
    async with pool_of(f"{a.url}?name=a {b.url}?name=b", health_check_seconds=60) as pool:
        a.kill()
        b.kill()
        with pytest.raises(SmtpSendError) as caught:
            await pool.send("bounce@x.test", "nobody@example.com", MESSAGE)
        assert caught.value.reply is None and not caught.value.maybe_delivered
        assert not pool.is_up("a") and not pool.is_up("b")
        # Still tried, each in turn: a relay that is back takes mail without waiting for its health check.
        await a.start()
        assert (await pool.send("bounce@x.test", "somebody@example.com", MESSAGE)).relay == "a"
        assert pool.is_up("a")


async def test_an_ambiguous_failure_is_never_sent_through_another_relay(
    sinks: tuple[SmtpRecorder, SmtpRecorder],
) -> None:
    a, b = sinks
    a.slow_down("slow.example", 10)
    async with pool_of(f"{a.url}?name=a {b.url}?name=b&weight=0") as pool:
        sending = asyncio.create_task(pool.send("bounce@x.test", "r@slow.example", MESSAGE))
        for _ in range(500):
            if a.attempts["r@slow.example"]:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the content is out; the reply is 10 s away
        a.kill()
        with pytest.raises(SmtpSendError) as caught:
            await sending
    assert caught.value.maybe_delivered and caught.value.relay == "a"
    assert received_by(a) == [] and received_by(b) == []


# --- Campaign.relay -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relay", ["relay-a", "mx1.example.com:25", "[::1]:2525", ""])
def test_update_campaign_takes_any_well_formed_relay_name(relay: str) -> None:
    changes, violations = check_patch(CampaignPatch(campaign_id=1, paths=("relay",), relay=relay), NOW)
    assert (changes, violations) == ({"relay": relay}, [])


@pytest.mark.parametrize("relay", ["two words", "x" * 101, "a/b", "relay\x00"])
def test_update_campaign_refuses_a_malformed_relay_name(relay: str) -> None:
    _, violations = check_patch(CampaignPatch(campaign_id=1, paths=("relay",), relay=relay), NOW)
    assert [(v.field, v.reason) for v in violations] == [("relay", "RELAY_INVALID")]


def test_only_a_campaign_that_has_not_started_may_change_its_relay() -> None:
    assert "relay" in RESTRICTED_PATHS


async def test_a_relay_that_never_answers_is_left_after_one_timeout(
    sinks: tuple[SmtpRecorder, SmtpRecorder],
) -> None:
    _, b = sinks

    class Silent(asyncio.Protocol):
        """Accepts the connection and says nothing: a relay that hangs."""

    silent = await asyncio.get_running_loop().create_server(Silent, "127.0.0.1", 0)
    port = int(silent.sockets[0].getsockname()[1])
    relays = parse_relays(f"smtp://127.0.0.1:{port}?name=silent {b.url}?name=b")
    pool = RelayPool(
        relays,
        pool=lambda relay: SmtpConnectionPool(relay.target, size=2, local_hostname="client.test", timeout=0.5),
        health_check_seconds=60,
    )
    try:
        used = [(await pool.send("bounce@x.test", f"t{n}@example.com", MESSAGE)).relay for n in range(4)]
        assert used == ["b"] * 4 and not pool.is_up("silent")
        assert sorted(received_by(b)) == [f"t{n}@example.com" for n in range(4)]
    finally:
        await pool.close()
        silent.close()
