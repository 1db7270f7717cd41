"""campaigns.archive.geturl and the public archive pages it points to (the page, the web views, the RSS feed), end to end.

Campaigns cannot be sent before the delivery service lands, so the tests make a campaign Sent
by writing `campaign.campaigns` (status, send start, email) with SQL through the system's
DATABASE_URL. Issue 5 replaces this with a real send.
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import feedparser
import grpc
import psycopg
import pytest
import pytest_asyncio
from aiohttp import web
from google.protobuf import field_mask_pb2
from herald.campaign.v1 import email_pb2, email_pb2_grpc
from herald.tag.v1 import tag_pb2, tag_pb2_grpc

from services.common.personalization import HashedIds
from tests.conftest import Admin, Api, System, User, grpc_metadata

pytestmark = pytest.mark.asyncio(loop_scope="session")

SEED_KEYS = {"Success", "ErrorCode", "URL"}
_paths = itertools.count()


async def create_tag(api: Api, user: User, name: str = "newsletter") -> int:
    body = await api.call("tag.create", user.api_key, Tag=name)
    assert body["Success"] is True, body
    tag_id: int = body["TagID"]
    return tag_id


async def create_campaign(api: Api, user: User, name: str, *, publish_on_rss: bool = False) -> int:
    body = await api.call("campaign.create", user.api_key, CampaignName=name)
    assert body["Success"] is True, body
    campaign_id: int = body["CampaignID"]
    if publish_on_rss:
        body = await api.call("campaign.update", user.api_key, CampaignID=campaign_id, PublishOnRSS="Enabled")
        assert body["Success"] is True, body
    return campaign_id


async def assign(api: Api, user: User, tag_id: int, *campaign_ids: int) -> None:
    body = await api.call(
        "tag.assigntocampaigns", user.api_key, TagID=tag_id, CampaignIDs=",".join(map(str, campaign_ids))
    )
    assert body["Success"] is True, body


async def create_email(
    system: System, user: User, html: str, *, subject: str = "Hello", plain: str = "", preheader: str = ""
) -> int:
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        stub = email_pb2_grpc.EmailServiceStub(channel)
        metadata = grpc_metadata(system, user.user_id)
        email = await stub.CreateEmail(email_pb2.CreateEmailRequest(), metadata=metadata)
        content = email_pb2.Email(
            email_id=email.email_id,
            subject=subject,
            html_content=html,
            plain_content=plain,
            preheader_text=preheader,
        )
        await stub.UpdateEmail(
            email_pb2.UpdateEmailRequest(
                email=content,
                update_mask=field_mask_pb2.FieldMask(
                    paths=["subject", "html_content", "plain_content", "preheader_text"]
                ),
                validate_scope=email_pb2.VALIDATE_SCOPE_CAMPAIGN,
            ),
            metadata=metadata,
        )
    return email.email_id


async def mark_sent(system: System, campaign_id: int, sent_at: datetime, email_id: int | None = None) -> None:
    # Stands in for a real send until issue 5: the campaign service's own table, written directly.
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        await conn.execute(
            "UPDATE campaign.campaigns SET status = 'Sent', send_started_at = %s, "
            "email_id = coalesce(%s, email_id) WHERE campaign_id = %s",
            (sent_at, email_id, campaign_id),
        )


async def template_of(system: System, user: User, tag_id: int) -> str:
    async with grpc.aio.insecure_channel(system.grpc_target("tag")) as channel:
        tag = await tag_pb2_grpc.TagServiceStub(channel).GetTag(
            tag_pb2.GetTagRequest(tag_id=tag_id), metadata=grpc_metadata(system, user.user_id)
        )
    return tag.archive_template_url


async def page(api: Api, path: str, **headers: str) -> tuple[int, str, str, Any]:
    async with api.session.get(api.base_url + path, headers=headers) as response:
        return response.status, response.content_type, await response.text(), response.headers


async def read_feed(api: Api, tag_id: int) -> tuple[Any, bytes, Any]:
    """The tag's feed as feedparser reads it, its bytes and its headers; it must be a well-formed RSS 2.0 feed."""
    async with api.session.get(f"{api.base_url}/archive/tag/{tag_id}/rss") as response:
        assert response.status == 200, await response.text()
        body = await response.read()
        headers = response.headers
    parsed = feedparser.parse(body, response_headers={k.lower(): v for k, v in headers.items()})
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "rss20"
    return parsed, body, headers


def srcdoc_of(page_html: str) -> str:
    """The email a web view frames: its iframe's srcdoc, unescaped."""
    match = re.search(r'<iframe [^>]*srcdoc="([^"]*)"', page_html)
    assert match is not None, page_html
    return html.unescape(match.group(1))


def head_of(page_html: str) -> str:
    match = re.search(r"<head>(.*?)</head>", page_html, re.DOTALL | re.IGNORECASE)
    assert match is not None, page_html
    return match.group(1)


# --- campaigns.archive.geturl -------------------------------------------------------------------------------


async def test_geturl_answers_the_seed_shape_with_the_public_archive_url(
    api: Api, system: System, user: User
) -> None:
    tag_id = await create_tag(api, user)
    body = await api.call("campaigns.archive.geturl", user.api_key, TagID=tag_id)
    assert set(body) == SEED_KEYS
    assert body == {"Success": True, "ErrorCode": 0, "URL": f"{system.base_url}/archive/tag/{tag_id}"}


async def test_geturl_stores_a_template_url_and_answers_the_same_url(api: Api, system: System, user: User) -> None:
    tag_id = await create_tag(api, user)
    body = await api.call(
        "campaigns.archive.geturl",
        user.api_key,
        TagID=str(tag_id),
        TemplateURL="https://example.com/archive-template",
    )
    assert body == {"Success": True, "ErrorCode": 0, "URL": f"{system.base_url}/archive/tag/{tag_id}"}
    assert await template_of(system, user, tag_id) == "https://example.com/archive-template"
    # Without TemplateURL the stored template stays.
    await api.call("campaigns.archive.geturl", user.api_key, TagID=tag_id)
    assert await template_of(system, user, tag_id) == "https://example.com/archive-template"


async def test_geturl_error_codes(api: Api, system: System, user: User, make_user: Any) -> None:
    tag_id = await create_tag(api, user)
    other: User = await make_user()
    foreign_tag = await create_tag(api, other)
    cases: list[tuple[dict[str, Any], int]] = [
        ({}, 1),
        ({"TagID": ""}, 1),
        ({"TagID": "abc"}, 1),
        ({"TagID": 0}, 1),
        ({"TagID": -4}, 1),
        ({"TemplateURL": "not a url"}, 1),  # the first check in code order wins
        ({"TagID": 999_999_999}, 2),
        ({"TagID": foreign_tag}, 2),  # another user's tag is not found
        ({"TagID": 999_999_999, "TemplateURL": "ftp://example.com/t"}, 2),
        ({"TagID": tag_id, "TemplateURL": "example.com/template"}, 3),
        ({"TagID": tag_id, "TemplateURL": "ftp://example.com/template"}, 3),
        ({"TagID": tag_id, "TemplateURL": "javascript:alert(1)"}, 3),
        ({"TagID": tag_id, "TemplateURL": ["https://example.com/"]}, 3),
        ({"TagID": tag_id, "TemplateURL": "https://example.com/" + "a" * 2000}, 3),
    ]
    for params, code in cases:
        body = await api.call("campaigns.archive.geturl", user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == code, (params, body)
        assert isinstance(body["ErrorText"], str) and body["ErrorText"], body
    assert await template_of(system, user, tag_id) == ""
    assert await template_of(system, other, foreign_tag) == ""


async def test_geturl_needs_a_user_key_with_campaigns_get(api: Api, admin: Admin, make_user: Any) -> None:
    limited: User = await make_user(permissions=["Campaign.Get"])
    body = await api.call("campaigns.archive.geturl", limited.api_key, TagID=1)
    assert body["ErrorCode"] == 99999
    body = await api.call("campaigns.archive.geturl", admin.api_key, TagID=1)
    assert body["ErrorCode"] == 99999


async def test_geturl_is_served_under_v1_too(api: Api, system: System, user: User) -> None:
    tag_id = await create_tag(api, user)
    status, body = await api.post(
        {"APIKey": user.api_key, "TagID": tag_id}, path="/api/v1/campaigns.archive.geturl"
    )
    assert status == 200 and body["URL"] == f"{system.base_url}/archive/tag/{tag_id}"


# --- the archive page ----------------------------------------------------------------------------------------


async def test_the_archive_lists_only_the_tags_sent_campaigns_newest_first(
    api: Api, system: System, user: User
) -> None:
    tag_id = await create_tag(api, user)
    other_tag = await create_tag(api, user, "other")
    older = await create_campaign(api, user, "May <Letter> & more")
    newer = await create_campaign(api, user, "June letter")
    draft = await create_campaign(api, user, "Draft letter")
    untagged = await create_campaign(api, user, "Untagged letter")
    elsewhere = await create_campaign(api, user, "Other tag letter")
    await assign(api, user, tag_id, older, newer, draft)
    await assign(api, user, other_tag, elsewhere)
    await mark_sent(system, older, datetime(2025, 5, 2, 9, 0, tzinfo=UTC))
    await mark_sent(system, newer, datetime(2025, 6, 3, 9, 0, tzinfo=UTC))
    await mark_sent(system, untagged, datetime(2025, 6, 4, 9, 0, tzinfo=UTC))
    await mark_sent(system, elsewhere, datetime(2025, 6, 5, 9, 0, tzinfo=UTC))

    status, content_type, text, headers = await page(api, f"/archive/tag/{tag_id}")

    assert (status, content_type) == (200, "text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "June letter" in text and "May &lt;Letter&gt; &amp; more" in text and "<Letter>" not in text
    assert text.index("June letter") < text.index("May &lt;Letter&gt;")
    assert "2025-06-03" in text and "2025-05-02" in text
    assert f"{system.base_url}/archive/tag/{tag_id}/campaign/{newer}" in text
    for hidden in ("Draft letter", "Untagged letter", "Other tag letter"):
        assert hidden not in text


async def test_an_archive_without_sent_campaigns_says_so(api: Api, user: User) -> None:
    tag_id = await create_tag(api, user)
    status, _, text, _ = await page(api, f"/archive/tag/{tag_id}")
    assert status == 200 and "No campaigns have been sent yet." in text


@pytest.mark.parametrize(
    "path", ["/archive/tag/999999999", "/archive/tag/abc", "/archive/tag/0", "/archive/tag/-1"]
)
async def test_an_unknown_tag_answers_a_404_page(api: Api, path: str) -> None:
    status, content_type, text, _ = await page(api, path)
    assert (status, content_type) == (404, "text/html") and "Not found" in text


# --- the web view --------------------------------------------------------------------------------------------


async def test_the_web_view_shows_the_content_without_personalization(
    api: Api, system: System, user: User
) -> None:
    tag_id = await create_tag(api, user)
    campaign_id = await create_campaign(api, user, "Web view letter")
    await assign(api, user, tag_id, campaign_id)
    email_id = await create_email(
        system,
        user,
        '<html><body><p>Hi {{ Subscriber:FirstName | "reader" }}%Subscriber:LastName%!</p>'
        '<p>{{ Campaign:Name }}</p><p>{{ List:Name | "our list" }} {{ Campaign:HashedCampaignID }}</p></body></html>',
    )
    await mark_sent(system, campaign_id, datetime(2025, 6, 1, tzinfo=UTC), email_id)

    status, content_type, text, headers = await page(api, f"/archive/tag/{tag_id}/campaign/{campaign_id}")

    assert (status, content_type) == (200, "text/html")
    content = srcdoc_of(text)
    assert "<p>Hi reader!</p>" in content and "<p>Web view letter</p>" in content
    hashed = HashedIds(system.env["HERALD_TOKEN_SECRET"]).campaign(campaign_id)
    assert f"<p>our list {hashed}</p>" in content, content
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy and "sandbox" in policy


async def test_the_web_view_is_404_unless_the_campaign_is_sent_and_carries_the_tag(
    api: Api, system: System, user: User, make_user: Any
) -> None:
    tag_id = await create_tag(api, user)
    other_tag = await create_tag(api, user, "other")
    email_id = await create_email(system, user, "<p>Members only</p>")
    sent_elsewhere = await create_campaign(api, user, "Sent under another tag")
    await assign(api, user, other_tag, sent_elsewhere)
    await mark_sent(system, sent_elsewhere, datetime(2025, 6, 1, tzinfo=UTC), email_id)
    draft = await create_campaign(api, user, "Tagged draft")
    await assign(api, user, tag_id, draft)
    stranger: User = await make_user()
    foreign = await create_campaign(api, stranger, "Someone else's letter")
    await mark_sent(system, foreign, datetime(2025, 6, 1, tzinfo=UTC))

    for campaign in (sent_elsewhere, draft, foreign, 999_999_999):
        status, _, text, _ = await page(api, f"/archive/tag/{tag_id}/campaign/{campaign}")
        assert status == 404 and "Members only" not in text, campaign
    status, _, text, _ = await page(api, f"/archive/tag/{other_tag}/campaign/{sent_elsewhere}")
    assert status == 200 and "Members only" in srcdoc_of(text)


async def test_the_web_view_is_a_page_with_the_subject_the_send_date_and_a_way_back(
    api: Api, system: System, user: User
) -> None:
    tag_id = await create_tag(api, user, "letters")
    campaign_id = await create_campaign(api, user, "Internal name")
    await assign(api, user, tag_id, campaign_id)
    email_id = await create_email(
        system,
        user,
        '<!DOCTYPE html><html><body><a href="https://example.com/">Shop</a>'
        '<a href="%Link:Unsubscribe%">Unsubscribe</a> {{ Link:Unsubscribe | "" }}</body></html>',
        subject='Hi {{ Subscriber:FirstName | "friend" }} & <welcome>',
    )
    await mark_sent(system, campaign_id, datetime(2025, 7, 14, 8, 0, tzinfo=UTC), email_id)

    status, _, text, _ = await page(api, f"/archive/tag/{tag_id}/campaign/{campaign_id}")

    assert status == 200
    assert "<title>Hi friend &amp; &lt;welcome&gt;</title>" in text
    assert '<time datetime="2025-07-14">2025-07-14</time>' in text
    assert f'<a href="{system.base_url}/archive/tag/{tag_id}" class="herald-back">' in text
    assert f'href="{system.base_url}/archive/tag/{tag_id}/rss"' in head_of(text)
    content = srcdoc_of(text)
    # Links leave the frame; the unsubscribe link has no subscriber here, so its tags render empty.
    assert content.startswith('<!DOCTYPE html><base target="_blank"><html>')
    assert '<a href="">Unsubscribe</a>' in content and "Link:" not in content


# --- templates -----------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def template_host() -> AsyncIterator[tuple[Callable[[str], str], dict[str, str]]]:
    """A local server of archive templates: set pages[path] = html; url(path) is where it is served."""
    pages: dict[str, str] = {}

    async def serve(request: web.Request) -> web.Response:
        found = pages.get(request.path)
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(text=found, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield (lambda path: f"http://127.0.0.1:{port}{path}"), pages
    await runner.cleanup()


async def test_the_archive_is_rendered_into_the_tags_template(
    api: Api, system: System, user: User, template_host: tuple[Callable[[str], str], dict[str, str]]
) -> None:
    url, pages = template_host
    path = f"/template-{next(_paths)}.html"
    pages[path] = "<html><body><h1>The Acme letters</h1>%Archive:Campaigns%<footer>Acme</footer></body></html>"
    tag_id = await create_tag(api, user)
    campaign_id = await create_campaign(api, user, "Templated letter")
    await assign(api, user, tag_id, campaign_id)
    await mark_sent(system, campaign_id, datetime(2025, 6, 1, tzinfo=UTC))
    body = await api.call("campaigns.archive.geturl", user.api_key, TagID=tag_id, TemplateURL=url(path))
    assert body["Success"] is True, body

    status, _, text, headers = await page(api, f"/archive/tag/{tag_id}")

    assert status == 200
    assert text.startswith("<html><body><h1>The Acme letters</h1><ul")
    assert "Templated letter" in text and text.endswith("<footer>Acme</footer></body></html>")
    assert "default-src 'none'" in headers["Content-Security-Policy"]


async def test_an_unusable_template_falls_back_to_the_built_in_page(
    api: Api, system: System, user: User, template_host: tuple[Callable[[str], str], dict[str, str]]
) -> None:
    url, pages = template_host
    without_placeholder = f"/template-{next(_paths)}.html"
    pages[without_placeholder] = "<html><body>No list here</body></html>"
    missing = f"/template-{next(_paths)}.html"
    for template in (url(without_placeholder), url(missing)):
        tag_id = await create_tag(api, user, f"fallback {next(_paths)}")
        campaign_id = await create_campaign(api, user, "Fallback letter")
        await assign(api, user, tag_id, campaign_id)
        await mark_sent(system, campaign_id, datetime(2025, 6, 1, tzinfo=UTC))
        await api.call("campaigns.archive.geturl", user.api_key, TagID=tag_id, TemplateURL=template)

        status, _, text, _ = await page(api, f"/archive/tag/{tag_id}")

        assert status == 200 and "Fallback letter" in text and "No list here" not in text, template


# --- the RSS feed --------------------------------------------------------------------------------------------


async def test_the_feed_lists_only_sent_campaigns_published_on_rss_newest_first(
    api: Api, system: System, user: User
) -> None:
    tag_id = await create_tag(api, user, "rss letters")
    other_tag = await create_tag(api, user, "rss elsewhere")
    older = await create_campaign(api, user, "May (internal)", publish_on_rss=True)
    newer = await create_campaign(api, user, "June (internal)", publish_on_rss=True)
    not_on_rss = await create_campaign(api, user, "Not on RSS")
    unsent = await create_campaign(api, user, "Draft on RSS", publish_on_rss=True)
    elsewhere = await create_campaign(api, user, "Elsewhere on RSS", publish_on_rss=True)
    await assign(api, user, tag_id, older, newer, not_on_rss, unsent)
    await assign(api, user, other_tag, elsewhere)
    may = await create_email(
        system, user, "<p>May news</p>", subject="Our <May> letter & ]]> more", preheader="Spring is here"
    )
    june = await create_email(
        system,
        user,
        "<html><head><style>p{color:red}</style></head><body><p>June &amp; <b>summer</b> news</p></body></html>",
        subject='{{ Subscriber:FirstName | "Friends" }}, it\'s June',
    )
    hidden = await create_email(system, user, "<p>Hidden</p>", subject="Hidden subject")
    await mark_sent(system, older, datetime(2025, 5, 2, 9, 0, tzinfo=UTC), may)
    await mark_sent(system, newer, datetime(2025, 6, 3, 10, 30, tzinfo=UTC), june)
    await mark_sent(system, not_on_rss, datetime(2025, 6, 4, 9, 0, tzinfo=UTC), hidden)
    await mark_sent(system, elsewhere, datetime(2025, 6, 5, 9, 0, tzinfo=UTC), hidden)
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        await conn.execute("UPDATE campaign.campaigns SET email_id = %s WHERE campaign_id = %s", (hidden, unsent))

    parsed, body, headers = await read_feed(api, tag_id)

    assert headers["Content-Type"] == "application/rss+xml; charset=utf-8"
    assert headers["ETag"] and headers["Cache-Control"] == "no-cache"
    assert parsed.feed.title == "Archive: rss letters"
    assert parsed.feed.link == f"{system.base_url}/archive/tag/{tag_id}"
    # The newer of the tag's last change (its creation, here) and the newest send.
    assert parsed.feed.updated_parsed >= parsed.entries[0].published_parsed
    assert [entry.title for entry in parsed.entries] == ["Friends, it's June", "Our <May> letter & ]]> more"]
    assert [entry.link for entry in parsed.entries] == [
        f"{system.base_url}/archive/tag/{tag_id}/campaign/{newer}",
        f"{system.base_url}/archive/tag/{tag_id}/campaign/{older}",
    ]
    assert [(entry.id, entry.guidislink) for entry in parsed.entries] == [
        (f"herald-campaign-{newer}", False),
        (f"herald-campaign-{older}", False),
    ]
    assert [entry.published for entry in parsed.entries] == [
        "Tue, 03 Jun 2025 10:30:00 GMT",
        "Fri, 02 May 2025 09:00:00 GMT",
    ]
    assert [html.unescape(entry.summary) for entry in parsed.entries] == ["June & summer news", "Spring is here"]
    for leaked in (b"Hidden", b"Not on RSS", b"Draft on RSS", b"Elsewhere", b"<May>", b"]]>"):
        assert leaked not in body, leaked
    # The page itself still lists every sent campaign of the tag, published on RSS or not.
    _, _, archive_page, _ = await page(api, f"/archive/tag/{tag_id}")
    assert "Not on RSS" in archive_page and "Draft on RSS" not in archive_page


async def test_the_feeds_guids_and_bytes_are_stable_and_a_known_etag_answers_304(
    api: Api, system: System, user: User
) -> None:
    tag_id = await create_tag(api, user, "stable feed")
    campaign_id = await create_campaign(api, user, "Stable letter", publish_on_rss=True)
    await assign(api, user, tag_id, campaign_id)
    email_id = await create_email(system, user, "<p>Stable</p>", subject="Stable subject")
    await mark_sent(system, campaign_id, datetime(2025, 6, 1, tzinfo=UTC), email_id)

    first, first_body, first_headers = await read_feed(api, tag_id)
    second, second_body, second_headers = await read_feed(api, tag_id)

    assert (
        [entry.id for entry in first.entries]
        == [entry.id for entry in second.entries]
        == [f"herald-campaign-{campaign_id}"]
    )
    assert first_body == second_body and first_headers["ETag"] == second_headers["ETag"]
    status, _, text, headers = await page(
        api, f"/archive/tag/{tag_id}/rss", **{"If-None-Match": first_headers["ETag"]}
    )
    assert (status, text, headers["ETag"]) == (304, "", first_headers["ETag"])
    # A campaign leaving the feed changes it, so the old ETag no longer matches.
    body = await api.call("campaign.update", user.api_key, CampaignID=campaign_id, PublishOnRSS="Disabled")
    assert body["Success"] is True, body
    status, _, text, _ = await page(api, f"/archive/tag/{tag_id}/rss", **{"If-None-Match": first_headers["ETag"]})
    assert status == 200 and "Stable subject" not in text
    assert feedparser.parse(text.encode()).entries == []


async def test_the_feeds_links_open_the_web_view_page(api: Api, system: System, user: User) -> None:
    tag_id = await create_tag(api, user, "linked feed")
    plain = await create_campaign(api, user, "Plain letter", publish_on_rss=True)
    rich = await create_campaign(api, user, "Rich letter", publish_on_rss=True)
    await assign(api, user, tag_id, plain, rich)
    plain_email = await create_email(system, user, "", subject="Plain & simple", plain="Just <text>.")
    rich_email = await create_email(system, user, "<p>Rich <b>content</b></p>", subject="Rich subject")
    await mark_sent(system, plain, datetime(2025, 6, 1, tzinfo=UTC), plain_email)
    await mark_sent(system, rich, datetime(2025, 6, 2, tzinfo=UTC), rich_email)

    parsed, _, _ = await read_feed(api, tag_id)

    assert [entry.title for entry in parsed.entries] == ["Rich subject", "Plain & simple"]
    for entry, date in zip(parsed.entries, ("2025-06-02", "2025-06-01"), strict=True):
        async with api.session.get(entry.link) as response:
            assert (response.status, response.content_type) == (200, "text/html"), entry.link
            text = await response.text()
        assert f"<title>{html.escape(entry.title)}</title>" in text
        assert f'<time datetime="{date}">{date}</time>' in text
        assert f'<a href="{system.base_url}/archive/tag/{tag_id}" class="herald-back">' in text
    async with api.session.get(parsed.entries[0].link) as response:
        assert "<p>Rich <b>content</b></p>" in srcdoc_of(await response.text())
    async with api.session.get(parsed.entries[1].link) as response:
        assert "Just &lt;text&gt;." in await response.text()


async def test_the_archive_page_links_its_feed_in_its_head(
    api: Api, system: System, user: User, template_host: tuple[Callable[[str], str], dict[str, str]]
) -> None:
    tag_id = await create_tag(api, user, "discoverable")
    feed_link = (
        '<link rel="alternate" type="application/rss+xml" title="Archive: discoverable" '
        f'href="{system.base_url}/archive/tag/{tag_id}/rss">'
    )

    _, _, text, _ = await page(api, f"/archive/tag/{tag_id}")
    assert feed_link in head_of(text)

    # A tag's own template gets the link at the end of its <head>.
    url, pages = template_host
    path = f"/template-{next(_paths)}.html"
    pages[path] = "<html><head><title>Acme</title></head><body>%Archive:Campaigns%</body></html>"
    body = await api.call("campaigns.archive.geturl", user.api_key, TagID=tag_id, TemplateURL=url(path))
    assert body["Success"] is True, body
    _, _, text, _ = await page(api, f"/archive/tag/{tag_id}")
    assert text.startswith(f"<html><head><title>Acme</title>{feed_link}</head><body>")


@pytest.mark.parametrize("tag", ["999999999", "abc", "0", "-1"])
async def test_the_feed_of_an_unknown_tag_answers_the_pages_404(api: Api, tag: str) -> None:
    status, content_type, text, _ = await page(api, f"/archive/tag/{tag}/rss")
    assert (status, content_type) == (404, "text/html") and "Not found" in text


async def test_another_users_campaign_never_reaches_a_feed(
    api: Api, system: System, user: User, make_user: Any
) -> None:
    tag_id = await create_tag(api, user, "mine only")
    stranger: User = await make_user()
    foreign = await create_campaign(api, stranger, "Stranger's letter", publish_on_rss=True)
    email_id = await create_email(system, stranger, "<p>Stranger</p>", subject="Stranger's subject")
    await mark_sent(system, foreign, datetime(2025, 6, 1, tzinfo=UTC), email_id)
    # The tag commands refuse another user's campaign; only the tag service's own table can do it.
    async with await psycopg.AsyncConnection.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO tag.campaign_tags (tag_id, campaign_id, owner_user_id) VALUES (%s, %s, %s)",
            (tag_id, foreign, user.user_id),
        )

    parsed, body, _ = await read_feed(api, tag_id)

    assert parsed.entries == [] and b"Stranger" not in body
