"""Issue 14: every personalization tag of the legacy catalog renders its value in a sent message, or content
naming it is refused when it is saved (User: tags, unknown List: and Campaign: fields)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from services.campaign.email_domain import check_text
from services.common.errors import Violations
from services.common.personalization import HashedIds, personalization_problems
from services.common.return_path import ReturnPaths
from services.common.tracking import TrackingLinks
from services.delivery import sending
from services.delivery.message import MessageTemplate, Recipient, uses_subscription_tags

SECRET = "unit-test-secret"
PUBLIC_URL = "https://herald.test"
LISTS = {
    "3": {
        "name": "Garden <news>",
        "sender_name": "Ada & Co",
        "sender_email_address": "ada@garden.test",
        "sender_company": "Garden Ltd",
        "sender_address": "1 Rose Lane, Kew",
    }
}
TAGS = (
    "{{ List:ListID }}|{{ List:Name }}|{{ List:SenderName }}|{{ List:SenderEmailAddress }}|"
    "{{ List:SenderCompany }}|{{ List:SenderAddress }}|{{ Subscriber:Status }}|{{ Subscriber:SubscriptionDate }}|"
    "{{ Subscriber:SubscriptionIP }}|{{ Subscriber:OptInDate }}|{{ Subscriber:HashedSubscriberID }}|"
    "{{ Campaign:HashedCampaignID }}"
)
RECIPIENT = Recipient(
    5,
    "grace@example.com",
    "Grace",
    "Hopper",
    subscriber_id=42,
    list_id=3,
    custom_fields=None,
    email_id=None,
    subscription_time=datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
    subscription_ip="192.0.2.10",
    opt_in_time=datetime(2026, 11, 2, 18, 5, 7, tzinfo=UTC),
)


def template(content: dict[str, object], *, campaign_id: int = 77) -> MessageTemplate:
    return MessageTemplate(
        content,
        campaign_id=campaign_id,
        campaign_name="News",
        links=TrackingLinks(PUBLIC_URL, SECRET),
        return_paths=ReturnPaths("bounces.herald.test", SECRET),
        public_url=PUBLIC_URL,
        lists=LISTS,
        hashed_ids=HashedIds(SECRET),
    )


def _parts(data: bytes) -> tuple[str, str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    body = "\n".join(str(part.get_content()) for part in message.walk() if part.get_content_maintype() == "text")
    return str(message["Subject"]), body


def test_list_subscriber_and_campaign_tags_render_their_values() -> None:
    content = {"from_email": "news@herald.test", "subject": TAGS, "plain": TAGS, "content_type": "Plain"}
    subject, body = _parts(template(content).render(RECIPIENT).data)
    hashed = HashedIds(SECRET)
    expected = (
        "3|Garden <news>|Ada & Co|ada@garden.test|Garden Ltd|1 Rose Lane, Kew|Subscribed|2026-11-01 09:30:00|"
        f"192.0.2.10|2026-11-02 18:05:07|{hashed.subscriber(42)}|{hashed.campaign(77)}"
    )
    assert subject == expected
    assert body.strip() == expected


def test_list_values_are_html_escaped_in_an_html_body() -> None:
    content = {
        "from_email": "news@herald.test",
        "subject": "x",
        "html": "<p>{{ List:Name }} {{{ List:SenderName }}}</p>",
    }
    _, body = _parts(template(content).render(RECIPIENT).data)
    assert "<p>Garden &lt;news&gt; Ada & Co</p>" in body


def test_a_list_the_run_did_not_keep_shows_its_id_and_the_fallbacks() -> None:
    content = {
        "from_email": "news@herald.test",
        "subject": '{{ List:ListID }} {{ List:Name | "our list" }}',
        "plain": "x",
    }
    other = Recipient(6, "x@example.com", "", "", 43, 9, None, None)
    subject, _ = _parts(template(content).render(other).data)
    assert subject == "9 our list"


def test_hashes_are_stable_distinct_and_depend_on_the_secret() -> None:
    one, other = HashedIds(SECRET), HashedIds("another-secret")
    assert one.subscriber(42) == HashedIds(SECRET).subscriber(42)
    assert len(one.subscriber(42)) == 32 and int(one.subscriber(42), 16) >= 0
    assert one.subscriber(42) != one.subscriber(43)
    assert one.subscriber(42) != one.campaign(42)
    assert one.subscriber(42) != other.subscriber(42)


def test_a_confirmation_email_shows_opt_in_pending_and_no_campaign() -> None:
    content = {
        "from_email": "news@herald.test",
        "subject": (
            "{{ Subscriber:Status }}|{{ Campaign:HashedCampaignID }}|{{ Campaign:CampaignID }}|"
            '{{ Campaign:Name | "none" }}|{{ List:Name }}'
        ),
        "plain": "%Link:Confirm%",
        "opt_in": True,
    }
    subject, _ = _parts(template(content, campaign_id=sending.opt_in_run_id(3)).render(RECIPIENT).data)
    assert subject == "Opt-In Pending|||none|Garden <news>"


def test_a_recipient_queued_without_dates_renders_the_fallbacks() -> None:
    content = {
        "from_email": "news@herald.test",
        "subject": '{{ Subscriber:SubscriptionDate | "never" }} {{ Subscriber:OptInDate | "not yet" }}',
        "plain": "x",
    }
    bare = Recipient(5, "grace@example.com", "", "", 42, 3, None, None)
    subject, _ = _parts(template(content).render(bare).data)
    assert subject == "never not yet"


@pytest.mark.parametrize(
    ("texts", "uses"),
    [
        ({"subject": "{{ Subscriber:FirstName }}", "plain": "%List:Name%"}, False),
        ({"subject": "x", "html": "<p>%Subscriber:SubscriptionIP%</p>"}, True),
        ({"subject": "x", "preheader_text": "{{ subscriber:optindate }}"}, True),
        ({"subject": '{{ Subscriber:SubscriptionDate | "-" }}'}, True),
    ],
)
def test_queueing_carries_subscription_fields_only_when_an_email_names_them(
    texts: dict[str, str], uses: bool
) -> None:
    emails = {"1": {"subject": "plain", "html": "", "plain": ""}, "2": texts}
    assert uses_subscription_tags(emails) is uses


# --- content validation -------------------------------------------------------------------------------------


def test_user_tags_are_refused_and_named_with_or_without_a_fallback() -> None:
    text = 'Hi from {{ User:FirstName }} at {{ User:CompanyName | "Acme" }}, %User:Phone% %User:FirstName%'
    (problem,) = personalization_problems(text)
    assert problem == (
        "User: tags are not supported (Herald keeps no account profile to fill them from): "
        '{{ User:FirstName }}, {{ User:CompanyName | "Acme" }}, %User:Phone%, %User:FirstName%'
    )


def test_unknown_list_and_campaign_fields_are_refused_and_named() -> None:
    (problem,) = personalization_problems("{{ List:Owner }} %Campaign:Budget% {{ list:name }} {{ Campaign:name }}")
    assert problem == "unknown personalization tags: {{ List:Owner }}, %Campaign:Budget%"


@pytest.mark.parametrize("field", ["subject", "preheader_text", "html_content", "plain_content"])
def test_every_tagged_field_of_an_email_refuses_user_tags(field: str) -> None:
    violations = Violations()
    assert not check_text(field, "Dear %User:EmailAddress%", violations)
    (violation,) = violations.items
    assert violation.reason == "PERSONALIZATION_TAG_INVALID"
    assert "%User:EmailAddress%" in violation.description and violation.description.startswith(f"{field}: User:")


def test_every_catalog_tag_herald_fills_is_accepted() -> None:
    text = (
        TAGS + "{{ Subscriber:EmailAddress }}{{ Subscriber:FirstName }}{{ Subscriber:LastName }}"
        "{{ Subscriber:SubscriberID }}{{ Subscriber:CustomField12 }}{{ Campaign:CampaignID }}{{ Campaign:Name }}"
    )
    assert personalization_problems(text, allow_links=False) == []
