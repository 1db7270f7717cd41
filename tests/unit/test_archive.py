"""Tests of the archive page's template guards (address filter, fetch limits, fallbacks) and its HTML, without Herald running."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from aiohttp import web
from yarl import URL

from services.common import urlguard
from translator import archive
from translator.archive import ArchiveEntry, TemplateFetcher, TemplateUnusable

TEMPLATE = "<html><body><h1>Our letters</h1>%Archive:Campaigns%</body></html>"

REFUSED = [
    "127.0.0.1",  # loopback
    "::1",
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "fd00::1",
    "169.254.169.254",  # link-local (cloud metadata)
    "fe80::1",
    "224.0.0.1",  # multicast
    "ff02::1",
    "240.0.0.1",  # reserved
    "0.0.0.0",  # unspecified
    "::",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused_unless_the_operator_allows_them(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not urlguard.address_allowed(ip, allow_private=False)
    assert urlguard.address_allowed(ip, allow_private=True)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert urlguard.address_allowed(ipaddress.ip_address(address), allow_private=False)


def test_a_loopback_url_is_refused_when_private_templates_are_not_allowed() -> None:
    with pytest.raises(TemplateUnusable):
        archive.check_template_target(URL("http://127.0.0.1:8080/t.html"), allow_private=False)
    with pytest.raises(TemplateUnusable):
        archive.check_template_target(URL("http://[::1]/t.html"), allow_private=False)
    archive.check_template_target(URL("http://127.0.0.1:8080/t.html"), allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.com/t", "file:///etc/passwd", "/relative"])
def test_only_absolute_http_urls_are_fetched(url: str) -> None:
    with pytest.raises(TemplateUnusable):
        archive.check_template_target(URL(url), allow_private=True)


async def test_the_resolver_refuses_a_name_of_the_loopback_interface() -> None:
    resolver = urlguard.GuardedResolver(allow_private=False)
    try:
        with pytest.raises(urlguard.AddressRefused):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


# --- fetching from a local server ---------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def template_server() -> AsyncIterator[Callable[[str], str]]:
    """A local HTTP server with good and bad templates; yields a function from path to URL."""

    async def template(request: web.Request) -> web.Response:
        return web.Response(text=TEMPLATE, content_type="text/html")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(
            text="%Archive:Campaigns%" + "x" * archive.TEMPLATE_MAX_BYTES, content_type="text/html"
        )

    async def huge_streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        for _ in range(archive.TEMPLATE_MAX_BYTES // 1024 + 2):
            await response.write(b"%Archive:Campaigns%".ljust(1024, b"x"))
        await response.write_eof()
        return response

    async def no_placeholder(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>nothing here</body></html>", content_type="text/html")

    async def not_html(request: web.Request) -> web.Response:
        return web.Response(text="%Archive:Campaigns%", content_type="application/json")

    async def redirect(request: web.Request) -> web.Response:
        hops = int(request.match_info["hops"])
        raise web.HTTPFound("/template" if hops == 0 else f"/redirect/{hops - 1}")

    async def to_ftp(request: web.Request) -> web.Response:
        raise web.HTTPFound("ftp://example.com/template")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(text=TEMPLATE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/template", template)
    app.router.add_get("/huge", huge)
    app.router.add_get("/huge-streamed", huge_streamed)
    app.router.add_get("/no-placeholder", no_placeholder)
    app.router.add_get("/not-html", not_html)
    app.router.add_get("/redirect/{hops}", redirect)
    app.router.add_get("/to-ftp", to_ftp)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield lambda path: f"http://127.0.0.1:{port}{path}"
    await runner.cleanup()


async def fetch(url: str, *, allow_private: bool = True) -> str | None:
    fetcher = TemplateFetcher(allow_private=allow_private)
    try:
        return await fetcher.template(url)
    finally:
        await fetcher.close()


async def test_a_template_with_the_placeholder_is_used(template_server: Callable[[str], str]) -> None:
    assert await fetch(template_server("/template")) == TEMPLATE


async def test_a_template_on_loopback_is_refused_when_private_templates_are_not_allowed(
    template_server: Callable[[str], str],
) -> None:
    assert await fetch(template_server("/template"), allow_private=False) is None
    # By name too: the resolver the connection uses refuses it.
    by_name = template_server("/template").replace("127.0.0.1", "localhost")
    assert await fetch(by_name, allow_private=False) is None


async def test_up_to_three_redirects_are_followed(template_server: Callable[[str], str]) -> None:
    assert await fetch(template_server("/redirect/2")) == TEMPLATE  # three hops in all
    assert await fetch(template_server("/redirect/3")) is None


@pytest.mark.parametrize(
    "path", ["/huge", "/huge-streamed", "/no-placeholder", "/not-html", "/to-ftp", "/missing"]
)
async def test_an_unusable_template_is_not_used(template_server: Callable[[str], str], path: str) -> None:
    assert await fetch(template_server(path)) is None


async def test_a_template_slower_than_the_timeout_is_not_used(
    template_server: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "TEMPLATE_TIMEOUT_SECONDS", 0.2)
    started = time.monotonic()
    assert await fetch(template_server("/slow")) is None
    assert time.monotonic() - started < 0.9


async def test_an_unreachable_template_is_not_used() -> None:
    assert await fetch("http://127.0.0.1:9/template") is None


async def test_a_fetched_template_is_remembered(template_server: Callable[[str], str]) -> None:
    fetcher = TemplateFetcher(allow_private=True)
    try:
        url = template_server("/template")
        assert await fetcher.template(url) == TEMPLATE
        await fetcher.close()
        # The session is closed: only the cache can answer now.
        assert await fetcher.template(url) == TEMPLATE
    finally:
        await fetcher.close()


# --- HTML ----------------------------------------------------------------------------------------------------


def test_the_campaign_list_escapes_names_and_links() -> None:
    entry = ArchiveEntry('Tom & "Jerry" <script>', "2025-06-01", "http://h/archive/tag/1/campaign/2?a=1&b=2")
    fragment = archive.campaign_list_html([entry])
    assert "<script>" not in fragment
    assert "Tom &amp; &quot;Jerry&quot; &lt;script&gt;" in fragment
    assert 'href="http://h/archive/tag/1/campaign/2?a=1&amp;b=2"' in fragment


def test_the_list_goes_wherever_the_template_has_the_placeholder() -> None:
    page = archive.render_into_template("<p>%archive:campaigns%</p><div>%Archive:Campaigns%</div>", "<ul>\\1</ul>")
    assert page == "<p><ul>\\1</ul></p><div><ul>\\1</ul></div>"
