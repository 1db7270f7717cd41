"""Email templates end to end: TemplateService over gRPC, email.create/email.update in Template mode and list.create's
confirmation email through the translator, and `herald template` against the running Herald."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from herald.campaign.v1 import email_pb2, email_pb2_grpc, template_pb2, template_pb2_grpc

from services.common.grpcutil import decode_error
from tests.conftest import ROOT, Api, System, User, grpc_metadata
from tests.e2e.template_helpers import new_template

pytestmark = pytest.mark.asyncio(loop_scope="session")

WELCOME = {
    "name": "Welcome",
    "subject": 'Hello {{ Subscriber:FirstName | "there" }}',
    "preheader_text": "A warm welcome",
    "html_content": '<p>Welcome!</p><a href="{{ Link:Unsubscribe }}">Leave</a>',
    "plain_content": "Welcome! Leave: {{ Link:Unsubscribe }}",
}


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def email_of(api: Api, user: User, email_id: int) -> dict[str, Any]:
    body = await api.call("email.get", user.api_key, EmailID=email_id)
    assert body["Success"] is True, body
    information: dict[str, Any] = body["EmailInformation"]
    return information


def content_of(information: dict[str, Any]) -> tuple[str, str, str, str]:
    return (
        information["Subject"],
        information["PreHeaderText"],
        information["HTMLContent"],
        information["PlainContent"],
    )


WELCOME_CONTENT = (
    WELCOME["subject"],
    WELCOME["preheader_text"],
    WELCOME["html_content"],
    WELCOME["plain_content"],
)


# --- TemplateService --------------------------------------------------------------------------------------------


async def test_templates_are_created_read_listed_updated_and_deleted_by_their_owner(
    system: System, make_user: Any
) -> None:
    owner = await make_user()
    as_owner = grpc_metadata(system, owner.user_id)
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        stub = template_pb2_grpc.TemplateServiceStub(channel)
        created = await stub.CreateTemplate(
            template_pb2.CreateTemplateRequest(template=template_pb2.Template(**WELCOME, owner_user_id=999)),
            metadata=as_owner,
            wait_for_ready=True,
            timeout=30,
        )
        assert created.template_id > 0 and created.owner_user_id == owner.user_id
        assert (created.name, created.subject, created.html_content) == (
            "Welcome",
            WELCOME["subject"],
            WELCOME["html_content"],
        )
        assert created.HasField("create_time") and created.update_time == created.create_time
        assert (
            await stub.GetTemplate(
                template_pb2.GetTemplateRequest(template_id=created.template_id), metadata=as_owner
            )
            == created
        )

        # Only the masked fields change; an empty value in the mask clears its field.
        updated = await stub.UpdateTemplate(
            template_pb2.UpdateTemplateRequest(
                template=template_pb2.Template(template_id=created.template_id, subject="New", name="ignored"),
                update_mask=field_mask_pb2.FieldMask(paths=["subject", "preheader_text"]),
            ),
            metadata=as_owner,
        )
        assert (updated.name, updated.subject, updated.preheader_text) == ("Welcome", "New", "")
        assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()
        # Without a mask, the fields the request sets.
        renamed = await stub.UpdateTemplate(
            template_pb2.UpdateTemplateRequest(
                template=template_pb2.Template(template_id=created.template_id, name=" Hi ")
            ),
            metadata=as_owner,
        )
        assert (renamed.name, renamed.subject) == ("Hi", "New")

        more = [
            await stub.CreateTemplate(
                template_pb2.CreateTemplateRequest(
                    template=template_pb2.Template(name=f"T{n}", plain_content="x")
                ),
                metadata=as_owner,
            )
            for n in range(2)
        ]
        first = await stub.ListTemplates(template_pb2.ListTemplatesRequest(page_size=2), metadata=as_owner)
        assert [t.template_id for t in first.templates] == [created.template_id, more[0].template_id]
        assert (
            first.templates[0].html_content == "" and first.templates[0].subject == "New" and first.next_page_token
        )
        last = await stub.ListTemplates(
            template_pb2.ListTemplatesRequest(
                page_size=2, page_token=first.next_page_token, view=template_pb2.TEMPLATE_VIEW_FULL
            ),
            metadata=as_owner,
        )
        assert list(last.templates) == [more[1]] and last.next_page_token == ""

        await stub.DeleteTemplate(
            template_pb2.DeleteTemplateRequest(template_id=created.template_id), metadata=as_owner
        )
        gone = await rpc_error(
            stub.GetTemplate(template_pb2.GetTemplateRequest(template_id=created.template_id), metadata=as_owner)
        )
        assert gone.code() == grpc.StatusCode.NOT_FOUND and decode_error(gone).reason == "TEMPLATE_NOT_FOUND"
        listed = await stub.ListTemplates(template_pb2.ListTemplatesRequest(), metadata=as_owner)
        assert [t.template_id for t in listed.templates] == [t.template_id for t in more]


async def test_another_users_template_is_not_found_exactly_like_one_nobody_has(
    system: System, make_user: Any
) -> None:
    owner, stranger = await make_user(), await make_user()
    template = await new_template(system, owner.user_id, **WELCOME)
    as_stranger = grpc_metadata(system, stranger.user_id)
    unknown = template.template_id + 1_000_000
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        stub = template_pb2_grpc.TemplateServiceStub(channel)
        for template_id in (template.template_id, unknown):
            answers = [
                await rpc_error(
                    stub.GetTemplate(
                        template_pb2.GetTemplateRequest(template_id=template_id), metadata=as_stranger
                    )
                ),
                await rpc_error(
                    stub.UpdateTemplate(
                        template_pb2.UpdateTemplateRequest(
                            template=template_pb2.Template(template_id=template_id, name="Mine now"),
                            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                        ),
                        metadata=as_stranger,
                    )
                ),
                await rpc_error(
                    stub.DeleteTemplate(
                        template_pb2.DeleteTemplateRequest(template_id=template_id), metadata=as_stranger
                    )
                ),
            ]
            for error in answers:
                failure = decode_error(error)
                assert error.code() == grpc.StatusCode.NOT_FOUND and failure.reason == "TEMPLATE_NOT_FOUND"
                assert error.details() == f"template {template_id} not found"
        theirs = await stub.ListTemplates(template_pb2.ListTemplatesRequest(), metadata=as_stranger)
        assert list(theirs.templates) == []
        peek = await rpc_error(
            stub.ListTemplates(
                template_pb2.ListTemplatesRequest(owner_user_id=owner.user_id), metadata=as_stranger
            )
        )
        assert peek.code() == grpc.StatusCode.PERMISSION_DENIED

        # Untouched, and an admin sees it (and may name its owner) but cannot own one.
        as_admin = grpc_metadata(system, 0, is_admin=True)
        kept = await stub.GetTemplate(
            template_pb2.GetTemplateRequest(template_id=template.template_id), metadata=as_admin
        )
        assert kept == template
        listed = await stub.ListTemplates(
            template_pb2.ListTemplatesRequest(owner_user_id=owner.user_id, view=template_pb2.TEMPLATE_VIEW_FULL),
            metadata=as_admin,
        )
        assert list(listed.templates) == [template]
        refused = await rpc_error(
            stub.CreateTemplate(
                template_pb2.CreateTemplateRequest(template=template_pb2.Template(**WELCOME)), metadata=as_admin
            )
        )
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert decode_error(refused).reason == "ADMIN_CANNOT_OWN_TEMPLATES"


async def test_template_errors_name_every_bad_field(system: System, user: User) -> None:
    as_user = grpc_metadata(system, user.user_id)
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        stub = template_pb2_grpc.TemplateServiceStub(channel)
        bad = await rpc_error(
            stub.CreateTemplate(
                template_pb2.CreateTemplateRequest(
                    template=template_pb2.Template(name=" ", subject="{{ Subscriber:FirstName", html_content="")
                ),
                metadata=as_user,
                wait_for_ready=True,
                timeout=30,
            )
        )
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert decode_error(bad).field_reasons() == [
            ("subject", "PERSONALIZATION_TAG_INVALID"),
            ("name", "TEMPLATE_NAME_REQUIRED"),
            ("html_content", "TEMPLATE_CONTENT_REQUIRED"),
        ]
        mask = await rpc_error(
            stub.UpdateTemplate(
                template_pb2.UpdateTemplateRequest(
                    template=template_pb2.Template(template_id=1),
                    update_mask=field_mask_pb2.FieldMask(paths=["owner_user_id"]),
                ),
                metadata=as_user,
            )
        )
        assert decode_error(mask).field_reasons() == [("update_mask", "UPDATE_MASK_INVALID")]
        token = await rpc_error(
            stub.ListTemplates(template_pb2.ListTemplatesRequest(page_token="junk"), metadata=as_user)
        )
        assert decode_error(token).field_reasons() == [("page_token", "PAGE_TOKEN_INVALID")]
        missing = await rpc_error(stub.GetTemplate(template_pb2.GetTemplateRequest(), metadata=as_user))
        assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- email.create / email.update in Template mode ------------------------------------------------------------


async def test_email_create_in_template_mode_copies_the_template_and_later_edits_stay_out(
    api: Api, system: System, user: User
) -> None:
    template = await new_template(system, user.user_id, **WELCOME)
    body = await api.call("email.create", user.api_key, Mode="Template", RelTemplateID=template.template_id)
    assert set(body) == {"Success", "ErrorCode", "EmailID"} and body["Success"] is True, body
    email = await email_of(api, user, body["EmailID"])
    assert content_of(email) == WELCOME_CONTENT
    assert (email["Mode"], email["RelTemplateID"], email["ContentType"]) == (
        "Template",
        template.template_id,
        "Both",
    )

    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        await template_pb2_grpc.TemplateServiceStub(channel).UpdateTemplate(
            template_pb2.UpdateTemplateRequest(
                template=template_pb2.Template(template_id=template.template_id, html_content="<p>Changed</p>"),
                update_mask=field_mask_pb2.FieldMask(paths=["html_content"]),
            ),
            metadata=grpc_metadata(system, user.user_id),
        )
    assert (await email_of(api, user, body["EmailID"]))["HTMLContent"] == WELCOME["html_content"]

    # The email is ready for a campaign as it is: email.update validates it without new content.
    body = await api.call(
        "email.update", user.api_key, EmailID=body["EmailID"], ValidateScope="Campaign", FromName="Ada"
    )
    assert body == {"Success": True, "ErrorCode": 0}


async def test_email_update_in_template_mode_copies_what_the_request_does_not_set(
    api: Api, system: System, user: User
) -> None:
    template = await new_template(system, user.user_id, **WELCOME)
    email_id = (await api.call("email.create", user.api_key))["EmailID"]
    await api.call(
        "email.update",
        user.api_key,
        EmailID=email_id,
        ValidateScope="Campaign",
        HTMLContent="<p>Mine</p>",
        Subject="Old",
    )
    body = await api.call(
        "email.update",
        user.api_key,
        EmailID=email_id,
        ValidateScope="Campaign",
        Mode="Template",
        RelTemplateID=template.template_id,
        Subject="My own subject",
    )
    assert body == {"Success": True, "ErrorCode": 0}, body
    email = await email_of(api, user, email_id)
    assert content_of(email) == ("My own subject", *WELCOME_CONTENT[1:])
    assert (email["Mode"], email["RelTemplateID"]) == ("Template", template.template_id)

    # Later edits of the email are its own: an update that names no template copies nothing.
    await api.call(
        "email.update", user.api_key, EmailID=email_id, ValidateScope="Campaign", HTMLContent="<p>Edited</p>"
    )
    email = await email_of(api, user, email_id)
    assert email["HTMLContent"] == "<p>Edited</p>" and email["Subject"] == "My own subject"


async def test_an_unknown_or_another_users_template_answers_5_and_changes_nothing(
    api: Api, system: System, make_user: Any
) -> None:
    owner, stranger = await make_user(), await make_user()
    theirs = await new_template(system, owner.user_id, **WELCOME)
    unknown = theirs.template_id + 1_000_000
    email_id = (await api.call("email.create", stranger.api_key))["EmailID"]
    await api.call(
        "email.update", stranger.api_key, EmailID=email_id, ValidateScope="Campaign", HTMLContent="<p>Mine</p>"
    )
    answers = []
    for template_id in (theirs.template_id, unknown):
        created = await api.call("email.create", stranger.api_key, Mode="Template", RelTemplateID=template_id)
        updated = await api.call(
            "email.update",
            stranger.api_key,
            EmailID=email_id,
            ValidateScope="Campaign",
            Mode="Template",
            RelTemplateID=template_id,
        )
        answers += [created, updated]
        assert created["Success"] is False and created["ErrorCode"] == [5], created
        assert updated["Success"] is False and updated["ErrorCode"] == [5], updated
    # The same answer for both, so that the answer tells nothing about another user's templates.
    assert (
        answers[0]["ErrorText"] == answers[2]["ErrorText"] and answers[1]["ErrorText"] == answers[3]["ErrorText"]
    )
    email = await email_of(api, stranger, email_id)
    assert (email["HTMLContent"], email["Mode"], email["RelTemplateID"]) == ("<p>Mine</p>", "Empty", 0)
    assert (await api.call("emails.get", stranger.api_key))["TotalEmailCount"] == 1

    # Every problem at once, and the other email.create codes.
    mixed = await api.call(
        "email.update",
        stranger.api_key,
        EmailID=email_id,
        ValidateScope="Campaign",
        RelTemplateID=unknown,
        FromEmail="x",
    )
    assert mixed["ErrorCode"] == [5, 6], mixed
    for params, code in (
        ({"Mode": "Template"}, [5]),
        ({"Mode": "Template", "RelTemplateID": "x"}, [5]),
        ({"Mode": "Crayon"}, [4]),
    ):
        body = await api.call("email.create", stranger.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == code, (params, body)


async def test_create_email_over_grpc_refuses_an_admins_template_choice_for_another_user(
    system: System, make_user: Any
) -> None:
    owner, stranger = await make_user(), await make_user()
    theirs = await new_template(system, owner.user_id, **WELCOME)
    async with grpc.aio.insecure_channel(system.grpc_target("campaign")) as channel:
        emails = email_pb2_grpc.EmailServiceStub(channel)
        mine = await emails.CreateEmail(
            email_pb2.CreateEmailRequest(), metadata=grpc_metadata(system, stranger.user_id)
        )
        # An admin updating the stranger's email cannot copy the owner's template into it.
        refused = await rpc_error(
            emails.UpdateEmail(
                email_pb2.UpdateEmailRequest(
                    email=email_pb2.Email(
                        email_id=mine.email_id, mode=email_pb2.EMAIL_MODE_TEMPLATE, template_id=theirs.template_id
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["mode", "template_id"]),
                    validate_scope=email_pb2.VALIDATE_SCOPE_CAMPAIGN,
                ),
                metadata=grpc_metadata(system, 0, is_admin=True),
            )
        )
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("template_id", "TEMPLATE_NOT_FOUND") in decode_error(refused).field_reasons()
        made = await emails.CreateEmail(
            email_pb2.CreateEmailRequest(mode=email_pb2.EMAIL_MODE_TEMPLATE, template_id=theirs.template_id),
            metadata=grpc_metadata(system, owner.user_id),
        )
        assert (made.subject, made.plain_content, made.content_type) == (
            WELCOME["subject"],
            WELCOME["plain_content"],
            email_pb2.CONTENT_TYPE_BOTH,
        )


# --- list.create's confirmation email -------------------------------------------------------------------------


async def test_a_confirmation_email_names_one_of_the_callers_templates_or_answers_26(
    api: Api, system: System, make_user: Any
) -> None:
    owner, stranger = await make_user(), await make_user()
    template = await new_template(system, owner.user_id, **WELCOME)
    confirmation = {
        "Subject": "Please confirm",
        "FromName": "Ada",
        "FromEmail": "ada@example.com",
        "ContentType": "HTML",
        "HTMLContent": "<p>Confirm: %Link:Confirm%</p>",
        "Mode": "Template",
        "RelTemplateID": template.template_id,
    }
    refused = await api.call(
        "list.create", stranger.api_key, SubscriberListName="x", ConfirmationEmail=confirmation
    )
    assert refused["Success"] is False and refused["ErrorCode"] == [26], refused
    assert (await api.call("lists.get", stranger.api_key))["TotalListCount"] == 0
    assert (await api.call("emails.get", stranger.api_key))["TotalEmailCount"] == 0

    # The owner's own: the content given is the confirmation email's (the fact sheet requires it), the template
    # is where it came from.
    created = await api.call("list.create", owner.api_key, SubscriberListName="x", ConfirmationEmail=confirmation)
    assert created["Success"] is True, created
    email = await email_of(api, owner, created["ConfirmationEmailID"])
    assert (email["Subject"], email["HTMLContent"]) == ("Please confirm", "<p>Confirm: %Link:Confirm%</p>")
    assert (email["Mode"], email["RelTemplateID"]) == ("Template", template.template_id)


# --- herald template ----------------------------------------------------------------------------------------


async def herald(system: System, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", *args],
        env=system.env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def printed(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0 and "Traceback" not in result.stderr, (result.returncode, result.stderr)
    return json.loads(result.stdout)


def failed_with(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1 and result.stdout == "", (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    message: str = json.loads(lines[0])["Error"]
    return message


async def test_herald_template_round_trip_and_an_email_made_from_it(
    api: Api, system: System, make_user: Any, tmp_path: Path
) -> None:
    user, stranger = await make_user(), await make_user()
    html = tmp_path / "welcome.html"
    html.write_text("<p>Héllo {{ Subscriber:FirstName }}</p>\n", encoding="utf-8")
    created = printed(
        await herald(
            system,
            "template", "create", "--user", str(user.user_id), "--name", "Welcome", "--subject", "Hi",
            "--html", str(html), "--text", "-",
            stdin="Hello from stdin\n",
        )
    )  # fmt: skip
    template_id = created["TemplateID"]
    assert created["UserID"] == user.user_id and created["Name"] == "Welcome" and created["Subject"] == "Hi"
    assert (created["HTMLContent"], created["PlainContent"]) == (
        html.read_text(encoding="utf-8"),
        "Hello from stdin\n",
    )
    assert set(created) == {
        "TemplateID", "UserID", "Name", "Subject", "PreHeaderText", "HTMLContent", "PlainContent", "CreatedOn", "UpdatedOn",
    }  # fmt: skip

    shown = printed(
        await herald(system, "template", "show", "--id", str(template_id), "--user", str(user.user_id))
    )
    assert shown == created
    updated = printed(
        await herald(
            system,
            "template",
            "update",
            "--id",
            str(template_id),
            "--user",
            str(user.user_id),
            "--subject",
            "",
            "--preheader",
            "Soon",
        )
    )
    assert (updated["Subject"], updated["PreHeaderText"], updated["HTMLContent"]) == (
        "",
        "Soon",
        created["HTMLContent"],
    )
    listed = printed(await herald(system, "template", "list", "--user", str(user.user_id)))
    assert [row["TemplateID"] for row in listed] == [template_id] and "HTMLContent" not in listed[0]
    assert template_id in [row["TemplateID"] for row in printed(await herald(system, "template", "list"))]

    # A legacy client makes an email from it.
    body = await api.call("email.create", user.api_key, Mode="Template", RelTemplateID=template_id)
    email = await email_of(api, user, body["EmailID"])
    assert (email["HTMLContent"], email["PlainContent"], email["PreHeaderText"]) == (
        created["HTMLContent"],
        "Hello from stdin\n",
        "Soon",
    )

    # Another user's template is as unknown as one nobody has; failures are one line.
    other = await herald(system, "template", "show", "--id", str(template_id), "--user", str(stranger.user_id))
    assert failed_with(other) == f"template {template_id} not found"
    assert failed_with(
        await herald(system, "template", "create", "--user", str(user.user_id), "--name", "Empty")
    ) == ("a template needs html_content or plain_content")
    missing = await herald(
        system,
        "template",
        "create",
        "--user",
        str(user.user_id),
        "--name",
        "x",
        "--html",
        str(tmp_path / "nope.html"),
    )
    assert failed_with(missing).startswith(f"cannot read --html {tmp_path / 'nope.html'}")
    assert failed_with(await herald(system, "template", "update", "--id", str(template_id))).startswith(
        "nothing to change"
    )
    assert failed_with(
        await herald(system, "template", "create", "--user", "999999999", "--name", "x", "--text", "-")
    ) == ("no user 999999999")

    deleted = printed(
        await herald(system, "template", "delete", "--id", str(template_id), "--user", str(user.user_id))
    )
    assert deleted == {"TemplateID": template_id, "Deleted": True}
    again = await herald(system, "template", "delete", "--id", str(template_id))
    assert failed_with(again) == f"template {template_id} not found"
    # The email keeps its copy.
    assert (await email_of(api, user, body["EmailID"]))["HTMLContent"] == created["HTMLContent"]
