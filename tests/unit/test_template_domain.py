"""Pure tests of the template rules: creation and update checks, ownership, update masks and list pages."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.campaign import template_domain
from services.campaign.template_domain import Template, TemplatePage
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind

CURRENT = Template(template_id=4, owner_user_id=7, name="Welcome", subject="Hi", html_content="<p>Hi</p>")


def _error(call: Callable[[], object]) -> DomainError:
    with pytest.raises(DomainError) as info:
        call()
    return info.value


def _reasons(error: DomainError) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in error.violations]


def test_a_new_template_keeps_its_fields_with_the_name_trimmed() -> None:
    template = template_domain.new_template(
        7,
        {
            "name": "  Welcome  ",
            "subject": 'Hi {{ Subscriber:FirstName | "there" }}',
            "preheader_text": "{{ Link:WebBrowser }}",
            "html_content": "<p>Hi</p>",
            "plain_content": "",
        },
    )
    assert template == Template(
        template_id=0,
        owner_user_id=7,
        name="Welcome",
        subject='Hi {{ Subscriber:FirstName | "there" }}',
        preheader_text="{{ Link:WebBrowser }}",
        html_content="<p>Hi</p>",
    )


def test_a_template_needs_a_name_and_a_body() -> None:
    error = _error(
        lambda: template_domain.new_template(7, {"name": "   ", "html_content": " ", "plain_content": ""})
    )
    assert error.kind is ErrorKind.INVALID
    assert _reasons(error) == [("name", "TEMPLATE_NAME_REQUIRED"), ("html_content", "TEMPLATE_CONTENT_REQUIRED")]
    assert template_domain.new_template(7, {"name": "Plain", "plain_content": "Hi"}).plain_content == "Hi"


def test_texts_follow_the_email_rules_and_every_problem_is_named_once() -> None:
    error = _error(
        lambda: template_domain.new_template(
            7,
            {
                "name": "x" * 256,
                "subject": "Leave: %Link:Unsubscribe%",
                "preheader_text": "a\x00b",
                "html_content": "<p>{{ Subscriber:FirstName</p>",
            },
        )
    )
    # A bad name or body is not named again as missing.
    assert _reasons(error) == [
        ("name", "TEXT_TOO_LONG"),
        ("subject", "PERSONALIZATION_TAG_INVALID"),
        ("preheader_text", "TEXT_INVALID"),
        ("html_content", "PERSONALIZATION_TAG_INVALID"),
    ]


def test_an_admin_owns_no_templates_and_sees_everyones() -> None:
    error = _error(lambda: template_domain.owner_of_new_template(Principal(user_id=0, is_admin=True)))
    assert error.kind is ErrorKind.PERMISSION and error.reason == "ADMIN_CANNOT_OWN_TEMPLATES"
    assert template_domain.owner_of_new_template(Principal(user_id=3)) == 3
    assert template_domain.owner_scope(Principal(user_id=0, is_admin=True)) is None
    assert template_domain.owner_scope(Principal(user_id=3)) == 3


def test_only_an_admin_lists_another_users_templates() -> None:
    admin = Principal(user_id=0, is_admin=True)
    assert template_domain.list_owner(admin, 0) is None and template_domain.list_owner(admin, 9) == 9
    assert template_domain.list_owner(Principal(user_id=3), 0) == 3
    assert template_domain.list_owner(Principal(user_id=3), 3) == 3
    error = _error(lambda: template_domain.list_owner(Principal(user_id=3), 9))
    assert error.kind is ErrorKind.PERMISSION and "templates" in error.message


def test_an_update_changes_only_the_masked_fields() -> None:
    update = template_domain.prepare_update(4, {"subject": "New", "plain_content": "Text"})
    result = template_domain.updated_template(update, CURRENT)
    assert result == Template(
        template_id=4,
        owner_user_id=7,
        name="Welcome",
        subject="New",
        html_content="<p>Hi</p>",
        plain_content="Text",
    )


def test_an_update_may_not_leave_a_template_without_a_name_or_a_body() -> None:
    update = template_domain.prepare_update(4, {"name": "", "html_content": ""})
    assert _reasons(_error(lambda: template_domain.updated_template(update, CURRENT))) == [
        ("name", "TEMPLATE_NAME_REQUIRED"),
        ("html_content", "TEMPLATE_CONTENT_REQUIRED"),
    ]


def test_a_bad_update_is_invalid_even_for_a_missing_template_and_a_good_one_not_found() -> None:
    bad = template_domain.prepare_update(0, {"owner_user_id": 9})
    error = _error(lambda: template_domain.updated_template(bad, None))
    assert error.kind is ErrorKind.INVALID
    assert _reasons(error) == [
        ("template.template_id", "TEMPLATE_ID_REQUIRED"),
        ("update_mask", "UPDATE_MASK_INVALID"),
    ]
    missing = _error(
        lambda: template_domain.updated_template(template_domain.prepare_update(4, {"name": "x"}), None)
    )
    assert missing.kind is ErrorKind.NOT_FOUND and missing.reason == "TEMPLATE_NOT_FOUND"
    assert missing.metadata == {"template_id": "4"}


def test_the_update_paths_are_the_mask_every_field_or_the_fields_set() -> None:
    assert template_domain.update_paths(["subject", "subject", "name"], []) == ["subject", "name"]
    assert template_domain.update_paths(["*"], []) == list(template_domain.FIELDS)
    assert template_domain.update_paths([], ["plain_content", "name"]) == ["name", "plain_content"]
    # A path that names no field is kept for the update to refuse.
    assert template_domain.update_paths(["html"], []) == ["html"]


def test_pages_have_a_default_and_a_maximum_size() -> None:
    assert template_domain.page_of(0, "") == TemplatePage(0, template_domain.DEFAULT_PAGE_SIZE)
    assert template_domain.page_of(10_000, "") == TemplatePage(0, template_domain.MAX_PAGE_SIZE)
    assert _reasons(_error(lambda: template_domain.page_of(-1, ""))) == [("page_size", "PAGE_SIZE_INVALID")]


def test_a_page_token_carries_the_last_id_and_forged_ones_are_refused() -> None:
    token = template_domain.next_page_token(41)
    assert template_domain.page_of(5, token) == TemplatePage(41, 5)
    for forged in ("nope", "YWZ0ZXI6LTE", template_domain.next_page_token(0), "x" * 100, "%%%"):
        assert _reasons(_error(lambda forged=forged: template_domain.page_of(5, forged))) == [
            ("page_token", "PAGE_TOKEN_INVALID")
        ], forged
