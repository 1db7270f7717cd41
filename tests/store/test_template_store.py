"""The template store's SQL on a real PostgreSQL: owner scoping, keyset pages with and without bodies, update, delete."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.campaign import email_store, template_store
from services.campaign.email_domain import Email, EmailMode
from services.campaign.template_domain import Template
from tests.store.conftest import new_id

SERVICES = ("campaign",)


async def _template(conn: AsyncConnection, owner: int, name: str = "Welcome") -> Template:
    return await template_store.insert_template(
        conn,
        Template(
            template_id=0,
            owner_user_id=owner,
            name=name,
            subject="Hi",
            preheader_text="Pre",
            html_content=f"<p>{name}</p>",
            plain_content=name,
        ),
    )


async def test_a_template_is_stored_with_its_fields_and_found_only_by_its_owner(conn: AsyncConnection) -> None:
    owner, other = new_id(), new_id()
    created = await _template(conn, owner)
    assert created.template_id > 0 and created.created_at is not None and created.created_at == created.updated_at
    assert (created.owner_user_id, created.name, created.subject, created.preheader_text) == (
        owner,
        "Welcome",
        "Hi",
        "Pre",
    )
    assert (created.html_content, created.plain_content) == ("<p>Welcome</p>", "Welcome")

    assert await template_store.template_by_id(conn, created.template_id, owner) == created
    assert await template_store.template_by_id(conn, created.template_id, None) == created
    assert await template_store.template_by_id(conn, created.template_id, other) is None
    assert await template_store.template_by_id(conn, created.template_id, owner, for_update=True) == created


async def test_pages_follow_the_ids_of_the_owners_templates_with_bodies_only_when_asked(
    conn: AsyncConnection,
) -> None:
    owner, other = new_id(), new_id()
    first, second = await _template(conn, owner, "A"), await _template(conn, owner, "B")
    theirs = await _template(conn, other, "C")
    third = await _template(conn, owner, "D")

    page = await template_store.templates_after(conn, owner, 0, 2, with_bodies=False)
    assert [t.template_id for t in page] == [first.template_id, second.template_id]
    assert all(t.html_content == t.plain_content == "" and t.subject == "Hi" for t in page)
    rest = await template_store.templates_after(conn, owner, second.template_id, 2, with_bodies=True)
    assert rest == [third]
    everyone = await template_store.templates_after(conn, None, first.template_id - 1, 10, with_bodies=True)
    assert [t.template_id for t in everyone] == [
        first.template_id,
        second.template_id,
        theirs.template_id,
        third.template_id,
    ]


async def test_an_update_sets_every_field_and_the_update_time(conn: AsyncConnection) -> None:
    owner = new_id()
    created = await _template(conn, owner)
    changed = Template(
        template_id=created.template_id,
        owner_user_id=owner,
        name="Renamed",
        subject="",
        preheader_text="",
        html_content="",
        plain_content="Text only",
    )
    saved = await template_store.update_template(conn, changed)
    assert saved is not None
    assert (saved.name, saved.subject, saved.html_content, saved.plain_content) == ("Renamed", "", "", "Text only")
    assert saved.created_at == created.created_at and saved.updated_at is not None
    assert (
        await template_store.update_template(
            conn, Template(template_id=saved.template_id + 1000, owner_user_id=owner)
        )
        is None
    )


async def test_a_delete_is_scoped_to_the_owner_and_leaves_the_emails_made_from_the_template(
    conn: AsyncConnection,
) -> None:
    owner, other = new_id(), new_id()
    created = await _template(conn, owner)
    email = await email_store.insert_email(
        conn,
        Email(
            email_id=0,
            owner_user_id=owner,
            mode=EmailMode.TEMPLATE,
            template_id=created.template_id,
            html_content=created.html_content,
        ),
    )
    assert await template_store.delete_template(conn, created.template_id, other) is None
    assert await template_store.delete_template(conn, created.template_id, owner) == created.template_id
    assert await template_store.delete_template(conn, created.template_id, owner) is None
    assert await template_store.template_by_id(conn, created.template_id, None) is None
    kept = await email_store.email_by_id(conn, email.email_id, owner)
    assert kept is not None and (kept.template_id, kept.html_content) == (created.template_id, "<p>Welcome</p>")
