"""Pure tests of the email rules: update validation per scope and the personalization tag parser and renderer."""

from __future__ import annotations

import html
import itertools
import urllib.parse
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.campaign import email_domain
from services.campaign.domain import Unrecognized
from services.campaign.email_domain import (
    ContentType,
    Email,
    EmailMode,
    Helper,
    Tag,
    Utm,
    ValidateScope,
    parse_personalization,
    personalization_problems,
    render_personalization,
)
from services.campaign.template_domain import Template
from services.common.auth import Principal
from services.common.errors import DomainError, ErrorKind

CAMPAIGN = ValidateScope.CAMPAIGN
SHELL = Email(email_id=5, owner_user_id=7)
FILLED = Email(email_id=5, owner_user_id=7, html_content="<p>Hi</p>")
# Template 3 of the emails' owner (7).
WELCOME = Template(
    template_id=3,
    owner_user_id=7,
    name="Welcome",
    subject="Hi {{ Subscriber:FirstName }}",
    preheader_text="Read on",
    html_content="<p>Welcome</p>",
    plain_content="Welcome",
)


def _error(call: Callable[[], object]) -> DomainError:
    with pytest.raises(DomainError) as info:
        call()
    return info.value


def _reasons(error: DomainError) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in error.violations]


def _update(
    values: Mapping[str, object],
    current: Email | None = FILLED,
    scope: ValidateScope | Unrecognized | None = CAMPAIGN,
    template: Template | None = None,
) -> Email:
    update = email_domain.prepare_update(5, scope, values)
    return email_domain.updated_email(update, current, template=template)


# --- ownership and ids --------------------------------------------------------------------------------------


def test_an_admin_cannot_own_an_email() -> None:
    error = _error(lambda: email_domain.owner_of_new_email(Principal(user_id=0, is_admin=True)))
    assert error.kind is ErrorKind.PERMISSION and error.reason == "ADMIN_CANNOT_OWN_EMAILS"
    assert email_domain.owner_of_new_email(Principal(user_id=3)) == 3


def test_listing_more_than_100_distinct_ids_is_refused_but_duplicates_count_once() -> None:
    assert email_domain.listed_email_ids([1, 1, 2]) == [1, 2]
    assert len(email_domain.listed_email_ids(list(range(1, 101)) * 2)) == 100
    assert _reasons(_error(lambda: email_domain.listed_email_ids(list(range(1, 102))))) == [
        ("email_ids", "EMAIL_IDS_TOO_MANY")
    ]


# --- updates ------------------------------------------------------------------------------------------------


def test_an_update_changes_only_the_masked_fields() -> None:
    email = _update({"subject": "Hello %Subscriber:FirstName%", "utm.source": "news"})
    assert email.subject == "Hello %Subscriber:FirstName%"
    assert email.html_content == "<p>Hi</p>" and email.utm == Utm(source="news")


def test_the_content_type_follows_the_bodies_sent_unless_given() -> None:
    assert _update({"plain_content": "hi"}).content_type is ContentType.BOTH
    assert _update({"html_content": "", "plain_content": "hi"}).content_type is ContentType.PLAIN
    given_type = _update({"plain_content": "hi", "content_type": ContentType.PLAIN})
    assert given_type.content_type is ContentType.PLAIN


def test_every_scope_needs_the_content_its_type_demands() -> None:
    for scope in ValidateScope:
        error = _error(lambda scope=scope: _update({"name": "x"}, SHELL, scope))  # type: ignore[misc]
        assert _reasons(error) == [("html_content", "EMAIL_CONTENT_REQUIRED")]
    both = _error(lambda: _update({"content_type": ContentType.BOTH}))
    assert _reasons(both) == [("plain_content", "EMAIL_CONTENT_REQUIRED")]


def test_settings_herald_does_not_implement_are_refused_unless_left_at_their_default() -> None:
    """Issue 14: nothing fetches FetchURL, embeds images, makes a template or personalizes UTM values, so only
    the defaults are accepted; Import mode needs its bodies like every mode."""
    values = {
        "mode": EmailMode.IMPORT,
        "fetch_url": "https://example.com/a.html",
        "fetch_plain_url": "https://example.com/a.txt",
        "image_embedding": True,
        "is_email_template": True,
        "utm.merge_tags": True,
    }
    error = _error(lambda: _update(values, SHELL))
    assert error.kind is ErrorKind.INVALID
    unsupported = {field for field, reason in _reasons(error) if reason == "SETTING_UNSUPPORTED"}
    assert unsupported == {
        "fetch_url",
        "fetch_plain_url",
        "image_embedding",
        "is_email_template",
        "utm.merge_tags",
    }
    assert all("not supported" in v.description for v in error.violations if v.reason == "SETTING_UNSUPPORTED")
    defaults = {name: "" if name.startswith("fetch") else False for name in values if name != "mode"}
    email = _update({"mode": EmailMode.IMPORT, "html_content": "<p>x</p>", **defaults}, SHELL)
    assert (email.mode, email.fetch_url, email.image_embedding) == (EmailMode.IMPORT, "", False)
    no_body = _error(lambda: _update({"mode": EmailMode.IMPORT, "html_content": ""}, SHELL))
    assert _reasons(no_body) == [("html_content", "EMAIL_CONTENT_REQUIRED")]


def test_every_problem_of_an_update_is_named_at_once() -> None:
    values = {
        "mode": None,
        "from_email": "not an address",
        "reply_to_email": "also@not@valid",
        "subject": "{{ Nobody:Field }}",
        "html_content": "",
        "utm.enabled": True,
        "utm.medium": "email",
    }
    error = _error(lambda: _update(values))
    assert error.kind is ErrorKind.INVALID
    assert sorted(_reasons(error)) == sorted(
        [
            ("mode", "MODE_INVALID"),
            ("from_email", "FROM_EMAIL_INVALID"),
            ("reply_to_email", "REPLY_TO_EMAIL_INVALID"),
            ("subject", "PERSONALIZATION_TAG_INVALID"),
            ("html_content", "EMAIL_CONTENT_REQUIRED"),
            ("utm.source", "UTM_SOURCE_REQUIRED"),
            ("utm.campaign", "UTM_CAMPAIGN_REQUIRED"),
        ]
    )


def test_the_scope_is_required_and_must_be_known() -> None:
    missing = _error(lambda: _update({}, scope=None))
    assert _reasons(missing) == [("validate_scope", "VALIDATE_SCOPE_REQUIRED")]
    unknown = _error(lambda: _update({}, scope=Unrecognized(42)))
    assert _reasons(unknown) == [("validate_scope", "VALIDATE_SCOPE_INVALID")]


def test_a_bad_request_for_a_missing_email_is_invalid_and_a_good_one_not_found() -> None:
    assert _error(lambda: _update({"mode": None}, None)).kind is ErrorKind.INVALID
    not_found = _error(lambda: _update({"name": "x"}, None))
    assert not_found.kind is ErrorKind.NOT_FOUND and not_found.reason == "EMAIL_NOT_FOUND"


def test_template_mode_needs_a_template_id() -> None:
    error = _error(lambda: _update({"mode": EmailMode.TEMPLATE}))
    assert _reasons(error) == [("template_id", "TEMPLATE_ID_REQUIRED")]
    assert _update({"mode": EmailMode.TEMPLATE, "template_id": 3}, template=WELCOME).template_id == 3


def test_template_mode_copies_the_templates_content_and_the_content_type_follows() -> None:
    email = _update({"mode": EmailMode.TEMPLATE, "template_id": 3}, current=FILLED, template=WELCOME)
    assert (email.subject, email.preheader_text, email.html_content, email.plain_content) == (
        "Hi {{ Subscriber:FirstName }}",
        "Read on",
        "<p>Welcome</p>",
        "Welcome",
    )
    assert email.content_type is ContentType.BOTH and email.mode is EmailMode.TEMPLATE
    # An HTML-only template replaces the plain body too: the email is a copy of the template.
    html_only = Template(template_id=3, owner_user_id=7, name="H", html_content="<p>H</p>")
    email = _update(
        {"mode": EmailMode.TEMPLATE, "template_id": 3},
        current=Email(5, 7, plain_content="old"),
        template=html_only,
    )
    assert (email.plain_content, email.content_type) == ("", ContentType.HTML)


def test_the_fields_an_update_sets_win_over_the_templates() -> None:
    email = _update(
        {"mode": EmailMode.TEMPLATE, "template_id": 3, "subject": "Mine", "plain_content": ""}, template=WELCOME
    )
    assert (email.subject, email.plain_content) == ("Mine", "")
    assert (email.preheader_text, email.html_content, email.content_type) == (
        "Read on",
        "<p>Welcome</p>",
        ContentType.HTML,
    )


def test_switching_to_template_mode_copies_the_template_the_email_names() -> None:
    current = Email(email_id=5, owner_user_id=7, html_content="<p>Mine</p>", template_id=3)
    email = _update({"mode": EmailMode.TEMPLATE}, current=current, template=WELCOME)
    assert email.html_content == "<p>Welcome</p>"
    assert (
        email_domain.named_template_id(
            email_domain.prepare_update(5, CAMPAIGN, {"mode": EmailMode.TEMPLATE}), current
        )
        == 3
    )


def test_an_update_that_names_no_template_copies_nothing() -> None:
    current = Email(
        email_id=5, owner_user_id=7, mode=EmailMode.TEMPLATE, template_id=3, html_content="<p>Edited</p>"
    )
    update = email_domain.prepare_update(5, CAMPAIGN, {"subject": "New"})
    assert email_domain.named_template_id(update, current) == 0
    email = email_domain.updated_email(update, current, template=None)
    assert (email.subject, email.html_content) == ("New", "<p>Edited</p>")


def test_an_unknown_or_another_owners_template_is_not_found_with_every_other_problem() -> None:
    values = {"mode": EmailMode.TEMPLATE, "template_id": 3, "from_email": "nope"}
    for template in (None, Template(template_id=3, owner_user_id=8, name="Theirs", html_content="<p>x</p>")):
        error = _error(lambda template=template: _update(values, template=template))
        assert error.kind is ErrorKind.INVALID
        assert _reasons(error) == [("from_email", "FROM_EMAIL_INVALID"), ("template_id", "TEMPLATE_NOT_FOUND")]


def test_a_template_id_outside_template_mode_must_exist_but_copies_nothing() -> None:
    assert _reasons(_error(lambda: _update({"template_id": 3}))) == [("template_id", "TEMPLATE_NOT_FOUND")]
    email = _update({"template_id": 3}, template=WELCOME)
    assert (email.template_id, email.html_content, email.mode) == (3, "<p>Hi</p>", EmailMode.EMPTY)


def test_a_new_email_in_template_mode_is_a_copy_of_the_template() -> None:
    email = email_domain.new_email(7, EmailMode.TEMPLATE, 3, template=WELCOME)
    assert (email.owner_user_id, email.mode, email.template_id) == (7, EmailMode.TEMPLATE, 3)
    assert (email.subject, email.html_content, email.plain_content) == (
        WELCOME.subject,
        "<p>Welcome</p>",
        "Welcome",
    )
    assert email.content_type is ContentType.BOTH and email.name == ""
    assert email_domain.new_email(7, None, 0, template=None) == Email(email_id=0, owner_user_id=7)


def test_a_new_email_names_every_problem_of_its_mode_and_template() -> None:
    def reasons(
        mode: EmailMode | Unrecognized | None, template_id: int, template: Template | None = None
    ) -> list[tuple[str, str]]:
        return _reasons(_error(lambda: email_domain.new_email(7, mode, template_id, template=template)))

    assert reasons(EmailMode.TEMPLATE, 0) == [("template_id", "TEMPLATE_ID_REQUIRED")]
    assert reasons(Unrecognized(42), -1) == [("mode", "MODE_INVALID"), ("template_id", "TEMPLATE_ID_INVALID")]
    assert reasons(EmailMode.TEMPLATE, 3) == [("template_id", "TEMPLATE_NOT_FOUND")]
    theirs = Template(template_id=3, owner_user_id=8, name="Theirs", html_content="<p>x</p>")
    assert reasons(EmailMode.TEMPLATE, 3, theirs) == [("template_id", "TEMPLATE_NOT_FOUND")]


def test_addresses_are_trimmed_and_may_be_cleared() -> None:
    assert _update({"from_email": " News@Example.COM "}).from_email == "News@Example.COM"
    assert _update({"reply_to_email": ""}).reply_to_email == ""


def test_nul_characters_long_texts_and_unknown_paths_are_refused() -> None:
    error = _error(lambda: _update({"name": "a\x00b", "subject": "x" * 1001, "owner_user_id": 3}))
    assert _reasons(error) == [
        ("name", "TEXT_INVALID"),
        ("subject", "TEXT_TOO_LONG"),
        ("update_mask", "UPDATE_MASK_INVALID"),
    ]


def test_link_tags_belong_in_the_body_not_the_subject() -> None:
    error = _error(lambda: _update({"subject": "Leave: %Link:Unsubscribe%"}))
    assert _reasons(error) == [("subject", "PERSONALIZATION_TAG_INVALID")]
    assert _update({"html_content": '<a href="%Link:Unsubscribe%">x</a>'}).html_content


def test_the_link_tags_herald_renders_are_accepted_and_the_others_refused_by_name() -> None:
    rendered = "%Link:Unsubscribe% %Link:WebBrowser% {{ Link:ReportAbuse }} %link:webbrowser%"
    assert _update({"html_content": rendered, "plain_content": rendered}).html_content
    body = "%Link:Forward% {{ Link:SocialShare:Twitter }} %Link:SubscriberArea% %Link:Forward% %Link:Suppression%"
    error = _error(lambda: _update({"plain_content": body}))
    assert _reasons(error) == [("plain_content", "PERSONALIZATION_TAG_INVALID")]
    assert error.violations[0].description == (
        "plain_content: unsupported link tags: %Link:Forward%, {{ Link:SocialShare:Twitter }}, "
        "%Link:SubscriberArea%, %Link:Suppression%"
    )


# --- personalization tags: parsing --------------------------------------------------------------------------


def test_modern_tags_with_helpers_and_fallbacks_are_parsed() -> None:
    text = '{{ Subscriber:FirstName }} {{{ User:CompanyName | "Acme" }}} {{urlEncode Subscriber:EmailAddress}}'
    tags = parse_personalization(text).tags
    assert [(t.key, t.raw, t.helper, t.fallback) for t in tags] == [
        ("Subscriber:FirstName", False, None, None),
        ("User:CompanyName", True, None, "Acme"),
        ("Subscriber:EmailAddress", False, Helper.URL_ENCODE, None),
    ]
    assert text[tags[0].start : tags[0].end] == "{{ Subscriber:FirstName }}"


def test_legacy_tags_count_only_with_a_known_namespace() -> None:
    parsed = parse_personalization("50% off %Subscriber:FirstName% at %C3%A9:x% and %Link:SocialShare:Facebook%")
    assert [t.key for t in parsed.tags] == ["Subscriber:FirstName", "Link:SocialShare:Facebook"]
    assert all(t.legacy for t in parsed.tags) and not parsed.errors


@pytest.mark.parametrize(
    "text",
    [
        "Hello {{ Subscriber:FirstName",
        "{{{ Subscriber:FirstName }}",
        "{{ Nobody:FirstName }}",
        "{{ lowercase Subscriber:FirstName }}",
        "{{ Subscriber:FirstName | unquoted }}",
        "{{ }}",
        "{{ just words }}",
    ],
)
def test_malformed_modern_tags_are_errors(text: str) -> None:
    assert personalization_problems(text)


def test_a_lone_closing_brace_pair_is_text() -> None:
    css = "@media (max-width:600px){.x{width:100%}}"
    assert personalization_problems(css) == [] and render_personalization(css, {}, html_escape=True) == css


def test_namespaces_and_helpers_match_case_insensitively() -> None:
    (tag,) = parse_personalization("{{ UPPERCASE subscriber:firstName }}").tags
    assert tag == Tag(0, 36, "Subscriber", "firstName", helper=Helper.UPPERCASE)


# --- personalization tags: rendering ------------------------------------------------------------------------


def test_rendering_escapes_falls_back_and_applies_helpers() -> None:
    values = {"Subscriber:FirstName": "<Ann & Bo>", "Subscriber:EmailAddress": "a+b@x.com"}
    text = (
        '{{ Subscriber:FirstName }}|{{{ Subscriber:FirstName }}}|{{ Subscriber:LastName | "friend" }}|'
        "{{urlEncode Subscriber:EmailAddress}}|{{ uppercase Subscriber:FirstName }}|%Subscriber:FirstName%"
    )
    assert render_personalization(text, values, html_escape=True) == (
        "&lt;Ann &amp; Bo&gt;|<Ann & Bo>|friend|a%2Bb%40x.com|&lt;ANN &amp; BO&gt;|&lt;Ann &amp; Bo&gt;"
    )
    assert render_personalization(text, values, html_escape=False).startswith("<Ann & Bo>|<Ann & Bo>|friend|")


def test_values_are_looked_up_case_insensitively_and_missing_ones_are_empty() -> None:
    text = "Hi {{ subscriber:firstname }}{{ Subscriber:Nope }}!"
    assert render_personalization(text, {"Subscriber:FirstName": "Ann"}, html_escape=False) == "Hi Ann!"


def test_escaped_quotes_in_a_fallback() -> None:
    text = r'{{ User:CompanyName | "say \"hi\"" }}'
    assert render_personalization(text, {}, html_escape=False) == 'say "hi"'


_NAMESPACE = st.sampled_from(["Subscriber", "User", "List", "Campaign", "Link"])
_FIELD = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)


@given(st.text())
def test_parsing_and_rendering_never_raise(text: str) -> None:
    parsed = parse_personalization(text)
    spans = [(t.start, t.end) for t in parsed.tags]
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
    render_personalization(text, {"Subscriber:FirstName": "<x>"}, html_escape=True)


@given(st.text().filter(lambda t: "{{" not in t and "%" not in t), st.dictionaries(st.text(), st.text()))
def test_text_without_tags_is_returned_unchanged(text: str, values: dict[str, str]) -> None:
    assert parse_personalization(text).tags == ()
    assert render_personalization(text, values, html_escape=True) == text


@given(_NAMESPACE, _FIELD, st.text(min_size=1), st.text(alphabet=st.characters(blacklist_characters="{}%")))
def test_values_are_escaped_in_double_braces_and_raw_in_triple(
    namespace: str, field: str, value: str, around: str
) -> None:
    values = {f"{namespace}:{field}": value}
    escaped = render_personalization(f"{around}{{{{ {namespace}:{field} }}}}{around}", values, html_escape=True)
    assert escaped == around + html.escape(value, quote=True) + around
    raw = render_personalization(f"{{{{{{{namespace}:{field}}}}}}}", values, html_escape=True)
    assert raw == value
    plain = render_personalization(f"{{{{ {namespace}:{field} }}}}", values, html_escape=False)
    assert plain == value


@given(_FIELD, st.text())
def test_url_encoding_round_trips(field: str, value: str) -> None:
    rendered = render_personalization(
        f"{{{{urlEncode Subscriber:{field}}}}}", {f"Subscriber:{field}": value}, html_escape=True
    )
    assert urllib.parse.unquote(rendered) == (value or "")


@given(_FIELD, st.text(alphabet=st.characters(blacklist_characters='"\\'), max_size=20))
def test_a_fallback_stands_in_for_a_missing_value(field: str, fallback: str) -> None:
    text = f'{{{{ User:{field} | "{fallback}" }}}}'
    assert render_personalization(text, {}, html_escape=False) == fallback
    assert render_personalization(text, {f"User:{field}": "v"}, html_escape=False) == "v"
